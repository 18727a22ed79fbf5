"""``Pipeline(cfg).run(only=..., force=...)``: one execution of a pipeline file.

MLflow layout (experiment ``tracking.experiment``, default the pipeline name): one parent run per
execution, a child run per stage (tag ``stage``), and the tune stage's trials nested below it.

Caching: a stage's key hashes its inputs (its part of the config and of the data's identity, the
run ids of the stages it reads, the package version). When a FINISHED stage run with that key
exists in the experiment it is reused instead of recomputed, and the parent run records which
(``stage.<name>`` tags and ``stages.json``). ``--force STAGE`` recomputes that stage and every
stage after it; ``--only STAGE`` runs just that one, reusing the finished runs of the stages it
reads. A train stage that was interrupted resumes from its checkpoint; an interrupted search
continues where it stopped.

Memory: every stage but register runs in a child process of its own (``child.py``), so one
stage's graphs and datasets are released before the next starts. The summary prints each
stage's peak resident memory, and the parent run logs it (``peak_memory_gb/<stage>``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import mlflow

from gan_pipeline import __version__, data, tracking, tuning
from gan_pipeline.errors import UserError
from gan_pipeline.pipeline import child
from gan_pipeline.pipeline.graph import READS, STAGES
from gan_pipeline.pipeline.stages import STAGE_TABLE, tuner_folder
from gan_pipeline.run import TrainingStopped


@dataclass
class StageResult:
    stage: str
    run_id: str
    status: str  # "ran", "reused" or "resumed"
    seconds: float
    key: str
    figures: dict = field(default_factory=dict)
    peak_gb: float = 0.0  # the peak resident memory of the process it ran in (0: reused)


class Pipeline:
    """One execution of a pipeline file. ``isolate_stages=False`` runs every stage in this
    process (a debugger, or a test that patches something in-process, sees them all)."""

    def __init__(self, cfg, verbose: int | str = 1, command: str = "",
                 isolate_stages: bool = True):
        self.cfg, self.verbose = cfg, verbose
        self.isolate_stages = isolate_stages
        self.command = command or "gan-pipeline run <pipeline file>"
        self.client: mlflow.MlflowClient | None = None
        self.source: data.DataSource | None = None
        self.experiment_id = ""
        self.parent_id = ""
        self.results: dict[str, StageResult] = {}
        self.forcing = False  # whether the stage being run was forced (--force)
        self._tuned = None  # the config with the search's best settings

    # -- lookups -------------------------------------------------------------------------------

    def find(self, stage: str, key: str, statuses=("FINISHED",)):
        """The newest run of ``stage`` with this key and one of ``statuses``, else None."""
        for status in statuses:
            runs = self.client.search_runs(
                [self.experiment_id], f"tags.stage = '{stage}' and tags.stage_key = '{key}' "
                f"and attributes.status = '{status}'",
                order_by=["attributes.start_time DESC"], max_results=1)
            if runs:
                return runs[0]
        return None

    def tags(self, stage: str, key: str) -> dict:
        return {"stage": stage, "stage_key": key, "pipeline": self.cfg.name,
                "profile": self.cfg.profile, "gan_pipeline_version": __version__}

    def start(self, stage: str, key: str):
        """A new child run for ``stage`` under the parent run."""
        return mlflow.start_run(run_name=stage, parent_run_id=self.parent_id,
                                tags=self.tags(stage, key))

    def key(self, stage: str, cfg, upstream: dict[str, str | None]) -> str:
        blob = json.dumps({"stage": stage, "inputs": STAGE_TABLE[stage].inputs(self, cfg),
                           "upstream": upstream, "version": __version__},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    # -- the run -------------------------------------------------------------------------------

    def _check(self, only: str | None, force: str | None) -> list[str]:
        cfg = self.cfg
        for flag, value in (("--only", only), ("--force", force)):
            if value is not None and value not in cfg.stages:
                raise UserError(f"{flag} {value!r} is not one of this pipeline's stages: "
                                f"{', '.join(cfg.stages)}")
        if only and force and STAGES.index(force) < STAGES.index(only):
            raise UserError(f"--force {force} with --only {only}: {force!r} would not run; use "
                            f"--only {force} --force {force} first, or drop --only")
        selected = [only] if only else list(cfg.stages)
        if "register" in selected and not cfg.tracking.log_model:
            raise UserError("the register stage needs tracking.log_model = true (it registers "
                            "the logged generator); set it, or drop 'register' from stages")
        if "tune" in selected and not cfg.tune.space:
            raise UserError("the tune stage needs a search space: declare ranges under "
                            "[tune.space.train] or [tune.space.model] in the pipeline file, or "
                            "drop 'tune' from stages (--set \"stages=['prepare', 'train', "
                            "'evaluate', 'register']\")")
        return selected

    def run(self, only: str | None = None, force: str | None = None) -> dict[str, StageResult]:
        cfg = self.cfg
        selected = self._check(only, force)
        forced = set(STAGES[STAGES.index(force):]) if force else set()
        tracking.check_reachable(tracking.tracking_uri(cfg.tracking.uri))
        self.source = data.open_source(cfg)  # bad data fails here, before any run exists
        tracking.configure(cfg.tracking.uri)
        self.client = mlflow.MlflowClient()
        experiment = cfg.tracking.experiment or cfg.name
        self.experiment_id = mlflow.set_experiment(experiment).experiment_id
        worker = _tuner_worker()
        if worker:
            return self._run_tune_worker(worker)

        parent = self.client.create_run(
            self.experiment_id, run_name=f"{cfg.name} pipeline ({cfg.profile})",
            tags={"pipeline": cfg.name, "profile": cfg.profile, "kind": "pipeline",
                  "stages": ",".join(selected), "gan_pipeline_version": __version__})
        self.parent_id = parent.info.run_id
        print(f"Pipeline {cfg.name!r} (profile {cfg.profile}): stages "
              f"{' -> '.join(selected)}; MLflow parent run {self.parent_id} "
              f"(experiment {experiment!r}, {tracking.redact(mlflow.get_tracking_uri())})",
              flush=True)
        self.client.log_dict(self.parent_id, tracking.redacted_config(cfg.to_dict()),
                             "pipeline_config.json")
        started = time.perf_counter()
        status = "FAILED"
        try:
            last = max(STAGES.index(s) for s in selected)
            for stage in STAGES[:last + 1]:  # stages after the last selected one are not needed
                if stage in cfg.stages:
                    self._stage(stage, run_it=stage in selected, force=stage in forced)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except Exception as exc:
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

    def _reads(self, stage: str) -> tuple[str, ...]:
        """The stages whose runs ``stage`` reads. With ``tune.adopt = "file"`` train keeps the
        file's settings: the search is recorded beside it, not read by it."""
        if stage == "train" and self.cfg.tune.adopt == "file":
            return tuple(s for s in READS[stage] if s != "tune")
        return READS[stage]

    def _stage(self, stage: str, run_it: bool, force: bool) -> None:
        upstream = {s: self.results[s].run_id for s in self._reads(stage) if s in self.results}
        cfg = self._stage_config(stage)
        key = self.key(stage, cfg, upstream)
        started = time.perf_counter()
        cached = None if force else self.find(stage, key)
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
        peak, memory = 0.0, ""
        if STAGE_TABLE[stage].own_process and self.isolate_stages:
            run_id, status, figures, peak = child.run_stage(self, stage, cfg, key, upstream)
            memory = f"; its process peaked at {peak:.2f} GB"
        else:
            run_id, status, figures = STAGE_TABLE[stage].body(self, cfg, key, upstream)
        self.results[stage] = StageResult(stage, run_id, status, time.perf_counter() - started,
                                          key, figures, peak)
        print(f"[{stage}] {status} in {self.results[stage].seconds:.1f} s (run {run_id}"
              f"{memory})", flush=True)

    def _stage_config(self, stage: str):
        """The config a stage runs with: from train on, the search's best settings applied
        (unless ``tune.adopt = "file"``)."""
        tune = self.results.get("tune")
        if stage in ("prepare", "tune") or tune is None or self.cfg.tune.adopt == "file":
            return self.cfg
        if self._tuned is None:  # read once: train, evaluate and register all use it
            best = mlflow.artifacts.load_dict(f"runs:/{tune.run_id}/best_hyperparameters.json")
            self._tuned = self.cfg.replace(best["values"])
        return self._tuned

    def _record(self, seconds: float) -> None:
        table = {s: {"run_id": r.run_id, "status": r.status, "seconds": round(r.seconds, 1),
                     "key": r.key} for s, r in self.results.items()}
        for stage, row in table.items():
            self.client.set_tag(self.parent_id, f"stage.{stage}", f"{row['status']} {row['run_id']}")
            self.client.log_metric(self.parent_id, f"seconds/{stage}", row["seconds"])
            if self.results[stage].peak_gb:
                self.client.log_metric(self.parent_id, f"peak_memory_gb/{stage}",
                                       self.results[stage].peak_gb)
        self.client.log_metric(self.parent_id, "seconds/total", seconds)
        self.client.log_metric(self.parent_id, "peak_memory_gb/total", self.peak_gb())
        self.client.log_dict(self.parent_id, table, "stages.json")

    def peak_gb(self) -> float:
        """The pipeline's peak resident memory: the largest of its stages' processes (which ran
        one at a time) plus what this waiting process held of its own (its shared libraries
        are the stage process's too); this process's own peak if that is more."""
        stages = [r.peak_gb for r in self.results.values()]
        return max(max(stages, default=0.0) + child.own_resident_gb(), child.peak_resident_gb())

    def _summary(self, seconds: float) -> None:
        print(f"\nPipeline {self.cfg.name!r} finished in {seconds:.1f} s, peak resident memory "
              f"{self.peak_gb():.2f} GB:", flush=True)
        for r in self.results.values():
            extra = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in r.figures.items())
            memory = f"{r.peak_gb:5.2f} GB" if r.peak_gb else "    -   "
            print(f"  {r.stage:<9} {r.status:<8} {r.seconds:7.1f} s  {memory}  run {r.run_id}  "
                  f"{extra}", flush=True)
        parent = self.client.get_run(self.parent_id)
        print(f"To review it, {tracking.run_link(parent)}", flush=True)

    # -- distributed tuning: a worker process -------------------------------------------------

    def _run_tune_worker(self, tuner_id: str) -> dict:
        """A Keras Tuner worker: run trials of the chief's search, nested in its tune run."""
        prepare = None
        if "prepare" in self.cfg.stages:
            prepare = self.find("prepare", self.key("prepare", self.cfg, {}))
            if prepare is None:
                raise UserError("tuner worker: the chief has not finished the prepare stage "
                                "in this MLflow store; start the chief first")
        upstream = {"prepare": prepare.info.run_id} if prepare else {}
        key = self.key("tune", self.cfg, upstream)
        wait = float(os.environ.get("GAN_PIPELINE_WORKER_WAIT", "600"))
        deadline = time.monotonic() + wait
        while (tune := self.find("tune", key, statuses=("RUNNING",))) is None \
                or "tuner_project" not in tune.data.tags:
            if time.monotonic() > deadline:
                raise UserError(f"tuner worker {tuner_id}: no running tune stage with these "
                                f"settings appeared in {wait:.0f} s; start the chief "
                                "(KERASTUNER_TUNER_ID=chief) with the same pipeline file")
            time.sleep(2)
        print(f"Tuner worker {tuner_id}: trials nest under tune run {tune.info.run_id}",
              flush=True)
        tuning.search(self.cfg, tuner_folder(self.cfg), tune.data.tags["tuner_project"],
                      tune.info.run_id, worker=True, source=self.source)
        print(f"Tuner worker {tuner_id}: the chief reports no more trials; done", flush=True)
        return {}


def _tuner_worker() -> str:
    """This process's Keras Tuner id when it is a worker of a distributed search, else ''."""
    tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "")
    if tuner_id and tuner_id != "chief" and os.environ.get("KERASTUNER_ORACLE_IP"):
        return tuner_id
    return ""
