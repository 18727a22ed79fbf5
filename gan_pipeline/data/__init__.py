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

import sys

from gan_pipeline.data.base import DataSource, ImageSource, normalize
from gan_pipeline.data.clusters import Clustered
from gan_pipeline.data.folder import ImageFolder
from gan_pipeline.data.gaussian import Gaussian1D
from gan_pipeline.data.tfds_images import TFDSImages, resolve_data_dir
from gan_pipeline.errors import UserError

SOURCES: dict[str, type[DataSource]] = {cls.name: cls for cls in (Gaussian1D, ImageFolder)}


def source_class(dataset: str) -> type[DataSource]:
    """The source that reads ``data.dataset``: ours by name, else a TFDS dataset."""
    return SOURCES.get(dataset, TFDSImages)


CLUSTER_MIN_SIZE = 20  # images per k-means cluster, on average, at the least


def open_source(cfg) -> DataSource:
    """The training data a validated config asks for, opened (and checked) once. A conditional
    family's data must have labels; a family that only trains on them (``labelled_*``) is given
    k-means clusters of the images instead when the data has none, or when ``data.labels =
    "clusters"``, and says so in one line."""
    from gan_pipeline import families  # (families import kinds, which data uses)

    source = source_class(cfg.data.dataset)(cfg.data, seed=cfg.seed)
    family = families.get(cfg.model.name)
    if not family.conditional:
        return source
    what = f"model.name = {cfg.model.name!r} (a conditional family)"
    choice = cfg.data.labels  # (image sources; vectors have no conditional family)
    has_labels = bool(source.class_names) and len(source.class_names) >= 2
    if family.mixes_classes and (choice == "clusters" or (choice == "auto" and not has_labels)):
        # at most one cluster per CLUSTER_MIN_SIZE images: a small folder gets fewer, fuller ones
        k = cfg.data.clusters
        if source.num_examples:
            k = max(2, min(k, source.num_examples // CLUSTER_MIN_SIZE))
        why = ("data.labels = 'clusters'" if choice == "clusters"
               else f"{source.label} has no labels")
        print(f"note: {why}: {cfg.model.name} trains on {k} k-means clusters of the images in "
              "their place (self-conditioning; its generator samples without them)",
              file=sys.stderr, flush=True)  # (stdout may be evaluate's JSON)
        return Clustered(source, k)
    try:
        source.require_labels(what)
    except UserError as exc:
        if not family.mixes_classes:
            raise
        raise UserError(f"{exc}; or set data.labels = 'clusters' (k-means clusters of the "
                        "images in their place)") from None
    return source


__all__ = ["SOURCES", "Clustered", "DataSource", "Gaussian1D", "ImageFolder", "ImageSource", "TFDSImages",
           "normalize", "open_source", "resolve_data_dir", "source_class"]
