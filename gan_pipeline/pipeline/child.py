"""A stage in its own process: ``run_stage(pipeline, stage, cfg, key, upstream)``.

The heavy stages (prepare, tune, train, evaluate) each run in a fresh child process, started
with ``spawn``, so that the graphs, datasets and models of one stage are gone, memory and all,
before the next one starts: the pipeline's peak memory is that of its largest stage plus what
this waiting parent holds of its own (~0.4 GB: TensorFlow is imported to open the data source),
not the sum of all stages. The child opens the data source and the MLflow store itself, runs
the stage's body, and sends back ``(run_id, status, figures)`` and its peak resident memory, or
the error it stopped with, which is raised here again as the same kind of error.

Signals: the child runs in its own process group, so a Ctrl-C at the terminal reaches the
parent alone, which hands each SIGINT/SIGTERM on to the child exactly once: the first stops
training cleanly at the next step (checkpoint, run marked KILLED), a second stops at once, as
without a child. Should the parent die, the child gets SIGTERM (Linux) and stops the same way.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import resource
import signal
import sys
import threading
import traceback

from gan_pipeline.errors import UserError


class StageFailed(RuntimeError):
    """A stage's process failed with an unexpected error (its traceback is in the message)."""


def run_stage(pipeline, stage: str, cfg, key: str, upstream: dict):
    """Run ``stage`` of ``pipeline`` with ``cfg`` in a child process. Returns ``(run_id, status,
    figures, peak_gb)``, ``peak_gb`` the child's peak resident memory in GB."""
    job = {"stage": stage, "cfg": cfg, "key": key, "upstream": upstream,
           "base_cfg": pipeline.cfg, "verbose": pipeline.verbose, "command": pipeline.command,
           "experiment_id": pipeline.experiment_id, "parent_id": pipeline.parent_id,
           "forcing": pipeline.forcing}
    context = multiprocessing.get_context("spawn")
    reader, writer = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(job, writer), name=f"gan-pipeline-{stage}")
    with _forwarding_signals(child):
        child.start()
        writer.close()  # the child holds the only writer: EOF here when it exits
        outcome = _receive(reader, child)
        child.join()
    if outcome is None:
        raise StageFailed(f"the {stage} stage's process ended with exit code {child.exitcode} "
                          "before reporting a result")
    kind, payload = outcome
    if kind == "done":
        return payload
    if kind == "user_error":
        raise UserError(payload)
    if kind == "stopped":
        from gan_pipeline.run import TrainingStopped

        raise TrainingStopped(*payload)
    if kind == "interrupted":
        raise KeyboardInterrupt
    raise StageFailed(f"the {stage} stage failed: {payload}")


def _receive(reader, child):
    """The child's one message, or None if it exited without sending one."""
    while True:
        if reader.poll(0.5):
            try:
                return reader.recv()
            except EOFError:
                return None
        if not child.is_alive() and not reader.poll(0):
            return None


@contextlib.contextmanager
def _forwarding_signals(child):
    """While the block runs, SIGINT/SIGTERM to this process go to ``child`` instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def forward(signum, frame):
        if child.pid is not None and child.is_alive():
            os.kill(child.pid, signum)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _die_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(job: dict, writer) -> None:
    os.setpgrp()  # terminal signals reach the parent, which forwards them once
    _die_with_parent()
    try:
        outcome = ("done", _run(job))
    except UserError as exc:
        outcome = ("user_error", str(exc))
    except KeyboardInterrupt:
        outcome = ("interrupted", None)
    except Exception as exc:  # noqa: BLE001 (handed to the parent, which raises it)
        from gan_pipeline.run import TrainingStopped

        if isinstance(exc, TrainingStopped):
            outcome = ("stopped", (exc.reason, str(exc)))
        else:
            outcome = ("error", "".join(traceback.format_exception(exc))[-20_000:])
    sys.stdout.flush()
    sys.stderr.flush()
    writer.send(outcome)
    writer.close()


def _run(job: dict):
    gc.disable()  # until the imports are done: see cli.freeze_imports
    from gan_pipeline.cli import freeze_imports, quiet_tensorflow

    quiet_tensorflow()  # as the parent's command set it up
    import mlflow

    from gan_pipeline import data, tracking
    from gan_pipeline.pipeline.runner import Pipeline
    from gan_pipeline.pipeline.stages import STAGE_TABLE

    freeze_imports()
    pipeline = Pipeline(job["base_cfg"], verbose=job["verbose"], command=job["command"])
    pipeline.source = data.open_source(job["base_cfg"])
    tracking.configure(job["base_cfg"].tracking.uri)
    pipeline.client = mlflow.MlflowClient()
    mlflow.set_experiment(experiment_id=job["experiment_id"])
    pipeline.experiment_id, pipeline.parent_id = job["experiment_id"], job["parent_id"]
    pipeline.forcing = job["forcing"]
    run_id, status, figures = STAGE_TABLE[job["stage"]].body(
        pipeline, job["cfg"], job["key"], job["upstream"])
    return run_id, status, figures, peak_resident_gb()


def _status_gb(field: str) -> float | None:
    """A memory figure of this process from Linux's /proc/self/status (reported in kB), in GB;
    None elsewhere."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return None


def peak_resident_gb() -> float:
    """This process's peak resident memory so far, in GB: Linux's VmHWM. (Not ``ru_maxrss``:
    in a process started from another one, Linux counts there the pages of the parent's copy
    that exec replaced, so a 0.1 GB child of a 2 GB parent reports 2 GB.)"""
    peak = _status_gb("VmHWM")
    if peak is None:  # not Linux: ru_maxrss, in KiB
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    return peak


def own_resident_gb() -> float:
    """This process's resident memory that is its own (anonymous: heap, arrays), in GB, not
    the shared libraries' pages (TensorFlow's alone are ~0.5 GB), which it shares with a stage's
    process. Linux; elsewhere the whole peak."""
    own = _status_gb("RssAnon")
    return own if own is not None else peak_resident_gb()
