"""MLflow tracking: where runs go, what each epoch logs, and how the generator is logged.

By default runs go to a SQLite database ``mlflow.db`` in the current directory with artifacts under
``./mlruns/`` (MLflow 3 no longer accepts the old ``./mlruns`` file store). That is exactly what
plain ``mlflow ui`` reads when started in the same directory. ``MLFLOW_TRACKING_URI`` or
``tracking.uri`` point elsewhere, e.g. a team server.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import tensorflow as tf
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from gan_pipeline import visualize
from gan_pipeline.errors import UserError

GENERATOR_FILE = "generator.keras"  # the .keras artifact of every run
MODEL_NAME = "generator"  # the MLflow model (keras flavour) of every run


def default_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db``: where plain ``mlflow ui`` started here looks."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def tracking_uri(configured: str = "") -> str:
    """``tracking.uri`` if set, else ``$MLFLOW_TRACKING_URI``, else ``default_uri()``."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def configure(configured: str = "") -> str:
    uri = tracking_uri(configured)
    mlflow.set_tracking_uri(uri)
    return uri


class MlflowLogger(keras.callbacks.Callback):
    """Logs per-epoch metrics, pictures of a FIXED noise batch, and periodic quality figures.

    Images use ``mlflow.log_image(key=..., step=epoch)``: the MLflow UI shows them with a step
    slider. Image GANs log ``samples``; 1-D GANs log ``histogram`` (Real / Generated / Input) and
    the moments of the fixed batch (``sample_mean``, ``sample_std``). ``train_seconds`` counts
    training time only (no logging or evaluation). With an ``evaluate`` function (sampler ->
    figures), the figures are logged as ``eval/<name>`` every ``every`` epochs and after the last
    epoch, and a report figure closes the run.
    """

    def __init__(self, fixed_noise: np.ndarray, real_preview: np.ndarray | None, title: str = "",
                 evaluate=None, every: int = 0, control=None, stop_on_collapse: bool = False):
        super().__init__()
        self.stop_on_collapse = stop_on_collapse
        self.pending_stop = ""
        self.logged_up_to = 0
        self.control = control  # a RunControl: nothing is logged for an epoch that was cut short
        self.fixed_noise = fixed_noise
        self.real_preview = real_preview
        self.title = title
        self.evaluate = evaluate
        self.every = every
        self.history: dict[str, list[float]] = {}
        self.eval_steps: list[int] = []
        self.last_eval: dict | None = None
        self.last_samples = None
        self.train_seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def restore(self, run_id: str, train_seconds: float) -> None:
        """Continue a resumed run: its earlier per-epoch metrics feed the end-of-run figures,
        and steps it already logged (killed after logging, before its checkpoint) are not
        logged twice: the redone epoch computes the same values."""
        self.train_seconds = train_seconds
        client = mlflow.MlflowClient()
        for key in client.get_run(run_id).data.metrics:
            history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            self.history[key] = [m.value for m in history]
            if key == "eval_seconds":
                self.eval_steps = [m.step for m in history]
            if key == "d_loss":
                self.logged_up_to = max(m.step for m in history)

    def _stopped(self) -> bool:
        return self.control is not None and self.control.reason is not None

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds += time.perf_counter() - self._epoch_start
        step = epoch + 1  # MLflow step = number of epochs done
        if self.control is not None and not self.control.epoch_complete(epoch):
            return  # cut short (interrupted or diverged): nothing is logged for it
        if step <= self.logged_up_to:
            return  # logged before a kill that beat its checkpoint; the redo gives the same
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics["train_seconds"] = self.train_seconds
        samples = self.model.sampler(self.fixed_noise, training=False)
        samples = keras.ops.convert_to_numpy(samples).astype(np.float32)
        self.last_samples = samples
        if samples.ndim == 2:  # 1-D GAN
            metrics["sample_mean"] = float(samples.mean())
            metrics["sample_std"] = float(samples.std())
            fig = visualize.histogram_figure(
                {"Real": self.real_preview, "Generated": samples, "Input": self.fixed_noise},
                title=f"{self.title} epoch {step}")
            mlflow.log_image(visualize.figure_pixels(fig), key="histogram", step=step)
            visualize.close(fig)
        else:
            mlflow.log_image(visualize.image_grid(samples), key="samples", step=step)
        last = step == self.params.get("epochs")
        if self.evaluate is not None and self.every and (step % self.every == 0 or last):
            started = time.perf_counter()
            figures = self.evaluate(self.model.sampler)
            metrics.update({f"eval/{k}": float(v) for k, v in figures.items()
                            if isinstance(v, (int, float))})
            metrics["eval_seconds"] = time.perf_counter() - started
            self.last_eval = figures
            self.eval_steps.append(step)
            collapse = self.evaluate.collapse(figures)
            metrics["collapse_warning"] = float(collapse is not None)
            if collapse:
                print(f"\nwarning: epoch {step}: {collapse}", flush=True)
                mlflow.set_tag("collapse_warning", f"epoch {step}: {collapse}")
                if self.stop_on_collapse and self.control is not None:
                    self.pending_stop = f"epoch {step}: {collapse}"
        mlflow.log_metrics(metrics, step=step)
        for key, value in metrics.items():
            self.history.setdefault(key, []).append(value)
        if self.pending_stop:  # after logging: this epoch is complete and its figures count
            self.control.reason, self.control.detail = "collapsed", self.pending_stop
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.control is not None and self.control.completed != self.params.get("epochs"):
            return
        if self.history:
            fig = visualize.loss_figure(self.history, title=self.title)
            mlflow.log_figure(fig, "loss_curves.png")
            visualize.close(fig)
        if self.last_eval is not None:
            curves = {k.removeprefix("eval/"): v for k, v in self.history.items()
                      if k.startswith("eval/")}
            fig = visualize.report_figure(self.real_preview, self.last_samples, self.eval_steps,
                                          curves, self.last_eval, title=self.title)
            mlflow.log_figure(fig, "report.png")
            visualize.close(fig)


def check_reachable(uri: str) -> None:
    """Fail fast, before any training, when the tracking store cannot be reached or written."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise UserError(f"MLflow tracking server {uri} is unreachable ({type(exc).__name__});"
                            " start it, fix MLFLOW_TRACKING_URI / tracking.uri, or unset it to "
                            "log to ./mlflow.db") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UserError(f"MLflow store {uri}: folder {folder} does not exist or is not "
                            "writable; fix MLFLOW_TRACKING_URI / tracking.uri") from None


def log_generator(generator: keras.Model) -> str:
    """Log ``generator`` as an MLflow model (keras flavour) and as a ``.keras`` artifact.

    Returns the MLflow model URI. The signature is z -> samples, float32; the pip requirements are
    pinned to the running TensorFlow and Keras (the generator uses built-in layers only).
    """
    z_shape = (-1, *generator.input_shape[1:])
    out_shape = (-1, *generator.output_shape[1:])
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), z_shape, "z")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), out_shape, "samples")]),
    )
    info = mlflow.keras.log_model(
        generator,
        name=MODEL_NAME,
        signature=signature,
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / GENERATOR_FILE
        generator.save(path)
        mlflow.log_artifact(str(path))
    mlflow.set_tag("generator_model_uri", info.model_uri)
    return info.model_uri


def run_link(run) -> str:
    """How to open ``run`` in the UI: a URL for a server, else the ``mlflow ui`` command."""
    uri = mlflow.get_tracking_uri()
    path = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{path}"
    if uri == default_uri():
        return f"run `mlflow ui` (or `make ui`) here, then open http://127.0.0.1:5000/{path}"
    return (f"run `mlflow ui --backend-store-uri {uri}`, then open "
            f"http://127.0.0.1:5000/{path}")


def log_evaluation(run_id: str, result: dict) -> None:
    """Add a full evaluation to a finished run: ``quality/<figure>`` metrics and the JSON."""
    figures = {f"quality/{k}": float(v) for k, v in result["figures"].items()
               if isinstance(v, (int, float))}
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(figures)
        mlflow.log_dict(result, "evaluation.json")


CLASSIFIER_EXPERIMENT = "evaluation-classifiers"


def log_classifier(classifier) -> str:
    """Log an evaluation classifier once, as its own run in ``evaluation-classifiers``: the
    ``.keras`` file, its test accuracy and settings. Returns that run's id (reused afterwards)."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(CLASSIFIER_EXPERIMENT)
    experiment_id = (experiment.experiment_id if experiment
                     else client.create_experiment(CLASSIFIER_EXPERIMENT))
    key = classifier.path.stem
    found = client.search_runs([experiment_id], f"tags.classifier = '{key}'",
                               max_results=1)
    if found and found[0].info.status == "FINISHED":
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=key, tags={"classifier": key})
    for name, value in classifier.info.items():
        if isinstance(value, (int, float, str)) and name != "test_accuracy":
            client.log_param(run.info.run_id, name, value)
    client.log_metric(run.info.run_id, "test_accuracy", classifier.info["test_accuracy"])
    client.log_artifact(run.info.run_id, str(classifier.path))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def register_generator(model_uri: str, name: str, alias: str, objective: str, value: float,
                       tags: dict | None = None) -> dict:
    """Register ``model_uri`` as a new version of ``name`` in the Model Registry, with its
    quality figure ``objective`` (lower is better) as a version tag, and move ``alias`` to it
    only when it beats the version holding the alias (or none does).

    Returns ``{"name", "version", "alias", "champion": bool, "previous": {...} or None}``.
    """
    client = mlflow.MlflowClient()
    version = mlflow.register_model(model_uri, name,
                                    tags={objective: str(value), **(tags or {})}).version
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        holder = None
    previous = None
    if holder is not None:
        held = holder.tags.get(objective)
        previous = {"version": str(holder.version), objective: float(held) if held else None}
    champion = holder is None or previous[objective] is None or value < previous[objective]
    if champion:
        client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, "champion_decision",
                                 "took the alias" if champion else
                                 f"kept by version {previous['version']} "
                                 f"({objective} {previous[objective]:.4g} <= {value:.4g})")
    return {"name": name, "version": str(version), "alias": alias, "champion": champion,
            "previous": previous, objective: value}
