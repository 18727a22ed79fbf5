"""Training data, the unit of extension for data: one ``DataSource`` per kind of data.

- ``tfds_images.TFDSImages``: any tensorflow-datasets image dataset, by its TFDS name (the
  default for every ``data.dataset`` that is not named below);
- ``folder.ImageFolder``: ``data.dataset = "folder"``, the images under ``data.path``;
- ``gaussian.Gaussian1D``: ``data.dataset = "gaussian_1d"``, the 1-D seed's N(mean, std).

A source declares its own ``data.*`` settings (``fields``), its sample kind and its evaluation's
headline figure; opened once per process (``open_source``), it gives the training batches, real
samples, the prepare stage's profile and the evaluator. To add a source: a module with a
``DataSource`` subclass, and its entry in ``SOURCES``.
"""

from __future__ import annotations

from gan_pipeline.data.base import DataSource, ImageSource, normalize
from gan_pipeline.data.folder import ImageFolder
from gan_pipeline.data.gaussian import Gaussian1D
from gan_pipeline.data.tfds_images import TFDSImages, resolve_data_dir
from gan_pipeline.errors import UserError

SOURCES: dict[str, type[DataSource]] = {cls.name: cls for cls in (Gaussian1D, ImageFolder)}


def source_class(dataset: str) -> type[DataSource]:
    """The source that reads ``data.dataset``: ours by name, else a TFDS dataset."""
    return SOURCES.get(dataset, TFDSImages)


def open_source(cfg) -> DataSource:
    """The training data a validated config asks for, opened (and checked) once: a
    conditional family's data must have labels."""
    from gan_pipeline import families  # (families import kinds, which data uses)

    source = source_class(cfg.data.dataset)(cfg.data, seed=cfg.seed)
    family = families.get(cfg.model.name)
    if family.conditional:
        try:
            source.require_labels(f"model.name = {cfg.model.name!r} (a conditional family)")
        except UserError as exc:
            if not family.unlabelled:
                raise
            raise UserError(f"{exc}; or, for images without labels, set model.name = "
                            f"{family.unlabelled!r}") from None
    return source


__all__ = ["SOURCES", "DataSource", "Gaussian1D", "ImageFolder", "ImageSource", "TFDSImages",
           "normalize", "open_source", "resolve_data_dir", "source_class"]
