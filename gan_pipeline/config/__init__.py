"""Pipeline configuration: TOML files under ``pipelines/``, validated on load into a read-only
``Config`` whose sections are attributes (``cfg.train.precision``).

- ``schema``: every setting, its type, default and limits; the ``Config`` and ``Section`` types.
- ``load``: files, profiles, ``--set`` overrides, and the round trip through MLflow params.
- ``space``: the ``[tune.space]`` a search varies.
"""

from gan_pipeline.config.load import (apply_overrides, apply_profile, flatten, from_params, load,
                                      parse_override, validate, with_values)
from gan_pipeline.config.schema import SCHEMA, Config, Field, Section
from gan_pipeline.pipeline.graph import STAGES

__all__ = ["SCHEMA", "STAGES", "Config", "Field", "Section", "apply_overrides", "apply_profile",
           "flatten", "from_params", "load", "parse_override", "validate", "with_values"]
