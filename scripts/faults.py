"""Fault scenarios against the real `gan-pipeline` CLI (`make faults`).

Each scenario runs in a fresh folder with its own MLflow store and prints one table row:
scenario, expected, observed, data lost. "Data lost" compares the MLflow metric steps and
checkpoints with what an uninterrupted run would have (the target is always "none").
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "gan-pipeline")
PIPELINE = str(REPO / "pipelines/gaussian_1d.toml")
EPOCHS = 5
TRAIN = ["train", "--config", PIPELINE, "--set", f"epochs={EPOCHS}", "--set", "batch_size=16",
         "--set", "data.num_examples=4096", "--set", "eval.n_samples=500"]
ROWS: list[tuple[str, str, str, str]] = []


def cli(args, cwd, env=None, **kw):
    return subprocess.run([CLI, *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=900, **kw)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def runs(cwd: Path):
    store = cwd / "mlflow.db"
    if not store.exists():
        return []
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def steps(cwd: Path, run_id: str) -> list[int]:
    client = mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    return [m.step for m in client.get_metric_history(run_id, "d_loss")]


def state(cwd: Path) -> dict | None:
    path = cwd / "checkpoints" / "gaussian_1d" / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def wait_for_checkpoint(cwd: Path, proc, epoch: int) -> dict:
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            s = state(cwd)
        except ValueError:
            s = None
        if s and s["epoch"] >= epoch:
            return s
        if proc.poll() is not None:
            raise RuntimeError("training ended before the fault could be injected")
        time.sleep(0.2)
    raise RuntimeError("no checkpoint in time")


def lost(cwd: Path, run_id: str) -> str:
    got = steps(cwd, run_id)
    want = list(range(1, EPOCHS + 1))
    if got == want:
        return "none"
    return f"metric steps {got} (expected {want})"


def row(scenario, expected, observed, data_lost):
    ROWS.append((scenario, expected, observed, data_lost))
    print(f"  done: {scenario}", file=sys.stderr, flush=True)


def scenario_kill(tmp: Path):
    proc = subprocess.Popen([CLI, *TRAIN], cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    s = wait_for_checkpoint(tmp, proc, 2)
    time.sleep(0.3)
    proc.kill()
    proc.wait()
    result = cli([*TRAIN, "--resume"], tmp)
    (run,) = runs(tmp)
    row("SIGKILL mid-run, then --resume", "same run continues to the end, FINISHED",
        f"exit {result.returncode}, killed after epoch {s['epoch']}, run {run.info.status}",
        lost(tmp, s["run_id"]))


def scenario_ctrl_c(tmp: Path):
    proc = subprocess.Popen([CLI, *TRAIN], cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    s = wait_for_checkpoint(tmp, proc, 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    status = runs(tmp)[0].info.status
    says_resume = "--resume" in last_line(err)
    result = cli([*TRAIN, "--resume"], tmp)
    row("Ctrl-C (SIGINT), then --resume", "exit 130, checkpoint, KILLED, resume command",
        f"exit {proc.returncode}, run {status}, resume command printed: {says_resume}; "
        f"resume exit {result.returncode}, run {runs(tmp)[0].info.status}",
        lost(tmp, s["run_id"]))


def scenario_nan(tmp: Path):
    result = cli(["train", "--config", PIPELINE, "--set", "train.d_learning_rate=1e30",
                  "--set", "train.g_learning_rate=1e30", "--set", "eval.every_epochs=0"], tmp)
    (run,) = runs(tmp)
    logged = steps(tmp, run.info.run_id)
    row("NaN (learning rate 1e30)", "stop within a step, FAILED, say what and where",
        f"exit {result.returncode}, run {run.info.status}: {last_line(result.stderr)[:90]}...",
        "none (no epoch finished, none logged)" if not logged else f"NaN epochs logged: {logged}")


def bad_input(tmp: Path, scenario: str, args: list[str], env=None):
    result = cli(args, tmp, env=env)
    leftovers = [p.name for p in tmp.iterdir() if p.name in ("checkpoints", "mlruns")]
    half_written = f"{len(runs(tmp))} runs, {leftovers or 'no files'}"
    row(scenario, "exit 2, one line naming the culprit",
        f"exit {result.returncode}: {last_line(result.stderr)[:110]}",
        "none" if not runs(tmp) and not leftovers else f"left behind: {half_written}")


def scenario_corrupt(tmp: Path):
    cli([*TRAIN, "--set", "epochs=1"], tmp)
    for path in (tmp / "checkpoints" / "gaussian_1d").glob("ckpt-*.data-*"):
        path.write_bytes(b"garbage")
    result = cli([*TRAIN, "--resume"], tmp)
    row("corrupt checkpoint on --resume", "exit 2, say so, never start over silently",
        f"exit {result.returncode}: {last_line(result.stderr)[:110]}",
        "none (the earlier run is untouched)" if len(runs(tmp)) == 1 else "a new run appeared")


def scenario_full_disk(tmp: Path):
    mount = tmp / "full"
    mount.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                        capture_output=True).returncode == 0
    if not ok:
        row("full disk while checkpointing", "exit 2, previous checkpoint intact",
            "skipped: mounting a small tmpfs needs root (unit-tested with a mock)", "-")
        return
    try:
        result = cli([*TRAIN, "--set", f"tracking.checkpoint_dir={mount}"], tmp)
        (run,) = runs(tmp)
        logged = steps(tmp, run.info.run_id)
        saved = (mount / "gaussian_1d" / "state.json").exists()
        row("full disk while checkpointing (64 KiB tmpfs)", "exit 2, say so, keep last checkpoint",
            f"exit {result.returncode}, run {run.info.status}: {last_line(result.stderr)[:90]}",
            f"none logged is lost; epochs logged {logged}, checkpoint written: {saved} "
            "(no room for even the first)")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    scenarios = [
        scenario_kill, scenario_ctrl_c, scenario_nan,
        lambda t: bad_input(t, "unknown config key", [*TRAIN, "--set", "epoch=3"]),
        lambda t: bad_input(t, "wrong type in --set", [*TRAIN, "--set", "batch_size=big"]),
        lambda t: bad_input(t, "unknown model name", [*TRAIN, "--set", "model.name=gan1d"]),
        lambda t: bad_input(t, "unknown dataset", ["train", "--config",
                                                   str(REPO / "pipelines/mnist_dcgan.toml"),
                                                   "--set", "data.dataset=mnsit"]),
        lambda t: bad_input(t, "dataset not prepared, offline",
                            ["train", "--config", str(REPO / "pipelines/mnist_dcgan.toml"),
                             "--set", f"data.data_dir={t}", "--set", "data.download=false"]),
        lambda t: bad_input(t, "model file that does not exist",
                            ["sample", "--model", "nope.keras", "--out", "x.npy"]),
        lambda t: (mlflow.MlflowClient(f"sqlite:///{t / 'mlflow.db'}").search_experiments(),
                   bad_input(t, "run id that does not exist (in an existing store)",
                             ["sample", "--model", "0" * 32, "--out", "x.npy"])),
        lambda t: bad_input(t, "unreachable MLFLOW_TRACKING_URI", TRAIN,
                            env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}),
        scenario_corrupt, scenario_full_disk,
    ]
    for scenario in scenarios:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                scenario(Path(tmp))
            except Exception as exc:  # a broken scenario is a finding, not a crash
                row(getattr(scenario, "__name__", "scenario"), "-", f"ERROR {exc}", "?")
    widths = [max(len(r[i]) for r in ROWS + [("scenario", "expected", "observed", "data lost")])
              for i in range(4)]
    header = ("scenario", "expected", "observed", "data lost")
    for r in [header, tuple("-" * w for w in widths), *ROWS]:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
    failed = [r for r in ROWS if not r[3].startswith(("none", "-"))]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
