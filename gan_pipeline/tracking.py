"""MLflow I/O: where runs go, how the generator, evaluations and classifiers are logged, and the
Model Registry alias. (What each epoch logs is ``gan_pipeline.callbacks.logger``.)

By default runs go to a SQLite database ``mlflow.db`` in the current directory with artifacts under
``./mlruns/`` (MLflow 3 no longer accepts the old ``./mlruns`` file store). That is exactly what
plain ``mlflow ui`` reads when started in the same directory. ``MLFLOW_TRACKING_URI`` or
``tracking.uri`` point elsewhere, e.g. a team server.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path

import keras
import mlflow
import numpy as np
import requests
import tensorflow as tf
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from gan_pipeline.errors import UserError

GENERATOR_FILE = "generator.keras"  # the .keras artifact of every run
MODEL_NAME = "generator"  # the MLflow model (keras flavour) of every run


_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]*@")


def redact(text: str) -> str:
    """``text`` with the ``user:password@`` of any URI in it replaced by ``***@``: credentials
    never leave the process (messages, params, artifacts, state files)."""
    return _CREDENTIALS.sub("***@", str(text))


def redacted_config(values: dict) -> dict:
    """A config dict as it may be written anywhere: its tracking URI without credentials."""
    values = copy.deepcopy(values)
    if "uri" in values.get("tracking", {}):
        values["tracking"]["uri"] = redact(values["tracking"]["uri"])
    return values


def default_uri() -> str:
    """``sqlite:///<cwd>/mlflow.db``: where plain ``mlflow ui`` started here looks."""
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def tracking_uri(configured: str = "") -> str:
    """``tracking.uri`` if set, else ``$MLFLOW_TRACKING_URI``, else ``default_uri()``."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def configure(configured: str = "") -> str:
    """Point MLflow at the store (creating a new SQLite store once, see ``_create_store``)."""
    uri = tracking_uri(configured)
    mlflow.set_tracking_uri(uri)
    if uri.startswith("sqlite:///"):
        _create_store(Path(uri.removeprefix("sqlite:///")))
    return uri


def _create_store(path: Path) -> None:
    """Create and migrate a new SQLite store under a lock, so that two processes starting on a
    fresh store do not both migrate its schema (the second waits, then finds it ready)."""
    if path.is_file() and path.stat().st_size > 0:
        return
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()


# Store URIs MLflow can track to (sqlite and the SQLAlchemy databases, a server, Databricks).
SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "file")


def check_reachable(uri: str) -> None:
    """Fail fast, before any training, when the tracking store cannot be used, reached or
    written. Messages name the store without its credentials."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""
    if scheme not in SCHEMES:
        raise UserError(f"tracking URI {redact(uri)!r} is not one MLflow can log to: expected "
                        "http(s)://host:port (a tracking server), sqlite:///path/mlflow.db or a "
                        "database URI (postgresql://, mysql://, ...); fix MLFLOW_TRACKING_URI / "
                        "tracking.uri, or unset it to log to ./mlflow.db")
    if scheme in ("http", "https"):
        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=5).raise_for_status()
            # /health answers anyone; a read of the store tells whether this client may log.
            answer = requests.post(f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
                                   json={"max_results": 1}, timeout=10, **_login())
        except requests.RequestException as exc:
            raise UserError(f"MLflow tracking server {redact(uri)} is unreachable "
                            f"({type(exc).__name__}); start it, fix MLFLOW_TRACKING_URI / "
                            "tracking.uri, or unset it to log to ./mlflow.db") from None
        _check_login(uri, answer.status_code)
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise UserError(f"MLflow store {uri}: folder {folder} does not exist or is not "
                            "writable; fix MLFLOW_TRACKING_URI / tracking.uri") from None


def _login() -> dict:
    """The credentials MLflow's own client sends (``MLFLOW_TRACKING_USERNAME`` and
    ``_PASSWORD``, or ``MLFLOW_TRACKING_TOKEN``), as ``requests`` arguments; none when unset
    (then a ``user:password@`` in the URI, if any, is what ``requests`` sends)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        return {"auth": (user, password)}
    if token:
        return {"headers": {"Authorization": f"Bearer {token}"}}
    return {}


def _check_login(uri: str, status: int) -> None:
    """One clear error for a server that refuses this client (basic auth, docs/scale.md)."""
    if status == 401:
        if _login():
            raise UserError(f"MLflow tracking server {redact(uri)} refused the login of "
                            "MLFLOW_TRACKING_USERNAME (HTTP 401): check it and "
                            "MLFLOW_TRACKING_PASSWORD")
        raise UserError(f"MLflow tracking server {redact(uri)} asks for a login (HTTP 401): set "
                        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to one of its "
                        "users (docs/scale.md)")
    if status == 403:
        raise UserError(f"MLflow tracking server {redact(uri)} refused this user (HTTP 403): ask "
                        "its admin for permission to read and write experiments")


@contextlib.contextmanager
def _quiet_model_logging():
    """MLflow's advice that does not apply to the generator's model: the explicit signature says
    what goes in (no input example needed), and the service is pickled as a reference to its
    class in the code shipped with the model."""
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        pyfunc_log.setLevel(logging.ERROR)
        try:
            yield
        finally:
            pyfunc_log.setLevel(level)


def log_generator(generator: keras.Model) -> str:
    """Log ``generator`` as a ``.keras`` artifact and as an MLflow model that serves it
    (``gan_pipeline.serving``: a pyfunc with this package's code inside).

    Returns the MLflow model URI. The signature is z -> samples, float32 (a conditional
    generator's: z and label, int32, -> samples); the pip requirements are pinned to the running
    TensorFlow, Keras and the libraries this package's layers import.
    """
    import matplotlib
    import PIL

    from gan_pipeline import serving

    z_shape = (-1, *generator.inputs[0].shape[1:])
    out_shape = (-1, *generator.output_shape[1:])
    inputs = [TensorSpec(np.dtype(np.float32), z_shape, "z")]
    if len(generator.inputs) > 1:
        inputs.append(TensorSpec(np.dtype(np.int32), (-1, 1), "label"))
    signature = ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema([TensorSpec(np.dtype(np.float32), out_shape, "samples")]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / GENERATOR_FILE
        generator.save(path)
        mlflow.log_artifact(str(path))
        with _quiet_model_logging():
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=serving.GeneratorService(),
                artifacts={"generator": str(path)},
                code_paths=[str(Path(serving.__file__).parent)],
                signature=signature,
                pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}",
                                  f"numpy=={np.__version__}",
                                  f"matplotlib=={matplotlib.__version__}",
                                  f"pillow=={PIL.__version__}"],
            )
    mlflow.set_tag("generator_model_uri", info.model_uri)
    return info.model_uri


def run_link(run) -> str:
    """How to open ``run`` in the UI: a URL for a server, else the ``mlflow ui`` command."""
    uri = redact(mlflow.get_tracking_uri())
    path = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{path}"
    if uri == default_uri():
        return f"run `mlflow ui` (or `make ui`) here, then open http://127.0.0.1:5000/{path}"
    return (f"run `mlflow ui --backend-store-uri {uri}`, then open "
            f"http://127.0.0.1:5000/{path}")


def log_evaluation(run_id: str, result: dict) -> None:
    """Add a full evaluation to a finished run: ``quality/<figure>`` metrics (and
    ``quality_untruncated/<figure>`` for a truncated generator) and the JSON.
    Through the client, without reopening the run: whatever happens meanwhile (Ctrl-C, a
    crash), a FINISHED run stays FINISHED."""
    client = mlflow.MlflowClient()
    metrics = [mlflow.entities.Metric(f"{prefix}/{k}", float(v), mlflow_timestamp(), 0)
               for prefix, key in (("quality", "figures"),
                                   ("quality_untruncated", "figures_without_truncation"))
               for k, v in result.get(key, {}).items() if isinstance(v, (int, float))]
    client.log_batch(run_id, metrics=metrics)
    client.log_dict(run_id, result, "evaluation.json")


def mlflow_timestamp() -> int:
    return int(time.time() * 1000)


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
