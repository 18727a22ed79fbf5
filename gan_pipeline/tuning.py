"""Hyperparameter search with Keras Tuner. The objective is a quality figure, not a loss.

The pipeline file declares the search: ``[tune]`` picks the tuner (random search, Bayesian
optimisation or Hyperband) and its budget, ``[tune.space.<section>]`` the ranges, e.g.

    [tune.space.train]
    g_learning_rate = { min = 1e-4, max = 1e-3, log = true }
    loss = { values = ["non_saturating", "minimax"] }

Each trial trains the GAN its hyperparameters describe for ``tune.epochs`` epochs (Hyperband: the
epochs it asks for, continuing the weights of the trial it promotes) and is judged after every
epoch by the evaluation's figure: the Frechet distance for images, the KS statistic for 1-D, both
minimised. Every trial is a nested MLflow run (hyperparameters, curves, sample grids, objective).
Trials that diverge (non-finite loss) or collapse (one class takes over) stop at once and are
marked FAILED, in Keras Tuner and in MLflow.

The tuner's own state lives in a folder keyed by the search's inputs, so rerunning an interrupted
search continues it. With ``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` /
``KERASTUNER_ORACLE_PORT`` set, Keras Tuner's chief/worker mode shares one search between
processes or machines (see the README).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import keras_tuner as kt
import mlflow

from gan_pipeline import config as config_mod
from gan_pipeline import data as data_mod
from gan_pipeline import evaluation, sampling, tracking
from gan_pipeline.errors import UserError


def declare(hp: kt.HyperParameters, space: dict) -> None:
    """Declare ``space`` (validated ``tune.space``) in ``hp``. List values (e.g. filter counts)
    are offered as JSON strings, since Keras Tuner's choices must be scalars."""
    for name, spec in space.items():
        if "values" in spec:
            values = spec["values"]
            if isinstance(values[0], list):
                values = [json.dumps(v) for v in values]
            hp.Choice(name, values)
        elif isinstance(spec["min"], int):
            step = spec.get("step", None if spec["log"] else 1)  # log: a multiplier, > 1
            hp.Int(name, spec["min"], spec["max"], step=step,
                   sampling="log" if spec["log"] else "linear")
        else:
            hp.Float(name, spec["min"], spec["max"], step=spec.get("step"),
                     sampling="log" if spec["log"] else "linear")


def chosen(hp: kt.HyperParameters, space: dict) -> dict:
    """The settings ``hp`` chose, as ``{"train.g_learning_rate": 3e-4, ...}``."""
    values = {}
    for name, spec in space.items():
        value = hp.get(name)
        if "values" in spec and isinstance(spec["values"][0], list):
            value = json.loads(value)
        values[name] = value
    return values


class GANHyperModel(kt.HyperModel):
    """Builds the GAN a trial's hyperparameters describe and trains it under MLflow."""

    def __init__(self, cfg: dict, shape: tuple[int, ...], evaluator, parent_run_id: str):
        super().__init__(name=cfg["name"])
        self.cfg, self.shape, self.evaluator = cfg, shape, evaluator
        self.parent_run_id = parent_run_id
        self.space = cfg["tune"]["space"]
        self.objective = evaluation.objective_name(cfg)
        self.trial = None  # the trial being run; set by the tuner (see ``_GANTunerMixin``)

    def steps_per_epoch(self, cfg: dict, num_examples: int | None = None) -> int:
        """Batches in a trial epoch: ``tune.steps_per_epoch``, else ``train``'s, else one pass."""
        fixed = cfg["tune"]["steps_per_epoch"] or cfg["train"]["steps_per_epoch"]
        if fixed:
            return fixed
        if num_examples is None:
            num_examples = data_mod.from_config(cfg).num_examples
        return num_examples // cfg["batch_size"]

    def trial_config(self, hp: kt.HyperParameters) -> dict:
        declare(hp, self.space)
        return config_mod.with_values(self.cfg, chosen(hp, self.space))

    def build(self, hp):
        from gan_pipeline.train import build_gan

        cfg = self.trial_config(hp)
        keras.utils.set_random_seed(cfg["seed"])
        # A learning-rate schedule spans the longest trial (Hyperband's shorter rungs stop
        # partway through its decay, as their continuation would).
        scheduled = cfg["train"]["lr_schedule"] != "constant"
        gan = build_gan(cfg, self.shape, total_batches=(
            cfg["tune"]["epochs"] * self.steps_per_epoch(cfg) if scheduled else 0))
        # Built optimizers have variables, so a trial Hyperband continues gets back its Adam
        # moments and step counts with the weights (unbuilt ones would be skipped on load).
        gan.d_optimizer.build(gan.discriminator.trainable_variables)
        gan.g_optimizer.build(gan.generator.trainable_variables)
        return gan

    def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, **kwargs):
        from gan_pipeline.train import RunControl

        cfg = self.trial_config(hp)
        epochs = epochs or cfg["tune"]["epochs"]
        data = data_mod.from_config(cfg)
        steps = self.steps_per_epoch(cfg, data.num_examples)
        trial_id = self.trial.trial_id if self.trial is not None else "?"
        grid = cfg["tracking"]["grid_size"]
        noise = sampling.noise((grid, *model.latent_shape), model.noise, cfg["seed"])
        control = RunControl(completed=initial_epoch)
        logger = tracking.MlflowLogger(noise, data_mod.real_samples(cfg, grid, cfg["seed"]),
                                       title=f"{cfg['name']} trial {trial_id}",
                                       evaluate=self.evaluator, every=1, control=control,
                                       stop_on_collapse=True)
        report = _ReportObjective(logger, self.objective)
        params = {**chosen(hp, self.space), "trial_id": trial_id, "epochs": epochs,
                  "initial_epoch": initial_epoch, "steps_per_epoch": steps}
        params.update({k: v for k, v in hp.values.items() if k.startswith("tuner/")})
        tags = {"stage": "trial", "tuner_id": os.environ.get("KERASTUNER_TUNER_ID", "")}
        nested = mlflow.active_run() is not None
        with mlflow.start_run(run_name=f"trial {trial_id}", parent_run_id=self.parent_run_id,
                              nested=nested, tags=tags) as run:
            mlflow.log_params(params)
            print(f"trial {trial_id}: {json.dumps(chosen(hp, self.space))} "
                  f"(epochs {initial_epoch + 1}..{epochs}, MLflow run {run.info.run_id})",
                  flush=True)
            stream = data.dataset.repeat().skip(initial_epoch * steps)
            history = model.fit(stream, initial_epoch=initial_epoch, epochs=epochs,
                                steps_per_epoch=steps, verbose=0, shuffle=False,
                                callbacks=[control, logger, report, *(callbacks or [])])
            if control.reason is not None:
                outcome = {"diverged": "diverged", "collapsed": "collapsed"}.get(
                    control.reason, control.reason)
                mlflow.set_tags({"trial_outcome": outcome, "failure": control.detail})
                mlflow.end_run(status="FAILED")
                print(f"trial {trial_id} stopped early: {outcome} ({control.detail})", flush=True)
                raise kt.errors.FailedTrialError(f"{outcome}: {control.detail}")
            best = min(history.history[self.objective])
            mlflow.log_metric("objective", best)
            mlflow.set_tags({"trial_outcome": "completed", "objective": self.objective})
            print(f"trial {trial_id}: {self.objective} {best:.4g}", flush=True)
        return history


class _ReportObjective(keras.callbacks.Callback):
    """Hands the epoch's quality figure to Keras Tuner through the epoch's logs."""

    def __init__(self, logger, objective: str):
        super().__init__()
        self.logger, self.objective = logger, objective

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.logger.last_eval is not None \
                and self.logger.eval_steps and self.logger.eval_steps[-1] == epoch + 1:
            logs[self.objective] = float(self.logger.last_eval[self.objective])


class _GANTunerMixin:
    """Tells the hypermodel which trial runs (its MLflow run is named after it)."""

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self.hypermodel.trial = trial


class RandomSearch(_GANTunerMixin, kt.RandomSearch):
    pass


class BayesianOptimization(_GANTunerMixin, kt.BayesianOptimization):
    pass


class Hyperband(_GANTunerMixin, kt.Hyperband):
    pass


def make_tuner(cfg: dict, hypermodel: GANHyperModel, directory: Path, project: str):
    """The Keras Tuner ``tune.tuner`` names, minimising the quality figure; it reloads its state
    from ``directory/project`` when that exists (a rerun continues the search)."""
    t = cfg["tune"]
    objective = kt.Objective(evaluation.objective_name(cfg), "min")
    common = dict(hypermodel=hypermodel, objective=objective,
                  seed=cfg["seed"], directory=str(directory), project_name=project,
                  overwrite=False, max_consecutive_failed_trials=t["max_failed_trials"])
    if t["tuner"] == "hyperband":
        return Hyperband(max_epochs=t["epochs"], factor=t["hyperband_factor"], **common)
    if t["tuner"] == "bayesian":
        return BayesianOptimization(max_trials=t["max_trials"], **common)
    return RandomSearch(max_trials=t["max_trials"], **common)


def search(cfg: dict, directory: Path, project: str, parent_run_id: str,
           worker: bool = False) -> dict | None:
    """Run (or continue) the search ``cfg["tune"]`` declares; trials nest under
    ``parent_run_id``. Returns ``{"values": best settings, "objective": ..., "trials": [...]}``,
    or None for a ``worker`` of a distributed search (the chief holds the results)."""
    if not cfg["tune"]["space"]:
        raise UserError("the tune stage needs a search space: declare [tune.space.train] (or "
                        ".model) ranges in the pipeline file, or drop 'tune' from stages")
    evaluator = evaluation.GeneratorEvaluator(cfg, n=cfg["tune"]["n_samples"])
    shape = data_mod.from_config(cfg).shape
    hypermodel = GANHyperModel(cfg, shape, evaluator, parent_run_id)
    tuner = make_tuner(cfg, hypermodel, directory, project)
    try:
        tuner.search()
    except RuntimeError as exc:  # Keras Tuner's "Number of consecutive failures exceeded"
        if "consecutive failures" not in str(exc):
            raise
        print(f"search stopped: {cfg['tune']['max_failed_trials']} trials in a row failed "
              "(tune.max_failed_trials)", flush=True)
    return None if worker else summary(tuner, cfg)


def summary(tuner, cfg: dict) -> dict:
    """What the search found: the best trial's settings and every trial's outcome."""
    name = evaluation.objective_name(cfg)
    trials = []
    for trial in tuner.oracle.trials.values():
        score = trial.score if trial.score is not None else None
        trials.append({"trial_id": trial.trial_id, "status": str(trial.status),
                       "objective": score, "values": dict(trial.hyperparameters.values)})
    best = [t for t in tuner.oracle.get_best_trials(len(trials)) if t.score is not None]
    if not best:
        raise UserError(f"the search finished without one successful trial ({len(trials)} "
                        "failed): widen or move the search space, or lower the learning rates")
    space = cfg["tune"]["space"]
    return {"objective_name": name, "objective": float(best[0].score),
            "best_trial": best[0].trial_id, "values": chosen(best[0].hyperparameters, space),
            "trials": trials}
