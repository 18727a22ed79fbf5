"""``train``: one training run, recorded in one MLflow run, that survives interruption.

Everything that can fail on user input (data, model shapes, checkpoints, the tracking store) is
checked before the MLflow run is created, so a bad config leaves nothing behind. With
``resume``, the checkpoint of this pipeline continues, in the same MLflow run, from the epoch it
reached. The GAN is built under ``distribute.strategy()``: one device, several GPUs, or workers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import tensorflow as tf

from gan_pipeline import checkpoints, config, data, distribute, progress, tracking
from gan_pipeline.callbacks import Checkpointer, RunRecord
from gan_pipeline.errors import UserError
from gan_pipeline.factory import gan_for, resolved_precision
from gan_pipeline.fitting import Fit, steps_per_epoch
from gan_pipeline.gan import GAN


@dataclass
class Result:
    run_id: str
    model_uri: str | None
    history: dict[str, list[float]]
    gan: GAN


class TrainingStopped(Exception):
    """Training ended early: ``reason`` is "interrupted", "diverged", "collapsed" or "worker lost"."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


WORKER_PREFIX = "gan-pipeline-worker-"  # the private temp folders of non-chief workers

RESUMABLE = ("epochs", "train.d_learning_rate", "train.g_learning_rate", "eval.",
             "tracking.log_model", "tracking.grid_size", "tracking.checkpoint_every_steps",
             "train.steps_per_execution")


def _check_resumable(saved: dict, cfg, directory) -> dict:
    """The settings a resume changes, ``{key: new value}``; an error if any may not change."""
    old = config.flatten({k: v for k, v in tracking.redacted_config(saved).items()
                          if k not in config.schema.PIPELINE_ONLY})
    new = config.flatten(tracking.redacted_config(cfg.training_part()))
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    changed = [k for k in differ if not k.startswith(RESUMABLE)]
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise UserError(f"cannot resume the checkpoint in {directory}: its settings differ in "
                        f"{detail}. Only epochs, the learning rates, eval.* and tracking.log_model,"
                        " grid_size and checkpoint_every_steps may change on resume; start a new "
                        "run without --resume instead")
    return {k: new.get(k) for k in differ}


def _params(cfg, gan: GAN, source, strategy, steps: int) -> dict:
    """Every resolved setting, plus what was derived from them (``resolved.*``)."""
    params = config.flatten(tracking.redacted_config(cfg.training_part()))
    params.update({
        "resolved.replicas": strategy.num_replicas_in_sync,
        "resolved.precision": resolved_precision(cfg),
        "resolved.jit_compile": bool(gan.jit_compile),
        "resolved.strategy": type(strategy).__name__,
        "resolved.steps_per_epoch": steps,
        "resolved.steps_per_execution": distribute.steps_per_execution(
            cfg.train.steps_per_execution, steps),
        "resolved.sample_shape": list(source.shape),
        "resolved.latent_shape": list(gan.latent_shape),
        "resolved.noise": gan.noise,
        "resolved.train_examples": source.num_examples,
        "resolved.generator_params": gan.generator.count_params(),
        "resolved.discriminator_params": gan.discriminator.count_params(),
        "resolved.backend": keras.backend.backend(),
    })
    # What `sample`, `evaluate` and serving feed the saved generator, where it is not the
    # latent_shape G trains on (a labelled family's: one more coordinate that draws the class)
    served = list(gan.exported.inputs[0].shape[1:])
    if served != list(gan.latent_shape):
        params["resolved.sample_noise_shape"] = served
    if source.class_names is not None:
        params["resolved.classes"] = len(source.class_names)
        params["resolved.labels"] = ("k-means clusters" if isinstance(source, data.Clustered)
                                     else "data")
    if distribute.multi_worker():
        params["resolved.workers"] = distribute.worker_addresses()
    return params


def train(cfg, verbose: int | str = 1, resume: bool = False, resume_command: str = "",
          parent_run_id: str | None = None, tags: dict | None = None,
          source: data.DataSource | None = None, start_from: dict | None = None) -> Result:
    """Train the GAN ``cfg`` describes into one MLflow run; returns the run id and history.

    ``source`` is the opened training data (opened here when not given); ``parent_run_id``
    nests the run (the pipeline's train stage); ``tags`` are set on it. ``start_from`` (a
    search's ``continue``: the best trial's checkpoint folder) starts a new run from that
    trial's weights, optimizer state and epoch instead of from scratch. One process at a time
    trains into a checkpoint folder.
    """
    chief = distribute.is_chief()
    if distribute.multi_worker() and cfg.eval.stop_on_collapse:
        raise UserError("eval.stop_on_collapse is not available in multi-worker training: the "
                        "chief alone evaluates, and a stop must reach every worker; set it false")
    tracking.check_reachable(tracking.tracking_uri(cfg.tracking.uri))
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    if source is None:
        source = data.open_source(cfg)  # bad data fails here, before anything is written
    directory = checkpoints.folder(cfg.tracking.checkpoint_dir, cfg.name)
    if chief:
        with checkpoints.exclusive(directory):
            return _train(cfg, source, directory, directory, verbose, resume, resume_command,
                          parent_run_id, tags, start_from=start_from)
    # Another worker of a multi-worker run: the same steps on its part of each batch, but the
    # chief alone evaluates and records. It resumes from the chief's checkpoint folder (shared,
    # as TensorFlow's multi-worker guide has it), writes its own checkpoints (every worker
    # takes part in a save) and its MLflow calls to a folder of its own, removed at the end.
    _remove_dead_workers_folders()
    scratch = Path(tempfile.mkdtemp(prefix=f"{WORKER_PREFIX}{os.getpid()}-"))
    try:
        worker_cfg = cfg.replace({"tracking.uri": f"sqlite:///{scratch}/mlflow.db",
                                  "tracking.log_model": False, "eval.every_epochs": 0})
        return _train(worker_cfg, source, directory, scratch, verbose, resume, resume_command,
                      parent_run_id, tags, checked=cfg)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remove_dead_workers_folders() -> None:
    """The private folders of earlier non-chief workers that were killed (their pid is gone)."""
    for path in Path(tempfile.gettempdir()).glob(f"{WORKER_PREFIX}*"):
        pid = path.name.removeprefix(WORKER_PREFIX).split("-")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def _resume_state(cfg, directory, resume: bool, chief: bool = True) -> tuple[dict | None, dict]:
    """The checkpoint state a run continues from (None: a new run), and the settings a resume
    changes. Checks what a resume may not do."""
    try:
        state = checkpoints.read_state(directory)
    except UserError:
        if resume:
            raise
        return None, {}  # a fresh run replaces a corrupt state file (its files stay)
    if not resume:
        if state is not None and chief:
            print(f"note: starting a new run; the checkpoints of run {state['run_id']} stay in "
                  f"{directory / state['run_id']} (--resume continues the latest run instead)",
                  flush=True)
            _mark_stale(state["run_id"])
        return None, {}
    if state is None:
        raise UserError(f"nothing to resume: no checkpoint in {directory}; run without "
                        "--resume to start")
    changes = _check_resumable(state["config"], cfg, directory)
    if state["epoch"] >= cfg.epochs and (not chief or _run_status(state["run_id"]) in
                                         ("FINISHED", None)):
        raise UserError(f"the run in {directory} already trained {state['epoch']} epochs; "
                        f"to continue it, raise epochs (--set epochs={state['epoch'] + 5})")
    return state, changes


def _run_status(run_id: str) -> str | None:
    try:
        return mlflow.MlflowClient().get_run(run_id).info.status
    except mlflow.exceptions.MlflowException:
        return None


def _mark_stale(run_id: str) -> None:
    """A run left RUNNING in a folder this process now holds was killed: say so in MLflow."""
    if _run_status(run_id) == "RUNNING":
        mlflow.MlflowClient().set_terminated(run_id, "KILLED")
        print(f"note: MLflow run {run_id} had stopped without saying so; marked KILLED",
              flush=True)


def _trial_state(cfg, start_from: dict | None) -> dict | None:
    """The checkpoint state of the search trial a new run continues (None: none to continue)."""
    if not start_from:
        return None
    folder = Path(start_from["folder"])
    try:
        state = checkpoints.read_state(folder)
    except UserError:
        state = None
    if state is None or state["epoch"] > cfg.epochs:
        print(f"note: trial {start_from['trial_id']}'s checkpoint is not in {folder}; "
              "training its settings from the start", flush=True)
        return None
    differ = _trial_differences(state["config"], cfg)
    if differ:
        print(f"note: trial {start_from['trial_id']} trained other settings ({', '.join(differ)}); "
              "training the search's pick from the start", flush=True)
        return None
    return {**state, "folder": folder}


def _trial_differences(saved: dict, cfg) -> list[str]:
    """The settings in which a trial's run differs from ``cfg`` and that would make continuing
    it a different run: any but eval.* and tracking.* (epochs, too, under a learning-rate
    schedule, which spans the run)."""
    free = ("eval.", "tracking.", "name") + (("epochs",) if cfg.train.lr_schedule == "constant"
                                             else ())
    old = config.flatten({k: v for k, v in tracking.redacted_config(saved).items()
                          if k not in config.schema.PIPELINE_ONLY})
    new = config.flatten(tracking.redacted_config(cfg.training_part()))
    return sorted(k for k in set(old) | set(new)
                  if old.get(k) != new.get(k) and not k.startswith(free))


def _train(cfg, source, directory, write_directory, verbose, resume, resume_command,
           parent_run_id, tags, checked=None, start_from=None) -> Result:
    """The run of ``cfg``, resumed from ``directory``, checkpointed into ``write_directory``.
    ``checked`` is the user's config when ``cfg`` is a non-chief worker's private copy: the
    resume rules are checked on it, and the MLflow store is the chief's to check."""
    chief = checked is None
    tracking.configure(cfg.tracking.uri)
    state, resume_changes = _resume_state(checked or cfg, directory, resume, chief)
    trial = None if state else _trial_state(cfg, start_from)
    if chief and state and _run_status(state["run_id"]) is None:
        raise UserError(f"the checkpoint in {directory} belongs to MLflow run "
                        f"{state['run_id']}, which is not in "
                        f"{tracking.redact(mlflow.get_tracking_uri())}; point "
                        "MLFLOW_TRACKING_URI at the store it was logged to")
    steps = steps_per_epoch(cfg, source)
    strategy = distribute.strategy()
    with strategy.scope():  # the networks and the optimizers' slots: under the strategy
        gan = gan_for(cfg, source, total_batches=cfg.epochs * steps)
        if state:
            checkpoints.restore(directory, gan, state)
        elif trial:  # the search's best trial: this run's first epochs
            checkpoints.restore(trial["folder"], gan, trial)
    if state:
        if cfg.train.lr_schedule == "constant":
            # The checkpoint brings the optimizers' old learning rates; the config's win
            # (lowering them is the advice after a divergence). A schedule has no such variable:
            # it is rebuilt from the config and continues from the restored step counts.
            gan.d_optimizer.learning_rate.assign(cfg.train.d_learning_rate)
            gan.g_optimizer.learning_rate.assign(cfg.train.g_learning_rate)
    begun = state or trial
    start_epoch = min(begun["epoch"], cfg.epochs) if begun else 0
    evaluator = (source.evaluator(cfg.eval.n_samples, cfg.seed, cfg.eval.collapse_max_share)
                 if cfg.eval.every_epochs else None)
    record = RunRecord(completed=start_epoch, train_seconds=begun["train_seconds"] if begun else 0)
    fit = Fit(gan, source, cfg, record, evaluator, every=cfg.eval.every_epochs,
              stop_on_collapse=cfg.eval.stop_on_collapse)
    classifier = getattr(evaluator, "classifier", None)
    classifier_run = tracking.log_classifier(classifier) if classifier is not None else None
    experiment = cfg.tracking.experiment or cfg.name
    mlflow.set_experiment(experiment)
    run_args = ({"run_id": state["run_id"]} if state and chief
                else {"run_name": cfg.tracking.run_name or None,
                      "parent_run_id": parent_run_id, "tags": tags})
    run_args["log_system_metrics"] = chief and cfg.tracking.system_metrics
    with mlflow.start_run(**run_args) as run, fit.control.signals():
        if chief:
            print(f"MLflow run {run.info.run_id} (experiment {experiment!r}, "
                  f"{tracking.redact(mlflow.get_tracking_uri())})"
                  + (f", resumed after epoch {start_epoch}" if state else "")
                  + (f", step {state['step']}" if state and state.get("step") else "")
                  + (f", continuing search trial {start_from['trial_id']} after epoch "
                     f"{start_epoch} (its weights and optimizer state)" if trial else ""),
                  flush=True)
        else:
            print(f"note: worker {distribute.task_index()} of a multi-worker run; the chief "
                  "records it" + (f" (resumed after epoch {start_epoch})" if state else ""),
                  flush=True)
        if state and chief:
            fit.logger.restore(run.info.run_id)
            if resume_changes:  # params are write-once in MLflow; record what a resume changed
                mlflow.set_tag(f"resumed_at_epoch_{start_epoch}", json.dumps(resume_changes))
        elif chief:
            params = _params(cfg, gan, source, strategy, steps)
            if trial:  # this run's first epochs are the trial's (its metrics: the trial run)
                params["resolved.continued_from_epoch"] = start_epoch
                mlflow.set_tags({"continued_from_trial": str(start_from["trial_id"]),
                                 "continued_from_run": trial["run_id"]})
            mlflow.log_params(params)
            if classifier_run:
                mlflow.set_tag("evaluation_classifier_run", classifier_run)
        checkpointer = Checkpointer(record, write_directory,
                                    {"run_id": run.info.run_id,
                                     "config": tracking.redacted_config(cfg.to_dict())},
                                    every_steps=cfg.tracking.checkpoint_every_steps)
        # (from a run that had trained every epoch, this only does the end-of-run logging)
        try:
            fit.run(cfg.epochs, steps, initial_epoch=start_epoch, verbose=progress.verbosity(verbose),
                    extra=[checkpointer], done_steps=state.get("step", 0) if state else 0)
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                tf.errors.CancelledError, tf.errors.AbortedError) as exc:
            if not distribute.multi_worker():
                raise
            _worker_lost(run, directory, resume_command, exc, chief)
        finished = record.completed == cfg.epochs and record.reason in (None, "interrupted")
        if not finished:  # a signal after the last step only delays the end-of-run logging
            _stopped(record, run, write_directory, resume_command)
        if distribute.multi_worker():  # every worker has trained before the chief logs
            spread = distribute.weight_spread(gan.weights)  # (a collective: a barrier too)
            mlflow.log_metric("multi_worker/weight_spread", spread)
        model_uri = tracking.log_generator(gan.exported) if cfg.tracking.log_model else None
        if chief:
            print(f"Finished MLflow run {run.info.run_id}. To review it, "
                  f"{tracking.run_link(run)}", flush=True)
            print(f"Samples: gan-pipeline sample --model {model_uri or run.info.run_id} "
                  "--n 100 --out samples.png", flush=True)
    return Result(run.info.run_id, model_uri, record.history, gan)


def _worker_lost(run, directory, resume_command: str, exc, chief: bool):
    """A multi-worker run whose collectives failed (a worker died, or did not answer within
    the collective timeout): end this worker's part with one clear message."""
    resume = resume_command or "gan-pipeline train --config <pipeline file> --resume"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    state = checkpoints.read_state(directory)
    kept = (f"the chief's last checkpoint ({state['epoch']} epochs) is in {directory}"
            if state else "no checkpoint was written yet")
    if chief:
        mlflow.end_run(status="KILLED")
    raise TrainingStopped("worker lost", (
        f"another worker of this multi-worker run stopped or stopped answering "
        f"({type(exc).__name__}: {first[:200]}); {kept}"
        + (f", MLflow run {run.info.run_id} marked KILLED" if chief else "")
        + f". Start every worker again with: {resume}"))


def _stopped(record: RunRecord, run, directory, resume_command: str):
    """End the MLflow run of a run that stopped early, and raise what the user should know."""
    resume = resume_command or "gan-pipeline train --config <pipeline file> --resume"
    if record.reason == "interrupted":
        mlflow.end_run(status="KILLED")
        state = checkpoints.read_state(directory)
        raise TrainingStopped("interrupted", (
            f"stopped by {record.detail} in epoch {record.epoch + 1}; checkpoint written "
            f"({state['epoch']} epochs done), MLflow run {run.info.run_id} marked KILLED. "
            f"Resume with: {resume}"))
    state = checkpoints.read_state(directory)
    if state is not None and state["run_id"] != run.info.run_id:
        state = None
    if record.reason == "collapsed":
        mlflow.set_tag("failure", f"mode collapse: {record.detail}")
        mlflow.end_run(status="FAILED")
        raise TrainingStopped("collapsed", (
            f"stopped on mode collapse ({record.detail}; eval.stop_on_collapse is set). MLflow "
            f"run {run.info.run_id} marked FAILED; checkpoint kept ({state['epoch']} epochs). "
            "Try another loss, learning rates or model, or resume with: " + resume))
    mlflow.set_tag("failure", f"diverged: {record.detail}")
    mlflow.end_run(status="FAILED")
    if state:
        kept = (f"the last good checkpoint ({state['epoch']} epochs) is kept; lower the "
                f"learning rates and resume: {resume} --set train.d_learning_rate=... "
                "--set train.g_learning_rate=...")
    else:
        kept = "no epoch had finished, so there is no checkpoint; lower the learning rates " \
               "(e.g. --set train.d_learning_rate=1e-4 --set train.g_learning_rate=1e-4) and " \
               "start again"
    raise TrainingStopped("diverged", (
        f"training diverged: {record.detail}. MLflow run {run.info.run_id} marked FAILED; "
        f"{kept}"))
