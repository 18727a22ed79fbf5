"""Load a trained generator (``.keras`` file, MLflow run id or model URI) and draw samples.

How to sample a generator (its noise, its classes if conditional) and what its samples are
(images or vectors) come from its ``GeneratorSpec`` (``gan_pipeline.kinds.spec_of``).
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import keras
import mlflow
import numpy as np
from PIL import Image

from gan_pipeline import families  # noqa: F401 - registers the custom layers for loading
from gan_pipeline import kinds, tracking
from gan_pipeline.errors import UserError

RUN_ID = re.compile(r"[0-9a-f]{32}")
MODEL_URI = re.compile(r"^[a-z][a-z0-9+.-]*:/")  # runs:/..., models:/..., s3://..., file:///...
MAX_GRID = 1024


def load_generator(model: str, tracking_uri: str = "") -> keras.Model:
    """``model`` is a ``.keras`` path, an MLflow run id or an MLflow model URI; what it names
    must be a generator this package saved (it carries a ``GeneratorSpec``)."""
    generator = _load(model, tracking_uri)
    kinds.spec_of(generator, f"--model {model!r}")
    return generator


def _load(model: str, tracking_uri: str) -> keras.Model:
    path = Path(model)
    if path.suffix == ".keras" or path.exists():
        if path.is_dir():
            raise UserError(f"--model {model!r} is a folder, not a .keras file")
        if not path.is_file():
            raise UserError(f"model file {model!r} does not exist")
        try:
            return keras.models.load_model(path, safe_mode=True, compile=False)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"could not load {model!r} as a Keras model: {first}") from None

    if not (RUN_ID.fullmatch(model) or MODEL_URI.match(model)):
        raise UserError(f"--model {model!r} is not valid: expected a .keras file, a 32-character "
                        "MLflow run id, or an MLflow model URI (runs:/<run_id>/generator, "
                        "models:/<model_id>)")
    uri = tracking.tracking_uri(tracking_uri)
    local_store = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not Path(local_store).is_file():
        raise UserError(f"no MLflow store at {local_store} to look up --model {model!r}: run this "
                        "in the directory you trained in, or set MLFLOW_TRACKING_URI "
                        "(--tracking-uri)")
    tracking.check_reachable(uri)
    tracking.configure(uri)
    if RUN_ID.fullmatch(model):
        try:
            local = mlflow.artifacts.download_artifacts(run_id=model,
                                                        artifact_path=tracking.GENERATOR_FILE)
        except Exception as exc:
            raise UserError(f"run {model!r} has no {tracking.GENERATOR_FILE} in "
                            f"{tracking.redact(uri)} "
                            f"({type(exc).__name__}); is it the right run id and tracking URI, "
                            "and did the run finish?") from None
        return keras.models.load_model(local, safe_mode=True, compile=False)
    try:
        if "keras" in mlflow.models.get_model_info(model).flavors:  # logged by earlier versions
            return mlflow.keras.load_model(model, load_model_kwargs={"safe_mode": True,
                                                                     "compile": False})
        return mlflow.pyfunc.load_model(model).unwrap_python_model().generator
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"could not load MLflow model {model!r} from {tracking.redact(uri)}: "
                        f"{tracking.redact(first)}") from None


def with_truncation(generator: keras.Model, threshold: float | None) -> keras.Model:
    """``generator`` sampled with the truncation trick at ``threshold`` (``--truncation``;
    None: as saved)."""
    if threshold is None:
        return generator
    if not (math.isfinite(threshold) and 0 <= threshold <= 10):
        raise UserError(f"--truncation {threshold} is not valid: expected a number from 0 (off) "
                        "to 10")
    noise_kind = kinds.spec_of(generator)["noise"]
    if threshold and noise_kind != "normal":
        raise UserError(f"--truncation needs a generator of normal noise; this one takes "
                        f"{noise_kind} noise")
    return kinds.with_truncation(generator, threshold)


def run_id_of(model: str) -> str | None:
    """The MLflow run a ``--model`` value names, if any: a run id, ``runs:/<id>/...``, or the
    run a LoggedModel (``models:/m-...``) was logged from, looked up in the current store."""
    if RUN_ID.fullmatch(model):
        return model
    match = re.match(r"runs:/([0-9a-f]{32})/", model)
    if match:
        return match.group(1)
    match = re.fullmatch(r"models:/(m-[0-9a-f]+)", model)
    if match:
        try:
            return mlflow.get_logged_model(match.group(1)).source_run_id
        except mlflow.exceptions.MlflowException:
            return None
    return None


def noise(shape: tuple[int, ...], kind: str, seed: int) -> np.ndarray:
    """Seeded float32 noise: ``"uniform"`` U(0, 1) or ``"normal"`` N(0, 1)."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def spread_labels(n: int, num_classes: int) -> np.ndarray:
    """``n`` labels ``(n, 1)`` int32 spread evenly over the classes, in class order (100 over
    10 classes: ten 0s, then ten 1s, ...)."""
    return ((np.arange(n) * num_classes) // n).astype(np.int32).reshape(-1, 1)


def class_index(class_names: list[str], label: str | int) -> int:
    """A ``--label`` (a class index or a class name) as the class index."""
    text = str(label).strip()
    if text in class_names:
        return class_names.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(class_names):
        return int(text)
    allowed = ", ".join(f"{i} ({name})" if name != str(i) else name
                        for i, name in enumerate(class_names))
    raise UserError(f"--label {text!r} is not one of this generator's classes; allowed: "
                    f"{allowed}")


def sample_with_labels(generator: keras.Model, n: int, seed: int = 0, label=None,
                       batch_size: int = 500) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` float32 samples and, for a conditional generator, the labels ``(n, 1)`` they were
    made for: all ``label`` (an index or a class name), else spread evenly over the classes in
    class order. The same ``seed`` gives the same samples."""
    if n < 1:
        raise UserError(f"--n {n} is not valid: expected a positive integer")
    spec = kinds.spec_of(generator)
    classes = spec["class_names"]
    if label is not None and not classes:
        raise UserError("--label needs a conditional generator; this one was trained without "
                        "labels (its samples come from noise alone)")
    z = noise((n, *generator.inputs[0].shape[1:]), spec["noise"], seed)
    labels = None
    if classes:
        labels = (np.full((n, 1), class_index(classes, label), np.int32) if label is not None
                  else spread_labels(n, len(classes)))
    out = []
    for i in range(0, n, batch_size):
        inputs = z[i:i + batch_size] if labels is None else [z[i:i + batch_size],
                                                             labels[i:i + batch_size]]
        out.append(keras.ops.convert_to_numpy(generator(inputs, training=False)))
    return np.concatenate(out).astype(np.float32), labels


def sample(generator: keras.Model, n: int, seed: int = 0, batch_size: int = 500) -> np.ndarray:
    """``n`` float32 samples (a conditional generator's spread over its classes)."""
    return sample_with_labels(generator, n, seed, batch_size=batch_size)[0]


OUT_SUFFIXES = (".npy", ".npz", ".png")


def check_out(out: str | Path) -> Path:
    """``--out`` checked before anything is loaded: a .npy, .npz or .png name in a folder
    this process can write (created if missing)."""
    out = Path(out).expanduser()
    if out.suffix not in OUT_SUFFIXES:
        raise UserError(f"--out {str(out)!r} is not valid: expected a .npy, .npz or .png file "
                        "name")
    if out.is_dir():
        raise UserError(f"--out {str(out)!r} is a folder; give a file name ending in .npy, "
                        ".npz or .png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as exc:
        raise UserError(f"--out {str(out)!r}: cannot write in {str(out.parent)!r} "
                        f"({exc.strerror or type(exc).__name__})") from None
    return out


def write(samples: np.ndarray, out: str | Path, kind: kinds.Kind, labels=None,
          class_names: list[str] | None = None) -> Path:
    """Save samples to ``.npy`` (all of them), ``.npz`` (arrays ``samples`` and, for a
    conditional generator, the ``labels`` they were made for) or ``.png`` (the kind's picture:
    with labels, one row per class)."""
    out = check_out(out)
    try:
        if out.suffix == ".npy":
            np.save(out, samples)
        elif out.suffix == ".npz":
            arrays = {"samples": samples}
            if labels is not None:
                arrays["labels"] = np.asarray(labels, np.int32).ravel()
            np.savez(out, **arrays)
        else:
            title = f"{len(samples)} generated {kind.name}"
            shown = None if labels is None else labels[:MAX_GRID]
            Image.fromarray(kind.picture(samples[:MAX_GRID], title=title, labels=shown,
                                         class_names=class_names)).save(out)
    except OSError as exc:
        raise UserError(f"--out {str(out)!r}: cannot write there ({exc.strerror})") from None
    return out
