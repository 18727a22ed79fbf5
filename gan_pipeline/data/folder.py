"""``data.dataset = "folder"``: every image under ``data.path`` that TensorFlow can decode (PNG,
JPEG, BMP, GIF; the first frame of a GIF), recursively.

- Labels: when every image sits in a first-level subfolder and there are at least two of them,
  the subfolder names are the classes (sorted, as ``keras.utils.image_dataset_from_directory``
  infers them). Images at the top level mean no labels.
- ``data.image_size = [H, W]`` resizes every image (default: the first image's size; images of
  other sizes are resized to it). ``data.channels``: 0 = auto (1 when every image is grayscale,
  i.e. has one channel or equal colour channels, else 3), or 1 or 3.
- Files are decoded once, then cached as arrays in ``$GAN_PIPELINE_CACHE/folders`` (keyed by
  the files' names, sizes and times and these settings), so neither an epoch nor the next run
  decodes them again. Files that cannot be decoded are skipped, counted and named in the log and
  in the prepare stage's profile.
- Evaluation: the folder is split once, by a fixed seed, into halves. The evaluation classifier
  trains on one half and generated images are compared with the other; the first half gives
  the real-vs-real floor. With labels the classifier learns the classes; without, it learns to
  tell how an image was rotated (a self-supervised task), and there is no class histogram.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from gan_pipeline import progress
from gan_pipeline.config.schema import Field, Section
from gan_pipeline.data.base import ImageSource, images_of, mlflow_dataset, normalize
from gan_pipeline.errors import UserError
from gan_pipeline.evaluation.classifier import CLASSIFIER_VERSION, cache_dir

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
FOLDER_CACHE_VERSION = 1
SHOW_SKIPPED = 5  # file names quoted in messages


def _cache_root() -> Path:
    return cache_dir() / "folders"


def list_files(root: Path) -> tuple[list[Path], int]:
    """The image files under ``root`` (sorted, recursive, hidden ones left out) and how many other
    files there are."""
    images, others = [], 0
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # no .ipynb_checkpoints etc.
        for name in sorted(files):
            if name.startswith("."):
                continue
            if name.lower().endswith(EXTENSIONS):
                images.append(Path(folder) / name)
            else:
                others += 1
    return images, others


def _decode(path: Path) -> np.ndarray:
    raw = tf.io.read_file(str(path))
    return tf.io.decode_image(raw, channels=0, expand_animations=False).numpy()


def _is_gray(image: np.ndarray) -> bool:
    """Grayscale content: one channel (with alpha or not), or colour channels that are equal
    (as TensorFlow decodes every GIF, and as many grey JPEGs are stored)."""
    if image.shape[-1] in (1, 2):
        return True
    return bool(np.array_equal(image[..., 0], image[..., 1])
                and np.array_equal(image[..., 0], image[..., 2]))


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W, c) with c in 1..4 -> (H, W, channels); alpha is dropped."""
    c = image.shape[-1]
    if c in (2, 4):
        image = image[..., :c - 1]
        c -= 1
    if c == channels:
        return image
    if channels == 3:
        return np.repeat(image, 3, axis=-1)
    gray = tf.image.rgb_to_grayscale(tf.cast(image, tf.float32)).numpy()
    return np.clip(np.round(gray), 0, 255).astype(np.uint8)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = tf.image.resize(tf.cast(image, tf.float32), size, antialias=True).numpy()
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


class ImageFolder(ImageSource):
    name = "folder"
    fields = {
        **ImageSource.fields,
        "path": Field(str, "", nonempty=True, help="the folder of images (searched recursively)"),
        "image_size": Field(list, [], lengths=(0, 2), max=4096,
                            help="[H, W] to resize to; [] = the first image's size"),
        "channels": Field(int, 0, choices=lambda: [0, 1, 3],
                          help="0 = auto (1 if every image is grayscale, else 3), 1 or 3"),
    }

    def __init__(self, settings: Section, seed: int = 0):
        super().__init__(settings, seed)
        self.root = Path(settings.path).expanduser()
        if not self.root.exists():
            raise UserError(f"data.path = {settings.path!r}: no such folder; data.dataset = "
                            "'folder' trains on the images under a folder")
        if not self.root.is_dir():
            raise UserError(f"data.path = {settings.path!r} is a file, not a folder; point it "
                            "at the folder that holds the images")
        files, self.other_files = list_files(self.root)
        if not files:
            raise UserError(f"data.path = {settings.path!r}: no images under this folder "
                            f"(looked for {', '.join(e[1:] for e in EXTENSIONS)} files, "
                            f"recursively; found {self.other_files} other files)")
        self._load(files)
        self.num_examples = len(self.images)
        self.shape = tuple(int(d) for d in self.images.shape[1:])
        if self.skipped:
            names = ", ".join(self.skipped[:SHOW_SKIPPED])
            more = f" and {len(self.skipped) - SHOW_SKIPPED} more" if len(
                self.skipped) > SHOW_SKIPPED else ""
            print(f"note: skipped {len(self.skipped)} of {len(files)} image files under "
                  f"{self.root} that could not be decoded: {names}{more}", file=sys.stderr,
                  flush=True)

    @property
    def label(self) -> str:
        return f"folder {self.root}"

    def fingerprint(self) -> str:
        return self.digest

    # -- decoding, once ------------------------------------------------------------------------

    def _fingerprint(self, files: list[Path]) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([FOLDER_CACHE_VERSION, str(self.root.resolve()),
                             self.settings.image_size, self.settings.channels]).encode())
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(self.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:20]

    def _load(self, files: list[Path]) -> None:
        self.digest = self._fingerprint(files)
        cached = _cache_root() / f"{self.digest}.npz"
        if cached.is_file():
            with np.load(cached, allow_pickle=False) as z:
                self.images, labels = z["images"], z["labels"]
                meta = json.loads(str(z["meta"]))
        else:
            self.images, labels, meta = self._decode_all(files)
            cached.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cached.parent, suffix=".npz",
                                             delete=False) as tmp:
                np.savez(tmp, images=self.images, labels=labels, meta=json.dumps(meta))
            os.replace(tmp.name, cached)  # atomic: readers see the whole file or none
        self.labels = labels if meta["class_names"] else None
        self.class_names = meta["class_names"] or None
        self.files, self.skipped, self.resized = meta["files"], meta["skipped"], meta["resized"]

    def _decode_all(self, files: list[Path]):
        decoded, names, skipped = [], [], []
        size = tuple(self.settings.image_size) or None  # else the first image's
        resized = 0
        bar = progress.bar(len(files), unit_name="file") if len(files) > 1000 else None
        if len(files) > 1000:
            print(f"Decoding {len(files)} images under {self.root} (once; cached)", flush=True)
        for i, path in enumerate(files):
            rel = str(path.relative_to(self.root))
            try:
                image = _decode(path)
                if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4) or not min(image.shape[:2]):
                    raise ValueError(f"unexpected image shape {image.shape}")
            except (tf.errors.OpError, OSError, ValueError):
                skipped.append(rel)
            else:
                size = size or tuple(image.shape[:2])
                if image.shape[:2] != size:  # at once: only images of the final size are kept
                    image = _resize(image, size)
                    resized += 1
                decoded.append(image)
                names.append(rel)
            if bar is not None:
                bar.update(i + 1)
        if not decoded:
            raise UserError(f"data.path = {self.settings.path!r}: none of its {len(files)} image "
                            f"files could be decoded (e.g. {', '.join(skipped[:SHOW_SKIPPED])})")
        channels = self.settings.channels or (1 if all(map(_is_gray, decoded)) else 3)
        images = np.stack([_to_channels(image, channels) for image in decoded])
        class_names, labels = self._labels(names)
        meta = {"files": names, "skipped": skipped, "resized": resized,
                "class_names": class_names}
        return images, labels, meta

    @staticmethod
    def _labels(names: list[str]) -> tuple[list[str], np.ndarray]:
        """Classes from first-level subfolders: when every image sits in one, and there are
        at least two; otherwise no labels."""
        parts = [Path(n).parts for n in names]
        if any(len(p) < 2 for p in parts):
            return [], np.zeros(len(names), np.int32)
        classes = sorted({p[0] for p in parts})
        if len(classes) < 2:
            return [], np.zeros(len(names), np.int32)
        index = {c: i for i, c in enumerate(classes)}
        return classes, np.array([index[p[0]] for p in parts], np.int32)

    # -- the data ------------------------------------------------------------------------------

    def examples(self) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices(self.images)

    def labelled_examples(self) -> tf.data.Dataset:
        self.require_labels("labelled batches")
        return tf.data.Dataset.from_tensor_slices((self.images, self.labels))

    def class_shares(self) -> list[float]:
        self.require_labels("class shares")
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return [float(c) for c in counts / counts.sum()]

    def real_samples(self, n: int, seed: int = 0) -> np.ndarray:
        return images_of(tf.data.Dataset.from_tensor_slices(self.images[:n]).map(normalize))

    def class_counts(self) -> dict[str, int] | None:
        if self.class_names is None:
            return None
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts)}

    def profile(self) -> tuple[dict[str, Any], Any]:
        profile = {"name": "folder", "kind": self.kind.name, "path": str(self.root),
                   "examples": self.num_examples, "shape": list(self.shape),
                   "value_range": [float(self.images.min()) / 127.5 - 1,
                                   float(self.images.max()) / 127.5 - 1],
                   "classes": self.class_counts(), "resized": self.resized,
                   "skipped": len(self.skipped), "skipped_files": self.skipped[:20],
                   "other_files": self.other_files, "fingerprint": self.digest}
        return profile, mlflow_dataset(self.images, f"folder:{self.root.name}",
                                       source=str(self.root))

    # -- evaluation ----------------------------------------------------------------------------

    def _halves(self) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the classifier's half and of the reference half (fixed seed)."""
        order = np.random.default_rng(0).permutation(self.num_examples)
        cut = self.num_examples // 2
        return np.sort(order[:cut]), np.sort(order[cut:])

    def _normalised(self, idx: np.ndarray) -> np.ndarray:
        return self.images[idx].astype(np.float32) / 127.5 - 1.0

    def classifier_key(self) -> str:
        return f"folder-{self.root.name}-v{CLASSIFIER_VERSION}-{self.digest[:12]}"

    def classifier_data(self) -> dict[str, Any]:
        train, test = self._halves()
        if self.class_names is not None:
            def labelled(idx):
                return tf.data.Dataset.from_tensor_slices(
                    (self._normalised(idx), self.labels[idx].astype(np.int64)))
            return {"train": labelled(train), "test": labelled(test),
                    "classes": self.class_names, "task": "labels (subfolders)",
                    "data_dir": str(self.root)}
        # No labels: learn how each image was turned (square images: 4 rotations; others:
        # upright or upside down), a self-supervised task whose features see the content.
        turns = 4 if self.shape[0] == self.shape[1] else 2
        step = 1 if turns == 4 else 2

        def rotated(idx):
            images = self._normalised(idx)
            xs = [np.rot90(images, k * step, axes=(1, 2)) for k in range(turns)]
            ys = [np.full(len(images), k, np.int64) for k in range(turns)]
            return tf.data.Dataset.from_tensor_slices((np.concatenate(xs), np.concatenate(ys)))
        names = [f"rotated {k * step * 90}" for k in range(turns)]
        return {"train": rotated(train), "test": rotated(test), "classes": names,
                "task": "rotation (the folder has no labels)", "data_dir": str(self.root)}

    def read_reference_images(self) -> np.ndarray:
        return self._normalised(self._halves()[1])

    def reference_labels(self) -> np.ndarray:
        self.require_labels("per-class figures")
        return self.labels[self._halves()[1]].astype(np.int64)

    def _floor_index(self, n: int, seed: int) -> np.ndarray:
        idx = self._halves()[0]
        if n < len(idx):
            idx = np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))
        return idx

    def floor_images(self, n: int, seed: int) -> np.ndarray:
        return self._normalised(self._floor_index(n, seed))

    def floor_labelled(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._floor_index(n, seed)
        return self._normalised(idx), self.labels[idx].astype(np.int64)

    def describe(self) -> dict[str, Any]:
        out = {"dataset": "folder", "path": str(self.root),
               "real": "half of the folder (a fixed split; the other half trains the classifier)"}
        if self.class_names is None:
            out["note"] = ("no labels: the figures are measured in the features of a CNN trained "
                           "to tell how images were rotated; there is no class histogram or "
                           "collapse check, and the figures compare runs on this folder only")
        return out
