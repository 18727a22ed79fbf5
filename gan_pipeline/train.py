"""Training: build data, models and the GAN from a validated config, fit, and track in MLflow."""

from __future__ import annotations

import contextlib
import json
import signal
import tempfile
import threading
from dataclasses import dataclass

import keras
import mlflow
import numpy as np
import tensorflow as tf

from gan_pipeline import config as config_mod
from gan_pipeline import data as data_mod
from gan_pipeline import checkpoints, distribute, evaluation, models, sampling, tracking
from gan_pipeline.errors import UserError
from gan_pipeline.gan import GAN


@dataclass
class Result:
    run_id: str
    model_uri: str | None
    history: dict[str, list[float]]
    gan: GAN


def build_gan(cfg: dict, shape: tuple[int, ...], total_batches: int = 0) -> GAN:
    """The compiled GAN a config describes, for samples of ``shape``.

    ``total_batches`` is the length of the run in batches: with ``train.lr_schedule = "cosine"``
    each learning rate decays to 0 over it (over ``d_steps``/``g_steps`` times as many optimizer
    steps). The optimizers' step counts are checkpointed, so a resumed run continues the decay.
    """
    model_cfg = dict(cfg["model"])
    family_name = model_cfg.pop("name")
    t = cfg["train"]
    policy = distribute.precision(t["precision"], shape)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)  # only while the networks are built
    try:
        generator, discriminator = models.build(family_name, shape, **model_cfg)
        gan = GAN(generator, discriminator, noise=models.get_family(family_name).noise,
                  seed=cfg["seed"], ema_decay=t["ema_decay"], name=f"{family_name}_gan")
    finally:
        keras.config.set_dtype_policy(previous)

    def adam(learning_rate, steps_per_batch):
        if t["lr_schedule"] == "cosine":
            if total_batches < 1:
                raise ValueError("train.lr_schedule = 'cosine' needs the run's length in batches")
            learning_rate = keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=total_batches * steps_per_batch)
        optimizer = keras.optimizers.Adam(learning_rate, beta_1=t["beta_1"], beta_2=t["beta_2"])
        # float16 gradients underflow without loss scaling; one scaler per network
        return (keras.optimizers.LossScaleOptimizer(optimizer) if policy == "mixed_float16"
                else optimizer)

    gan.compile(
        d_optimizer=adam(t["d_learning_rate"], t["d_steps"]),
        g_optimizer=adam(t["g_learning_rate"], t["g_steps"]),
        loss=t["loss"], label_smoothing=t["label_smoothing"],
        d_steps=t["d_steps"], g_steps=t["g_steps"], r1_gamma=t["r1_gamma"],
        jit_compile=distribute.jit_compile(t["jit_compile"]),
    )
    return gan


class RunControl(keras.callbacks.Callback):
    """Stops training cleanly at the next step on SIGINT/SIGTERM, or when a loss is not finite.

    ``reason`` is then ``"interrupted"``, ``"diverged"`` (or ``"collapsed"``, set by the logger)
    and ``detail`` says what happened; ``completed`` counts the epochs whose every step ran. A
    second Ctrl-C stops at once (KeyboardInterrupt).
    """

    def __init__(self, completed: int = 0):
        super().__init__()
        self.reason: str | None = None
        self.detail = ""
        self.epoch = 0
        self.completed = completed

    @contextlib.contextmanager
    def signals(self):
        """Route SIGINT/SIGTERM to a clean stop while the block runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        if self.reason == "interrupted":
            raise KeyboardInterrupt
        if self.reason is None:
            self.reason, self.detail = "interrupted", signal.Signals(signum).name
        if self.model is not None:
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        for key in ("d_loss", "g_loss"):
            value = float((logs or {}).get(key, 0.0))
            if not np.isfinite(value):
                self.reason = "diverged"
                self.detail = f"{key} became {value} at epoch {self.epoch + 1}, step {batch + 1}"
                self.model.stop_training = True
                return
        if batch + 1 == self.params.get("steps"):
            self.completed = self.epoch + 1

    def epoch_complete(self, epoch: int) -> bool:
        return self.reason != "diverged" and self.completed == epoch + 1


class Checkpointer(keras.callbacks.Callback):
    """Writes a checkpoint after every completed epoch, and where an interruption stopped."""

    def __init__(self, directory, control: RunControl, logger, base_state: dict,
                 every_steps: int = 0):
        super().__init__()
        self.directory, self.control, self.logger = directory, control, logger
        self.base_state = base_state
        self.every_steps = every_steps
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # Mid-epoch checkpoints keep the optimizer steps done so far; resuming from one redoes
        # the epoch's data from its start (only epoch-end checkpoints continue bit-exactly).
        last = batch + 1 == self.params.get("steps")
        if self.every_steps and (batch + 1) % self.every_steps == 0 and not last \
                and self.control.reason is None:
            checkpoints.save(self.directory, self.model,
                             {**self.base_state, "epoch": self.epoch, "step": batch + 1,
                              "train_seconds": self.logger.train_seconds})

    def on_epoch_end(self, epoch, logs=None):
        if self.control.reason == "diverged":
            return  # the last good checkpoint stays
        if not all(np.isfinite(w.numpy()).all() for w in self.model.trainable_weights):
            self.control.reason = "diverged"
            self.control.detail = f"weights became non-finite in epoch {epoch + 1}"
            self.model.stop_training = True
            return
        # An epoch cut short is saved as not done: resuming redoes it from its first batch,
        # starting from the weights it had reached.
        checkpoints.save(self.directory, self.model,
                         {**self.base_state, "epoch": self.control.completed,
                          "train_seconds": self.logger.train_seconds})


RESUMABLE = ("epochs", "train.d_learning_rate", "train.g_learning_rate", "eval.",
             "tracking.log_model", "tracking.grid_size", "tracking.checkpoint_every_steps")


def _check_resumable(saved: dict, cfg: dict, directory) -> dict:
    """The settings a resume changes, ``{key: new value}``; an error if any may not change."""
    old = config_mod.flatten(config_mod.training_part(saved))
    new = config_mod.flatten(config_mod.training_part(cfg))
    differ = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    changed = [k for k in differ if not k.startswith(RESUMABLE)]
    if changed:
        detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise UserError(f"cannot resume the checkpoint in {directory}: its settings differ in "
                        f"{detail}. Only epochs, the learning rates, eval.* and tracking.log_model,"
                        " grid_size and checkpoint_every_steps may change on resume; start a new "
                        "run without --resume instead")
    return {k: new.get(k) for k in differ}


def train(cfg: dict, verbose: int | str = 1, resume: bool = False,
          resume_command: str = "", parent_run_id: str | None = None,
          tags: dict | None = None) -> Result:
    """Train the GAN ``cfg`` describes into one MLflow run; returns the run id and history.

    Everything that can fail on user input (data, model shapes, checkpoints) is checked before
    the run is created, so a bad config leaves nothing behind in MLflow. With ``resume``, the
    checkpoint of this pipeline continues, in the same MLflow run, from the epoch it reached.
    ``parent_run_id`` nests the run (the pipeline's train stage); ``tags`` are set on it.
    The GAN is built under ``distribute.strategy()``: one device, several GPUs, or workers.
    """
    if not distribute.is_chief():
        # Multi-worker training: every worker runs this, only the chief records. The others
        # log to a private throwaway store and folder (their copies of the same weights).
        scratch = tempfile.mkdtemp(prefix="gan-pipeline-worker-")
        cfg = {**cfg, "tracking": {**cfg["tracking"], "uri": f"sqlite:///{scratch}/mlflow.db",
                                   "checkpoint_dir": scratch, "log_model": False}}
        print(f"note: not the chief worker; logging to {scratch} (discarded)", flush=True)
    directory = checkpoints.folder(cfg["tracking"]["checkpoint_dir"], cfg["name"])
    try:
        state = checkpoints.read_state(directory)
    except UserError:
        if resume:
            raise
        state = {"run_id": "(unreadable)"}  # a fresh run replaces a corrupt checkpoint
    if resume:
        if state is None:
            raise UserError(f"nothing to resume: no checkpoint in {directory}; run without "
                            "--resume to start")
        resume_changes = _check_resumable(state["config"], cfg, directory)
        if state["epoch"] >= cfg["epochs"]:
            raise UserError(f"the run in {directory} already trained {state['epoch']} epochs; "
                            f"to continue it, raise epochs (--set epochs={state['epoch'] + 5})")
    elif state is not None:
        print(f"note: starting a new run; the checkpoint of run {state['run_id']} in {directory} "
              "will be replaced (use --resume to continue that run instead)", flush=True)
        state = None

    tracking.check_reachable(tracking.tracking_uri(cfg["tracking"]["uri"]))
    keras.utils.set_random_seed(cfg["seed"])
    if cfg["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    data = data_mod.from_config(cfg)
    steps = cfg["train"]["steps_per_epoch"] or data.num_examples // cfg["batch_size"]
    strategy = distribute.strategy()
    with strategy.scope():
        gan = build_gan(cfg, data.shape, total_batches=cfg["epochs"] * steps)
    if state:
        checkpoints.restore(directory, gan, state)
        if cfg["train"]["lr_schedule"] == "constant":
            # The checkpoint brings the optimizers' old learning rates; the config's win
            # (lowering them is the advice after a divergence). A schedule has no such variable:
            # it is rebuilt from the config and continues from the restored step counts.
            gan.d_optimizer.learning_rate.assign(cfg["train"]["d_learning_rate"])
            gan.g_optimizer.learning_rate.assign(cfg["train"]["g_learning_rate"])
    start_epoch = state["epoch"] if state else 0
    # the batch pictured every epoch: the same seed gives the same batch
    noise = sampling.noise((cfg["tracking"]["grid_size"], *gan.latent_shape), gan.noise,
                           cfg["seed"])
    real_preview = data_mod.real_samples(cfg, cfg["tracking"]["grid_size"], cfg["seed"])
    evaluate = evaluation.GeneratorEvaluator(cfg) if cfg["eval"]["every_epochs"] else None

    tracking.configure(cfg["tracking"]["uri"])
    if state:
        try:
            mlflow.MlflowClient().get_run(state["run_id"])
        except mlflow.exceptions.MlflowException:
            raise UserError(f"the checkpoint in {directory} belongs to MLflow run "
                            f"{state['run_id']}, which is not in {mlflow.get_tracking_uri()}; "
                            "point MLFLOW_TRACKING_URI at the store it was logged to") from None
    classifier_run = (tracking.log_classifier(evaluate.images.classifier)
                      if evaluate is not None and evaluate.images is not None else None)
    mlflow.set_experiment(cfg["tracking"]["experiment"] or cfg["name"])
    run_args = ({"run_id": state["run_id"]} if state
                else {"run_name": cfg["tracking"]["run_name"] or None,
                      "parent_run_id": parent_run_id, "tags": tags})
    control = RunControl(completed=start_epoch)
    with mlflow.start_run(**run_args) as run, control.signals():
        print(f"MLflow run {run.info.run_id} (experiment "
              f"{cfg['tracking']['experiment'] or cfg['name']!r}, {mlflow.get_tracking_uri()})"
              + (f", resumed after epoch {start_epoch}" if state else ""), flush=True)
        logger = tracking.MlflowLogger(noise, real_preview, title=cfg["name"], evaluate=evaluate,
                                       every=cfg["eval"]["every_epochs"], control=control,
                                       stop_on_collapse=cfg["eval"]["stop_on_collapse"])
        if state:
            logger.restore(run.info.run_id, state["train_seconds"])
            if resume_changes:  # params are write-once in MLflow; record what a resume changed
                mlflow.set_tag(f"resumed_at_epoch_{start_epoch}", json.dumps(resume_changes))
        else:
            params = config_mod.flatten(config_mod.training_part(cfg))
            params.update({
                "resolved.replicas": strategy.num_replicas_in_sync,
                "resolved.precision": distribute.precision(cfg["train"]["precision"], data.shape),
                "resolved.jit_compile": bool(gan.jit_compile),
                "resolved.strategy": type(strategy).__name__,
                "resolved.steps_per_epoch": steps,
                "resolved.sample_shape": list(data.shape),
                "resolved.latent_shape": list(gan.latent_shape),
                "resolved.noise": gan.noise,
                "resolved.train_examples": data.num_examples,
                "resolved.generator_params": gan.generator.count_params(),
                "resolved.discriminator_params": gan.discriminator.count_params(),
                "resolved.backend": keras.backend.backend(),
            })
            mlflow.log_params(params)
            if classifier_run:
                mlflow.set_tag("evaluation_classifier_run", classifier_run)
        checkpointer = Checkpointer(directory, control, logger,
                                    {"run_id": run.info.run_id, "config": cfg},
                                    every_steps=cfg["tracking"]["checkpoint_every_steps"])
        # The data stream continues where the checkpoint left it: same seed, same order.
        stream = data.dataset.repeat().skip(start_epoch * steps)
        gan.fit(stream, initial_epoch=start_epoch, epochs=cfg["epochs"], steps_per_epoch=steps,
                callbacks=[control, logger, checkpointer], verbose=verbose, shuffle=False)
        finished = control.completed == cfg["epochs"] and control.reason in (None, "interrupted")
        if not finished:  # a signal after the last step only delays the end-of-run logging
            return _stopped(control, run, directory, resume_command)
        model_uri = tracking.log_generator(gan.sampler) if cfg["tracking"]["log_model"] else None
        print(f"Finished MLflow run {run.info.run_id}. To review it, {tracking.run_link(run)}",
              flush=True)
        print(f"Samples: gan-pipeline sample --model {run.info.run_id} --n 100 --out samples.png",
              flush=True)
    return Result(run.info.run_id, model_uri, logger.history, gan)


class TrainingStopped(Exception):
    """Training ended early: ``reason`` is "interrupted", "diverged" or "collapsed"."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _stopped(control: RunControl, run, directory, resume_command: str):
    resume = resume_command or "gan-pipeline train --config <pipeline file> --resume"
    if control.reason == "interrupted":
        mlflow.end_run(status="KILLED")
        state = checkpoints.read_state(directory)
        raise TrainingStopped("interrupted", (
            f"stopped by {control.detail} in epoch {control.epoch + 1}; checkpoint written "
            f"({state['epoch']} epochs done), MLflow run {run.info.run_id} marked KILLED. "
            f"Resume with: {resume}"))
    state = checkpoints.read_state(directory)
    if state is not None and state["run_id"] != run.info.run_id:
        state = None
    if control.reason == "collapsed":
        mlflow.set_tag("failure", f"mode collapse: {control.detail}")
        mlflow.end_run(status="FAILED")
        raise TrainingStopped("collapsed", (
            f"stopped on mode collapse ({control.detail}; eval.stop_on_collapse is set). MLflow "
            f"run {run.info.run_id} marked FAILED; checkpoint kept ({state['epoch']} epochs). "
            "Try another loss, learning rates or model, or resume with: " + resume))
    mlflow.set_tag("failure", f"diverged: {control.detail}")
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
        f"training diverged: {control.detail}. MLflow run {run.info.run_id} marked FAILED; "
        f"{kept}"))
