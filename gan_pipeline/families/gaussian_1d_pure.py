"""``gaussian_1d_pure``: the 1-D seed's ``GAN_Pure`` comparison. Its D sees the raw values of
each vector of draws, without the squared deviations that let the seed's D tell a collapsed
generator from real data, so the seed's experiment can be rerun: ``--set
model.name=gaussian_1d_pure`` on ``pipelines/gaussian_1d.toml``.

An architecture-only family, as a user would add one: this module and its line in
``gan_pipeline/families/__init__.py``.
"""

from gan_pipeline import kinds
from gan_pipeline.families import Family
from gan_pipeline.families.gaussian_1d import DEFAULTS, builder

FAMILIES = (
    Family("gaussian_1d_pure", builder(None), DEFAULTS, noise="uniform", kind=kinds.VECTORS,
           summary="the seed's GAN_Pure: D sees the raw values"),
)
