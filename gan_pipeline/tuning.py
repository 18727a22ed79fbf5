"""Hyperparameter search with Keras Tuner. The objective is a quality figure, not a loss.

The pipeline file declares the search: ``[tune]`` picks the tuner (random search, Bayesian
optimisation or Hyperband) and its budget, ``[tune.space.<section>]`` the ranges, e.g.

    [tune.space.train]
    g_learning_rate = { min = 1e-4, max = 1e-3, log = true }
    loss = { values = ["non_saturating", "minimax"] }

Each trial trains the GAN its hyperparameters describe for ``tune.epochs`` epochs (Hyperband: the
epochs it asks for, continuing the weights of the trial it promotes) and is judged by the
evaluation's figure for the generator it ends with (measured every epoch for the curves): by
default the Frechet distance for images, the KS statistic for 1-D, both minimised;
``tune.objective`` picks another (label_accuracy, maximised, ...). Every trial is a nested MLflow
run (hyperparameters, curves, sample grids, objective). Short trials favour settings that learn
fast and lose over the full run. So a trial whose epochs are the train run's own (``tune.steps_per_epoch``
0 or equal to train's, ``tune.epochs`` at most ``epochs``) trains the first epochs of that run,
on its learning-rate horizon and data order, and leaves a checkpoint (``<project>/trials/<id>``):
with ``tune.adopt = "best"`` the train stage continues the best trial from there to the full
length (the search's last rung is the train run; nothing is trained twice). ``tune.adopt =
"file"`` keeps the file's settings and records the search beside them.
Trials that diverge (non-finite loss) or collapse (one class takes over) stop at once and are
marked FAILED, in Keras Tuner and in MLflow.

The tuner's own state lives in a folder keyed by the search's inputs, so rerunning an interrupted
search continues it. With ``KERASTUNER_TUNER_ID`` / ``KERASTUNER_ORACLE_IP`` /
``KERASTUNER_ORACLE_PORT`` set, Keras Tuner's chief/worker mode shares one search between
processes or machines (see the README).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import keras
import keras_tuner as kt
import mlflow

from gan_pipeline import checkpoints, data, evaluation, tracking
from gan_pipeline.callbacks import RunRecord, TunerObjective
from gan_pipeline.errors import UserError
from gan_pipeline.factory import gan_for
from gan_pipeline.fitting import Fit, steps_per_epoch


def declare(hp: kt.HyperParameters, space: dict, defaults: dict | None = None) -> None:
    """Declare ``space`` (validated ``tune.space``) in ``hp``. List values (e.g. filter counts)
    are offered as JSON strings, since Keras Tuner's choices must be scalars. ``defaults`` (the
    pipeline file's own values, by name) become the hyperparameters' defaults where they lie in
    the space: the search's first candidate (``file_first``)."""
    defaults = defaults or {}
    for name, spec in space.items():
        default = defaults.get(name)
        if "values" in spec:
            values = spec["values"]
            if isinstance(values[0], list):
                values = [json.dumps(v) for v in values]
                default = json.dumps(default) if default is not None else None
            hp.Choice(name, values, default=default if default in values else None)
            continue
        inside = (default is not None and not isinstance(default, (bool, str, list))
                  and spec["min"] <= default <= spec["max"])
        if isinstance(spec["min"], int):
            step = spec.get("step", None if spec["log"] else 1)  # log: a multiplier, > 1
            hp.Int(name, spec["min"], spec["max"], step=step,
                   sampling="log" if spec["log"] else "linear",
                   default=int(default) if inside and float(default).is_integer() else None)
        else:
            hp.Float(name, spec["min"], spec["max"], step=spec.get("step"),
                     sampling="log" if spec["log"] else "linear",
                     default=float(default) if inside and not spec.get("step") else None)


def file_values(cfg, space: dict) -> dict:
    """The pipeline file's own value of each setting ``space`` searches, by name."""
    settings = cfg.to_dict()
    values = {}
    for name in space:
        section, key = name.split(".", 1)
        values[name] = settings.get(section, {}).get(key)
    return values


def file_first(oracle) -> None:
    """Make ``oracle``'s first candidate the hyperparameters' defaults: the pipeline file's own
    settings (``declare``). Short trials favour settings that lose over a full run, so every
    search (random, Bayesian's initial points, Hyperband's first bracket) judges the file's
    settings beside its draws on the same horizon, and the trials' MLflow runs show how they
    compared; the train stage still takes the best trial's. Later candidates are drawn as
    Keras Tuner draws them; a resumed search (its tried values restored) draws as before."""
    draw = oracle._random_values

    def defaults_first():
        if oracle._tried_so_far:
            return draw()
        values = {hp.name: hp.default for hp in oracle.hyperparameters.space}
        return draw() if oracle._duplicate(values) else values

    oracle._random_values = defaults_first


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
    """Builds the GAN a trial's hyperparameters describe and trains it under MLflow, on the
    data source opened once for the whole search."""

    def __init__(self, cfg, source, evaluator, parent_run_id: str, folder: Path | None = None):
        super().__init__(name=cfg.name)
        self.cfg, self.source, self.evaluator = cfg, source, evaluator
        self.parent_run_id = parent_run_id
        self.folder = folder  # the Keras Tuner project: trial checkpoints go to its trials/
        self.space = cfg.tune.space
        self.objective = cfg.tune.objective or source.search_objective
        self.direction = evaluation.DIRECTIONS[self.objective]
        self.trial = None  # the trial being run; set by the tuner (see ``_GANTunerMixin``)

    def steps_per_epoch(self, cfg) -> int:
        """Batches in a trial epoch: ``tune.steps_per_epoch``, else ``train``'s, else one pass."""
        return steps_per_epoch(cfg, self.source, fixed=cfg.tune.steps_per_epoch)

    def continuable(self, cfg) -> bool:
        """Whether a trial of ``cfg`` is the first epochs of its train run (``continuable``)."""
        return continuable(cfg, self.source)

    def trial_config(self, hp: kt.HyperParameters):
        declare(hp, self.space, file_values(self.cfg, self.space))
        return self.cfg.replace(chosen(hp, self.space))

    def build(self, hp):
        cfg = self.trial_config(hp)
        keras.utils.set_random_seed(cfg.seed)
        # A learning-rate schedule spans the train run a trial begins (continuable trials), else
        # the longest trial (Hyperband's shorter rungs stop partway through its decay, as their
        # continuation would).
        epochs = cfg.epochs if self.continuable(cfg) else cfg.tune.epochs
        # (compiled with built optimizers: a trial Hyperband continues gets back its Adam
        # moments and step counts with the weights)
        return gan_for(cfg, self.source, total_batches=epochs * self.steps_per_epoch(cfg))

    def fit(self, hp, model, *args, callbacks=None, epochs=None, initial_epoch=0, **kwargs):
        cfg = self.trial_config(hp)
        epochs = epochs or cfg.tune.epochs
        steps = self.steps_per_epoch(cfg)
        trial_id = self.trial.trial_id if self.trial is not None else "?"
        record = RunRecord(completed=initial_epoch)
        fit = Fit(model, self.source, cfg, record, self.evaluator, every=1,
                  stop_on_collapse=True, title=f"{cfg.name} trial {trial_id}")
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
            history = fit.run(epochs, steps, initial_epoch=initial_epoch, verbose=0,
                              extra=[TunerObjective(self.objective), *(callbacks or [])])
            if record.reason is not None:
                mlflow.set_tags({"trial_outcome": record.reason, "failure": record.detail})
                mlflow.end_run(status="FAILED")
                print(f"trial {trial_id} stopped early: {record.reason} ({record.detail})",
                      flush=True)
                raise kt.errors.FailedTrialError(f"{record.reason}: {record.detail}")
            final = history.history[self.objective][-1]  # the generator the trial ends with
            mlflow.log_metric("objective", final)
            mlflow.set_tags({"trial_outcome": "completed", "objective": self.objective})
            print(f"trial {trial_id}: {self.objective} {final:.4g}", flush=True)
            if self.folder is not None and self.continuable(cfg):
                # What train continues when this trial is the best (tune.adopt = "best")
                checkpoints.save(trial_folder(self.folder, trial_id), model, {
                    "run_id": run.info.run_id, "epoch": epochs,
                    "train_seconds": record.train_seconds,
                    "config": tracking.redacted_config(cfg.to_dict())})
        # Keras Tuner scores a History by its best epoch; the trial's score is its last
        return {self.objective: final}


def continuable(cfg, source) -> bool:
    """Whether the trials of ``cfg``'s search are the first epochs of its train run: epochs of
    the same batches (``tune.steps_per_epoch`` 0 or train's), no more of them than the run has.
    Their checkpoints are then what the train stage continues (``tune.adopt = "best"``)."""
    return (steps_per_epoch(cfg, source, fixed=cfg.tune.steps_per_epoch)
            == steps_per_epoch(cfg, source) and cfg.tune.epochs <= cfg.epochs)


def trial_folder(project: Path, trial_id: str) -> Path:
    """The checkpoint folder of a trial of the Keras Tuner project ``project``."""
    return Path(project) / "trials" / str(trial_id)


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


def make_tuner(cfg, hypermodel: GANHyperModel, directory: Path, project: str):
    """The Keras Tuner ``tune.tuner`` names, optimising the quality figure, its first candidate
    the file's own settings; it reloads its state from ``directory/project`` when that exists
    (a rerun continues the search)."""
    t = cfg.tune
    objective = kt.Objective(hypermodel.objective, hypermodel.direction)
    common = dict(hypermodel=hypermodel, objective=objective,
                  seed=cfg.seed, directory=str(directory), project_name=project,
                  overwrite=False, max_consecutive_failed_trials=t.max_failed_trials)
    if t.tuner == "hyperband":
        tuner = Hyperband(max_epochs=t.epochs, factor=t.hyperband_factor, **common)
    elif t.tuner == "bayesian":
        tuner = BayesianOptimization(max_trials=t.max_trials, **common)
    else:
        tuner = RandomSearch(max_trials=t.max_trials, **common)
    if isinstance(tuner.oracle, kt.Oracle):  # not a distributed search's worker (a client)
        file_first(tuner.oracle)
    return tuner


def search(cfg, directory: Path, project: str, parent_run_id: str, worker: bool = False,
           source=None) -> dict | None:
    """Run (or continue) the search ``cfg.tune`` declares on ``source`` (opened here when not
    given); trials nest under ``parent_run_id``. Returns ``{"values": best settings,
    "objective": ..., "trials": [...]}``, or None for a ``worker`` of a distributed search (the
    chief holds the results)."""
    if not cfg.tune.space:
        raise UserError("the tune stage needs a search space: declare [tune.space.train] (or "
                        ".model) ranges in the pipeline file, or drop 'tune' from stages")
    source = source if source is not None else data.open_source(cfg)
    evaluator = source.evaluator(cfg.tune.n_samples, cfg.seed, cfg.eval.collapse_max_share)
    hypermodel = GANHyperModel(cfg, source, evaluator, parent_run_id,
                               folder=Path(directory) / project)
    # One search writes its project at a time (the workers of a distributed search are part
    # of the chief's, which holds it).
    holding = (contextlib.nullcontext() if worker
               else checkpoints.exclusive(Path(directory) / project, "search"))
    with holding:
        tuner = make_tuner(cfg, hypermodel, directory, project)
        try:
            tuner.search()
        except RuntimeError as exc:  # Keras Tuner's "Number of consecutive failures exceeded"
            if "consecutive failures" not in str(exc):
                raise
            print(f"search stopped: {cfg.tune.max_failed_trials} trials in a row failed "
                  "(tune.max_failed_trials)", flush=True)
        return None if worker else summary(tuner, cfg, hypermodel.objective,
                                           Path(directory) / project)


def summary(tuner, cfg, objective: str, project: Path | None = None) -> dict:
    """What the search found: the best trial's settings, every trial's outcome, and
    (``continue``) the best trial's checkpoint when train can continue it."""
    trials = []
    for trial in tuner.oracle.trials.values():
        trials.append({"trial_id": trial.trial_id, "status": str(trial.status),
                       "objective": trial.score, "values": dict(trial.hyperparameters.values)})
    best = [t for t in tuner.oracle.get_best_trials(len(trials)) if t.score is not None]
    if not best:
        raise UserError(f"the search finished without one successful trial ({len(trials)} "
                        "failed): widen or move the search space, or lower the learning rates")
    # The file's own settings (the first candidate) judged on the same horizon, when a trial
    # ran them: best first, so the first match is their best reading (Hyperband: longest rung).
    own = file_values(cfg, cfg.tune.space)
    file_trial = next((t for t in best if _same(chosen(t.hyperparameters, cfg.tune.space), own)),
                      None)
    return {"objective_name": objective, "objective": float(best[0].score),
            "best_trial": best[0].trial_id, "values": chosen(best[0].hyperparameters,
                                                             cfg.tune.space),
            "file_values": own,
            "file_objective": None if file_trial is None else float(file_trial.score),
            "file_trial": None if file_trial is None else file_trial.trial_id,
            "continue": _continuation(project, best[0].trial_id), "trials": trials}


def _continuation(project: Path | None, trial_id: str) -> dict | None:
    """The checkpoint the best trial left (None: it left none, e.g. its trials were not the
    train run's first epochs, or a worker of a distributed search on another machine ran it)."""
    if project is None:
        return None
    folder = trial_folder(project, trial_id)
    state = checkpoints.read_state(folder)
    if state is None:
        return None
    return {"trial_id": trial_id, "folder": str(folder.resolve()), "epochs": state["epoch"],
            "trial_run_id": state["run_id"]}


def _same(values: dict, other: dict) -> bool:
    """Whether two settings dicts agree (numbers to 1e-9 relative)."""
    def close(a, b):
        if isinstance(a, float) or isinstance(b, float):
            return isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
                abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1e-300)
        return a == b
    return values.keys() == other.keys() and all(close(values[k], other[k]) for k in values)
