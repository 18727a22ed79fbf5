"""Staged pipelines: ``gan-pipeline run FILE`` runs prepare -> tune -> train -> evaluate -> register.

MLflow layout (experiment ``tracking.experiment``, default the pipeline name): one parent run per
execution, a child run per stage (tag ``stage``), and the tune stage's trials nested below it.
Stages hand results on through runs, never loose files: tune's best settings are its run's
``best_hyperparameters.json``, train reads them, evaluate loads the train run's generator and
logs into that run, register registers the train run's logged model.

Caching: a stage's key hashes its inputs (its part of the config, the run ids of the stages it
reads, the package version). When a FINISHED stage run with that key exists in the experiment,
it is reused instead of recomputed, and the parent run records which (``stage.<name>`` tags and
``stages.json``). ``--force STAGE`` recomputes that stage and every stage after it; ``--only
STAGE`` runs just that one, reusing the finished runs of the stages it reads. A train stage that
was interrupted resumes from its checkpoint; an interrupted search continues where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mlflow

from gan_pipeline import __version__
from gan_pipeline import config as config_mod
from gan_pipeline import data as data_mod
from gan_pipeline import evaluation, tracking
from gan_pipeline.errors import UserError

STAGES = config_mod.STAGES
READS = {"prepare": (), "tune": ("prepare",), "train": ("prepare", "tune"),
         "evaluate": ("train",), "register": ("train", "evaluate")}


def stage_inputs(stage: str, cfg: dict) -> dict:
    """The settings a stage depends on (with its upstream run ids, this makes its key)."""
    if stage == "prepare":
        return {"data": cfg["data"], "seed": cfg["seed"]}
    if stage == "tune":
        part = {k: cfg[k] for k in ("seed", "batch_size", "deterministic", "data", "model",
                                     "train", "tune")}
        return {**part, "grid_size": cfg["tracking"]["grid_size"],
                "collapse_max_share": cfg["eval"]["collapse_max_share"]}
    if stage == "train":
        part = config_mod.training_part(cfg)
        tracked = {k: v for k, v in part["tracking"].items()
                   if k not in ("uri", "experiment", "run_name", "checkpoint_dir")}
        evaluated = {k: v for k, v in part["eval"].items() if k != "final_n_samples"}
        return {**part, "tracking": tracked, "eval": evaluated}
    if stage == "evaluate":
        return {"data": cfg["data"], "n": cfg["eval"]["final_n_samples"], "seed": cfg["seed"]}
    return {"register": cfg["register"], "name": cfg["name"], "profile": cfg["profile"]}


def stage_key(stage: str, cfg: dict, upstream: dict[str, str | None]) -> str:
    blob = json.dumps({"stage": stage, "inputs": stage_inputs(stage, cfg), "upstream": upstream,
                       "version": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class StageResult:
    stage: str
    run_id: str
    status: str  # "ran", "reused" or "resumed"
    seconds: float
    key: str
    figures: dict = field(default_factory=dict)


class Pipeline:
    """One execution of a pipeline file: ``Pipeline(cfg).run(only=..., force=...)``."""

    def __init__(self, cfg: dict, verbose: int | str = 1, command: str = ""):
        self.cfg, self.verbose = cfg, verbose
        self.command = command or "gan-pipeline run <pipeline file>"
        self.client: mlflow.MlflowClient | None = None
        self.experiment_id = ""
        self.parent_id = ""
        self.results: dict[str, StageResult] = {}
        self.forcing = False  # whether the stage being run was forced (--force)
        self._tuned: dict | None = None  # the config with the search's best settings

    # -- lookups -------------------------------------------------------------------------------

    def _find(self, stage: str, key: str, statuses=("FINISHED",)):
        """The newest run of ``stage`` with this key and one of ``statuses``, else None."""
        for status in statuses:
            runs = self.client.search_runs(
                [self.experiment_id], f"tags.stage = '{stage}' and tags.stage_key = '{key}' "
                f"and attributes.status = '{status}'",
                order_by=["attributes.start_time DESC"], max_results=1)
            if runs:
                return runs[0]
        return None

    def _tags(self, stage: str, key: str) -> dict:
        return {"stage": stage, "stage_key": key, "pipeline": self.cfg["name"],
                "profile": self.cfg["profile"], "gan_pipeline_version": __version__}

    # -- the run -------------------------------------------------------------------------------

    def run(self, only: str | None = None, force: str | None = None) -> dict[str, StageResult]:
        cfg = self.cfg
        for flag, value in (("--only", only), ("--force", force)):
            if value is not None and value not in cfg["stages"]:
                raise UserError(f"{flag} {value!r} is not one of this pipeline's stages: "
                                f"{', '.join(cfg['stages'])}")
        if only and force and STAGES.index(force) < STAGES.index(only):
            raise UserError(f"--force {force} with --only {only}: {force!r} would not run; use "
                            f"--only {force} --force {force} first, or drop --only")
        if "register" in (only or cfg["stages"]) and not cfg["tracking"]["log_model"]:
            raise UserError("the register stage needs tracking.log_model = true (it registers "
                            "the logged generator); set it, or drop 'register' from stages")
        forced = set(STAGES[STAGES.index(force):]) if force else set()
        selected = [only] if only else list(cfg["stages"])
        if "tune" in selected and not cfg["tune"]["space"]:
            raise UserError("the tune stage needs a search space: declare ranges under "
                            "[tune.space.train] or [tune.space.model] in the pipeline file, or "
                            "drop 'tune' from stages (--set \"stages=['prepare', 'train', "
                            "'evaluate', 'register']\")")
        uri = tracking.tracking_uri(cfg["tracking"]["uri"])
        tracking.check_reachable(uri)
        tracking.configure(cfg["tracking"]["uri"])
        self.client = mlflow.MlflowClient()
        experiment = cfg["tracking"]["experiment"] or cfg["name"]
        self.experiment_id = mlflow.set_experiment(experiment).experiment_id
        worker = _tuner_worker()
        if worker:
            return self._run_tune_worker(worker)

        parent = self.client.create_run(
            self.experiment_id, run_name=f"{cfg['name']} pipeline ({cfg['profile']})",
            tags={"pipeline": cfg["name"], "profile": cfg["profile"], "kind": "pipeline",
                  "stages": ",".join(selected), "gan_pipeline_version": __version__})
        self.parent_id = parent.info.run_id
        print(f"Pipeline {cfg['name']!r} (profile {cfg['profile']}): stages "
              f"{' -> '.join(selected)}; MLflow parent run {self.parent_id} "
              f"(experiment {experiment!r}, {mlflow.get_tracking_uri()})", flush=True)
        self.client.log_dict(self.parent_id, cfg, "pipeline_config.json")
        started = time.perf_counter()
        status = "FAILED"
        try:
            last = max(STAGES.index(s) for s in selected)
            for stage in STAGES[:last + 1]:  # stages after the last selected one are not needed
                if stage not in cfg["stages"]:
                    continue
                self._stage(stage, run_it=stage in selected, force=stage in forced)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except Exception as exc:
            from gan_pipeline.train import TrainingStopped

            if isinstance(exc, TrainingStopped) and exc.reason == "interrupted":
                status = "KILLED"
            self.client.set_tag(self.parent_id, "failure", str(exc)[:5000])
            raise
        finally:
            try:
                self._record(time.perf_counter() - started)
            finally:
                self.client.set_terminated(self.parent_id, status)
            if status != "FINISHED":
                print(f"Pipeline stopped ({status}); run the same command again to continue: "
                      "finished stages are reused, training resumes from its checkpoint and "
                      "the search from its last trial.", flush=True)
        self._summary(time.perf_counter() - started)
        return self.results

    def _stage(self, stage: str, run_it: bool, force: bool) -> None:
        upstream = {s: self.results[s].run_id for s in READS[stage] if s in self.results}
        cfg = self._stage_config(stage)
        key = stage_key(stage, cfg, upstream)
        started = time.perf_counter()
        cached = None if force else self._find(stage, key)
        if cached is not None:
            self.results[stage] = StageResult(stage, cached.info.run_id, "reused",
                                              time.perf_counter() - started, key)
            print(f"[{stage}] reused finished run {cached.info.run_id} (same inputs)", flush=True)
            return
        if not run_it:
            raise UserError(f"stage {stage!r} has no finished run with these settings to reuse; "
                            f"run it first: {self.command} --only {stage} (or without --only)")
        print(f"[{stage}] running", flush=True)
        self.forcing = force
        run_id, status, figures = getattr(self, f"_run_{stage}")(cfg, key, upstream)
        self.results[stage] = StageResult(stage, run_id, status, time.perf_counter() - started,
                                          key, figures)
        print(f"[{stage}] {status} in {self.results[stage].seconds:.1f} s (run {run_id})",
              flush=True)

    def _stage_config(self, stage: str) -> dict:
        """The config a stage runs with: from train on, the search's best settings applied."""
        tune = self.results.get("tune")
        if stage in ("prepare", "tune") or tune is None:
            return self.cfg
        if self._tuned is None:  # read once: train, evaluate and register all use it
            best = mlflow.artifacts.load_dict(f"runs:/{tune.run_id}/best_hyperparameters.json")
            self._tuned = config_mod.with_values(self.cfg, best["values"])
        return self._tuned

    def _record(self, seconds: float) -> None:
        table = {s: {"run_id": r.run_id, "status": r.status, "seconds": round(r.seconds, 1),
                     "key": r.key} for s, r in self.results.items()}
        for stage, row in table.items():
            self.client.set_tag(self.parent_id, f"stage.{stage}", f"{row['status']} {row['run_id']}")
            self.client.log_metric(self.parent_id, f"seconds/{stage}", row["seconds"])
        self.client.log_metric(self.parent_id, "seconds/total", seconds)
        self.client.log_dict(self.parent_id, table, "stages.json")

    def _summary(self, seconds: float) -> None:
        print(f"\nPipeline {self.cfg['name']!r} finished in {seconds:.1f} s:", flush=True)
        for r in self.results.values():
            extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in r.figures.items())
            print(f"  {r.stage:<9} {r.status:<8} {r.seconds:7.1f} s  run {r.run_id}  {extra}",
                  flush=True)
        parent = self.client.get_run(self.parent_id)
        print(f"To review it, {tracking.run_link(parent)}", flush=True)

    def _start(self, stage: str, key: str):
        """A new child run for ``stage`` under the parent run."""
        return mlflow.start_run(run_name=stage, parent_run_id=self.parent_id,
                                tags=self._tags(stage, key))

    # -- stages --------------------------------------------------------------------------------

    def _run_prepare(self, cfg: dict, key: str, upstream: dict):
        with self._start("prepare", key) as run:
            profile, dataset = _profile_data(cfg)
            mlflow.log_input(dataset, context="training",
                             tags={"version": str(profile.get("version", "")),
                                   "splits": json.dumps(profile.get("splits", {}))})
            mlflow.log_params({f"data.{k}": v for k, v in cfg["data"].items()})
            mlflow.log_dict(profile, "dataset.json")
            figures = {"examples": profile["examples"]}
            if not profile["one_d"]:  # the tune and evaluate stages judge in its features
                classifier = evaluation.feature_classifier(
                    cfg["data"]["dataset"], cfg["data"]["data_dir"] or None,
                    cfg["data"]["download"])
                classifier_run = tracking.log_classifier(classifier)
                mlflow.set_tag("evaluation_classifier_run", classifier_run)
                mlflow.log_metric("classifier_test_accuracy", classifier.info["test_accuracy"])
                figures["classifier_accuracy"] = classifier.info["test_accuracy"]
            print(f"[prepare] {json.dumps({k: v for k, v in profile.items() if k != 'one_d'})}",
                  flush=True)
        return run.info.run_id, "ran", figures

    def _run_tune(self, cfg: dict, key: str, upstream: dict):
        from gan_pipeline import tuning

        directory = _tuner_folder(cfg)
        # An unfinished search with the same inputs continues (unless --force); its Keras Tuner
        # project is named by the tag of its run.
        old = None if self.forcing else self._find(
            "tune", key, statuses=("RUNNING", "KILLED", "FAILED"))
        resumed = old is not None
        context = (mlflow.start_run(run_id=old.info.run_id) if resumed else
                   mlflow.start_run(run_name="tune", parent_run_id=self.parent_id,
                                    tags=self._tags("tune", key)))
        with context as run:
            project = run.data.tags.get("tuner_project") or f"{key[:12]}-{run.info.run_id[:8]}"
            if not resumed:
                mlflow.set_tag("tuner_project", project)
                mlflow.log_params({"tuner": cfg["tune"]["tuner"],
                                   "max_trials": cfg["tune"]["max_trials"],
                                   "epochs_per_trial": cfg["tune"]["epochs"],
                                   "objective": evaluation.objective_name(cfg),
                                   "prepare_run_id": upstream.get("prepare")})
                mlflow.log_dict(cfg["tune"]["space"], "search_space.json")
            result = tuning.search(cfg, directory, project, run.info.run_id)
            mlflow.log_dict(result, "best_hyperparameters.json")
            mlflow.log_params({f"best.{k}": v for k, v in result["values"].items()})
            outcomes = [t["status"] for t in result["trials"]]
            mlflow.log_metrics({"best_objective": result["objective"],
                                "trials_completed": outcomes.count("COMPLETED"),
                                "trials_failed": len(outcomes) - outcomes.count("COMPLETED")})
        figures = {"best_" + result["objective_name"]: result["objective"],
                   "trials": len(result["trials"])}
        return run.info.run_id, "resumed" if resumed else "ran", figures

    def _run_train(self, cfg: dict, key: str, upstream: dict):
        from gan_pipeline import checkpoints
        from gan_pipeline.train import train

        # Its own checkpoint folder per key: `gan-pipeline train`, other profiles and other
        # settings never overwrite it, and what is in it always fits these settings.
        root = str(Path(cfg["tracking"]["checkpoint_dir"]) / f"{cfg['name']}-pipeline" / key[:16])
        cfg = {**cfg, "tracking": {**cfg["tracking"], "checkpoint_dir": root}}
        directory = checkpoints.folder(root, cfg["name"])
        resume = False
        try:
            state = checkpoints.read_state(directory)
        except UserError:
            state = None
        if state and state["epoch"] < cfg["epochs"]:
            try:
                resume = self.client.get_run(state["run_id"]).info.status != "FINISHED"
            except mlflow.exceptions.MlflowException:
                resume = False
        tags = {**self._tags("train", key),
                **{f"{s}_run_id": rid for s, rid in upstream.items() if rid}}
        if not cfg["tracking"]["run_name"]:  # named after its stage, like the other stages
            cfg = {**cfg, "tracking": {**cfg["tracking"], "run_name": "train"}}
        verbose = self.verbose if sys.stdout.isatty() else 2  # logs: a line per epoch, no bar
        result = train(cfg, verbose=verbose, resume=resume, parent_run_id=self.parent_id,
                       tags=tags, resume_command=self.command)
        name = f"eval/{evaluation.objective_name(cfg)}"
        last = {name: result.history[name][-1]} if result.history.get(name) else {}
        return result.run_id, "resumed" if resume else "ran", last

    def _run_evaluate(self, cfg: dict, key: str, upstream: dict):
        from gan_pipeline import sampling

        train_id = upstream["train"]
        with self._start("evaluate", key) as run:
            generator = sampling.load_generator(train_id)
            judge = evaluation.GeneratorEvaluator(cfg, n=cfg["eval"]["final_n_samples"], seed=0)
            result = judge.report(generator, train_id)
            mlflow.log_param("train_run_id", train_id)
        for run_id in (run.info.run_id, train_id):  # the train run carries its figures too
            tracking.log_evaluation(run_id, result)
        name = evaluation.objective_name(cfg)
        figures = {name: result["figures"][name]}
        for extra in ("precision", "recall", "class_min_share", "class_max_share",
                      "abs_mean_error", "abs_std_error"):
            if extra in result["figures"]:
                figures[extra] = result["figures"][extra]
        return run.info.run_id, "ran", figures

    def _run_register(self, cfg: dict, key: str, upstream: dict):
        train_run = self.client.get_run(upstream["train"])
        model_uri = train_run.data.tags.get("generator_model_uri")
        if not model_uri:
            raise UserError("the register stage needs the generator logged as an MLflow model: "
                            "set tracking.log_model = true (or drop 'register' from stages)")
        objective = evaluation.objective_name(cfg)
        evaluated = self.client.get_run(upstream["evaluate"]).data.metrics
        value = evaluated[f"quality/{objective}"]
        name = cfg["register"]["model_name"] or cfg["name"]
        # Quick runs compete among themselves: they are judged on fewer samples, and the
        # Frechet distance depends on the sample count.
        alias = cfg["register"]["alias"]
        if cfg["profile"] != "full":
            alias = f"{alias}-{cfg['profile']}"
        with self._start("register", key) as run:
            decision = tracking.register_generator(
                model_uri, name, alias, objective, value,
                tags={"train_run_id": upstream["train"], "pipeline": cfg["name"],
                      "profile": cfg["profile"], "n": str(cfg["eval"]["final_n_samples"])})
            mlflow.log_params({"model_name": name, "version": decision["version"],
                               "alias": decision["alias"], "model_uri": model_uri})
            mlflow.set_tag("champion", str(decision["champion"]).lower())
            mlflow.log_dict(decision, "registration.json")
        verdict = (f"now holds alias {decision['alias']!r}" if decision["champion"] else
                   f"alias {decision['alias']!r} stays with version "
                   f"{decision['previous']['version']}")
        print(f"[register] {name} version {decision['version']} ({objective} {value:.4g}) "
              f"{verdict}", flush=True)
        return run.info.run_id, "ran", {"version": decision["version"],
                                        "champion": decision["champion"]}

    # -- distributed tuning: a worker process -------------------------------------------------

    def _run_tune_worker(self, tuner_id: str) -> dict:
        """A Keras Tuner worker: run trials of the chief's search, nested in its tune run."""
        from gan_pipeline import tuning

        prepare = None
        if "prepare" in self.cfg["stages"]:
            prepare = self._find("prepare", stage_key("prepare", self.cfg, {}))
            if prepare is None:
                raise UserError("tuner worker: the chief has not finished the prepare stage "
                                "in this MLflow store; start the chief first")
        upstream = {"prepare": prepare.info.run_id} if prepare else {}
        key = stage_key("tune", self.cfg, upstream)
        wait = float(os.environ.get("GAN_PIPELINE_WORKER_WAIT", "600"))
        deadline = time.monotonic() + wait
        while (tune := self._find("tune", key, statuses=("RUNNING",))) is None \
                or "tuner_project" not in tune.data.tags:
            if time.monotonic() > deadline:
                raise UserError(f"tuner worker {tuner_id}: no running tune stage with these "
                                f"settings appeared in {wait:.0f} s; start the chief "
                                "(KERASTUNER_TUNER_ID=chief) with the same pipeline file")
            time.sleep(2)
        print(f"Tuner worker {tuner_id}: trials nest under tune run {tune.info.run_id}",
              flush=True)
        tuning.search(self.cfg, _tuner_folder(self.cfg), tune.data.tags["tuner_project"],
                      tune.info.run_id, worker=True)
        print(f"Tuner worker {tuner_id}: the chief reports no more trials; done", flush=True)
        return {}


def _tuner_worker() -> str:
    """This process's Keras Tuner id when it is a worker of a distributed search, else ''."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    if tuner_id and tuner_id != "chief" and os.environ.get("KERASTUNER_ORACLE_IP"):
        return tuner_id
    return ""


def _tuner_folder(cfg: dict) -> Path:
    return Path(cfg["tracking"]["checkpoint_dir"]) / f"{cfg['name']}-tuning"


def _profile_data(cfg: dict):
    """Load and check the training data; its profile and an MLflow dataset to log."""
    import numpy as np

    d = cfg["data"]
    if d["dataset"] == data_mod.GAUSSIAN_1D:
        rng = np.random.default_rng(cfg["seed"])
        values = rng.normal(d["mean"], d["std"], (d["num_examples"], d["n_points"]))
        profile = {"name": "gaussian_1d", "one_d": True, "examples": int(d["num_examples"]),
                   "shape": [d["n_points"]], "mean": float(values.mean()),
                   "std": float(values.std()), "min": float(values.min()),
                   "max": float(values.max())}
        dataset = mlflow.data.from_numpy(values.astype(np.float32),
                                         name=f"gaussian_1d(mean={d['mean']}, std={d['std']})")
        return profile, dataset
    builder = data_mod.image_builder(d["dataset"], d["data_dir"] or None, d["download"])
    images = data_mod.split_images(builder, d["split"])  # normalised to [-1, 1]
    shape = list(images.shape[1:])
    expected = list(builder.info.features["image"].shape)
    if shape != expected or len(images) == 0:
        raise UserError(f"dataset {d['dataset']!r}: split {d['split']!r} holds {len(images)} "
                        f"images of shape {shape}, expected shape {expected}")
    low, high = float(images.min()), float(images.max())
    if low < -1.0 or high > 1.0:
        raise UserError(f"dataset {d['dataset']!r}: normalised values span [{low}, {high}], "
                        "outside [-1, 1]")
    splits = {name: int(s.num_examples) for name, s in builder.info.splits.items()}
    profile = {"name": d["dataset"], "one_d": False, "version": str(builder.info.version),
               "split": d["split"], "splits": splits, "examples": int(len(images)),
               "shape": shape, "value_range": [low, high],
               "raw_range": [round((low + 1) * 127.5), round((high + 1) * 127.5)],
               "data_dir": str(builder.data_dir)}
    with warnings.catch_warnings():  # MLflow registers its local source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_numpy(images, source=str(builder.data_dir),  # the TFDS folder
                                         name=f"{d['dataset']}:{builder.info.version}/{d['split']}")
    return profile, dataset
