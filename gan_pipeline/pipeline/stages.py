"""The five stages of ``gan-pipeline run``: what each depends on (its key) and what it does.

Each stage body gets the pipeline (its MLflow client, parent run and opened data source), the
config it runs with, its key and the run ids of the stages it reads, and returns
``(run_id, status, figures)``. Stages hand results on through runs, never loose files: tune's
best settings are its run's ``best_hyperparameters.json``, train reads them, evaluate loads the
train run's generator and logs into that run, register registers the train run's logged model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mlflow

from gan_pipeline import checkpoints, evaluation, sampling, tracking, tuning
from gan_pipeline.errors import UserError
from gan_pipeline.run import train


def _data_identity(pipeline) -> dict:
    """The data settings, and what identifies the data's contents (a folder's files)."""
    return {"data": pipeline.cfg.data.to_dict(), "contents": pipeline.source.fingerprint()}


def tuner_folder(cfg) -> Path:
    return Path(cfg.tracking.checkpoint_dir) / f"{cfg.name}-tuning"


# -- the settings each stage depends on ---------------------------------------------------------

def prepare_inputs(pipeline, cfg) -> dict:
    return {**_data_identity(pipeline), "seed": cfg.seed}


def tune_inputs(pipeline, cfg) -> dict:
    c = cfg.to_dict()
    part = {k: c[k] for k in ("seed", "batch_size", "deterministic", "model", "train", "tune")}
    return {**part, **_data_identity(pipeline), "grid_size": cfg.tracking.grid_size,
            "collapse_max_share": cfg.eval.collapse_max_share}


def train_inputs(pipeline, cfg) -> dict:
    part = cfg.training_part()
    tracked = {k: v for k, v in part["tracking"].items()
               if k not in ("uri", "experiment", "run_name", "checkpoint_dir")}
    evaluated = {k: v for k, v in part["eval"].items() if k != "final_n_samples"}
    return {**part, **_data_identity(pipeline), "tracking": tracked, "eval": evaluated}


def evaluate_inputs(pipeline, cfg) -> dict:
    return {**_data_identity(pipeline), "n": cfg.eval.final_n_samples, "seed": cfg.seed}


def register_inputs(pipeline, cfg) -> dict:
    return {"register": cfg.register.to_dict(), "name": cfg.name, "profile": cfg.profile}


# -- the stages --------------------------------------------------------------------------------

def run_prepare(pipeline, cfg, key: str, upstream: dict):
    source = pipeline.source
    with pipeline.start("prepare", key) as run:
        profile, dataset = source.profile()
        tags = {"version": str(profile.get("version", "")),
                "splits": json.dumps(profile.get("splits", {}))}
        if "skipped" in profile:  # a folder: files that could not be decoded
            tags["skipped_files"] = str(profile["skipped"])
        mlflow.log_input(dataset, context="training", tags=tags)
        mlflow.log_params({f"data.{k}": v for k, v in cfg.data.items()})
        mlflow.log_dict(profile, "dataset.json")
        figures = {"examples": profile["examples"]}
        if profile.get("skipped"):
            figures["skipped_files"] = profile["skipped"]
        # Builds (or loads) what the later stages judge with, e.g. the image classifier.
        evaluator = source.evaluator(cfg.tune.n_samples, cfg.seed, cfg.eval.collapse_max_share)
        classifier = getattr(evaluator, "classifier", None)
        if classifier is not None:
            mlflow.set_tag("evaluation_classifier_run", tracking.log_classifier(classifier))
            mlflow.log_metric("classifier_test_accuracy", classifier.info["test_accuracy"])
        figures.update(evaluator.prepare())
        print(f"[prepare] {json.dumps(profile)}", flush=True)
    return run.info.run_id, "ran", figures


def run_tune(pipeline, cfg, key: str, upstream: dict):
    directory = tuner_folder(cfg)
    # An unfinished search with the same inputs continues (unless --force); its Keras Tuner
    # project is named by the tag of its run.
    old = None if pipeline.forcing else pipeline.find(
        "tune", key, statuses=("RUNNING", "KILLED", "FAILED"))
    resumed = old is not None
    context = (mlflow.start_run(run_id=old.info.run_id) if resumed else
               pipeline.start("tune", key))
    objective = cfg.tune.objective or pipeline.source.search_objective
    with context as run:
        project = run.data.tags.get("tuner_project") or f"{key[:12]}-{run.info.run_id[:8]}"
        if not resumed:
            mlflow.set_tag("tuner_project", project)
            mlflow.log_params({"tuner": cfg.tune.tuner, "max_trials": cfg.tune.max_trials,
                               "epochs_per_trial": cfg.tune.epochs, "objective": objective,
                               "adopt": cfg.tune.adopt,
                               "prepare_run_id": upstream.get("prepare")})
            mlflow.log_dict(cfg.tune.space, "search_space.json")
            if objective in evaluation.FORMULAS:
                mlflow.set_tag("objective_formula", evaluation.FORMULAS[objective])
        result = tuning.search(cfg, directory, project, run.info.run_id, source=pipeline.source)
        mlflow.log_dict(result, "best_hyperparameters.json")
        mlflow.log_params({f"best.{k}": v for k, v in result["values"].items()})
        outcomes = [t["status"] for t in result["trials"]]
        mlflow.log_metrics({"best_objective": result["objective"],
                            "trials_completed": outcomes.count("COMPLETED"),
                            "trials_failed": len(outcomes) - outcomes.count("COMPLETED")})
        if result["file_objective"] is not None:
            mlflow.log_metric("file_objective", result["file_objective"])
    name = result["objective_name"]
    figures = {"best_" + name: result["objective"], "trials": len(result["trials"])}
    if result["file_objective"] is not None:
        figures["file_" + name] = result["file_objective"]
    print(f"[tune] {_adoption(cfg, result)}", flush=True)
    return run.info.run_id, "resumed" if resumed else "ran", figures


def _adoption(cfg, result: dict) -> str:
    """What the train stage takes from the search, and the search's figures beside it."""
    name, best = result["objective_name"], result["objective"]
    own = result["file_objective"]
    against = (f"; the file's own settings {own:.4g} (trial {result['file_trial']})"
               if own is not None else "; the file's own settings were not among the trials")
    found = f"best {name} {best:.4g} (trial {result['best_trial']}: {result['values']}){against}"
    if cfg.tune.adopt == "file":
        return (f"{found}. train keeps the file's settings (tune.adopt = 'file': the file "
                "says why; its trials are in this run for comparison)")
    go_on = result.get("continue")
    if go_on:
        left = cfg.epochs - go_on["epochs"]
        return (f"{found}. train continues trial {go_on['trial_id']} after its {go_on['epochs']} "
                f"epoch(s), its weights and optimizer state, for the {left} left of {cfg.epochs} "
                "(tune.adopt = 'best')")
    return (f"{found}. train takes the best trial's settings and trains them from the start "
            "(tune.adopt = 'best'; its trials were not the train run's first epochs)")


def run_train(pipeline, cfg, key: str, upstream: dict):
    # Its own checkpoint folder per key: `gan-pipeline train`, other profiles and other
    # settings never overwrite it, and what is in it always fits these settings.
    root = str(Path(cfg.tracking.checkpoint_dir) / f"{cfg.name}-pipeline" / key[:16])
    changes = {"tracking.checkpoint_dir": root}
    if not cfg.tracking.run_name:  # named after its stage, like the other stages
        changes["tracking.run_name"] = "train"
    cfg = cfg.replace(changes)
    directory = checkpoints.folder(root, cfg.name)
    resume = False
    try:
        state = checkpoints.read_state(directory)
    except UserError:
        state = None
    if state:  # an unfinished run continues: training, or only its end-of-run logging
        try:
            resume = pipeline.client.get_run(state["run_id"]).info.status != "FINISHED"
        except mlflow.exceptions.MlflowException:
            resume = False
    tags = {**pipeline.tags("train", key),
            **{f"{s}_run_id": rid for s, rid in upstream.items() if rid}}
    # tune.adopt = "best" (train reads the tune run): the best trial, when it was this run's
    # first epochs, is continued rather than trained again
    start_from = None
    if upstream.get("tune"):
        best = mlflow.artifacts.load_dict(f"runs:/{upstream['tune']}/best_hyperparameters.json")
        start_from = best.get("continue")
    result = train(cfg, verbose=pipeline.verbose, resume=resume, parent_run_id=pipeline.parent_id,
                   tags=tags, resume_command=pipeline.command, source=pipeline.source,
                   start_from=start_from)
    name = f"eval/{pipeline.source.objective}"
    last = {name: result.history[name][-1]} if result.history.get(name) else {}
    return result.run_id, "resumed" if resume else "ran", last


HEADLINE_EXTRAS = ("precision", "recall", "class_min_share", "class_max_share", "abs_mean_error",
                   "abs_std_error", "label_accuracy", "label_accuracy_worst", "intra_fd",
                   "intra_recall", "intra_recall_worst", "fd_over_recall")


def run_evaluate(pipeline, cfg, key: str, upstream: dict):
    train_id = upstream["train"]
    with pipeline.start("evaluate", key) as run:
        generator = sampling.load_generator(train_id)
        judge = pipeline.source.evaluator(cfg.eval.final_n_samples, 0,
                                          cfg.eval.collapse_max_share)
        result = evaluation.report(judge, generator, train_id)
        mlflow.log_param("train_run_id", train_id)
        # The train run carries the figures too. Logged while this stage's run is open: if it
        # is cut short, this run (not the FINISHED train run) fails, and the next `run` redoes it.
        for run_id in (train_id, run.info.run_id):
            tracking.log_evaluation(run_id, result)
    figures = {judge.objective: result["figures"][judge.objective]}
    figures.update({k: result["figures"][k] for k in HEADLINE_EXTRAS if k in result["figures"]})
    return run.info.run_id, "ran", figures


def run_register(pipeline, cfg, key: str, upstream: dict):
    train_run = pipeline.client.get_run(upstream["train"])
    model_uri = train_run.data.tags.get("generator_model_uri")
    if not model_uri:
        raise UserError("the register stage needs the generator logged as an MLflow model: "
                        "set tracking.log_model = true (or drop 'register' from stages)")
    objective = pipeline.source.objective
    value = pipeline.client.get_run(upstream["evaluate"]).data.metrics[f"quality/{objective}"]
    name = cfg.register.model_name or cfg.name
    # Quick runs compete among themselves: they are judged on fewer samples, and the Frechet
    # distance depends on the sample count.
    alias = cfg.register.alias
    if cfg.profile != "full":
        alias = f"{alias}-{cfg.profile}"
    with pipeline.start("register", key) as run:
        decision = tracking.register_generator(
            model_uri, name, alias, objective, value,
            tags={"train_run_id": upstream["train"], "pipeline": cfg.name,
                  "profile": cfg.profile, "n": str(cfg.eval.final_n_samples)})
        mlflow.log_params({"model_name": name, "version": decision["version"],
                           "alias": decision["alias"], "model_uri": model_uri})
        mlflow.set_tag("champion", str(decision["champion"]).lower())
        mlflow.log_dict(decision, "registration.json")
    verdict = (f"now holds alias {decision['alias']!r}" if decision["champion"] else
               f"alias {decision['alias']!r} stays with version "
               f"{decision['previous']['version']}")
    print(f"[register] {name} version {decision['version']} ({objective} {value:.4g}) {verdict}",
          flush=True)
    return run.info.run_id, "ran", {"version": decision["version"],
                                    "champion": decision["champion"]}


@dataclass(frozen=True)
class Stage:
    inputs: Callable  # (pipeline, cfg) -> the settings its key hashes
    body: Callable  # (pipeline, cfg, key, upstream) -> (run_id, status, figures)
    own_process: bool = True  # runs in a child process (gan_pipeline.pipeline.child)


STAGE_TABLE = {
    "prepare": Stage(prepare_inputs, run_prepare),
    "tune": Stage(tune_inputs, run_tune),
    "train": Stage(train_inputs, run_train),
    "evaluate": Stage(evaluate_inputs, run_evaluate),
    "register": Stage(register_inputs, run_register, own_process=False),  # registry calls only
}
