"""Fault scenarios against the real `gan-pipeline` CLI (`make faults`).

Each scenario runs in a fresh folder with its own MLflow store and prints one table row:
scenario, expected, observed, and whether they agree. Expected and observed are written the
same way (exit status, run status, logged epochs, what the message says), so agreement is their
equality; the script exits 1 when any row disagrees. Every row has a test in `tests/`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "gan-pipeline")
PIPELINE = str(REPO / "pipelines/gaussian_1d.toml")
EPOCHS = 5
TRAIN = ["train", "--config", PIPELINE, "--set", f"epochs={EPOCHS}", "--set", "batch_size=16",
         "--set", "data.num_examples=4096", "--set", "eval.n_samples=500",
         "--set", "tracking.log_model=false"]
ALL_EPOCHS = f"epochs 1-{EPOCHS}"
ROWS: list[tuple[str, str, str, bool]] = []


def cli(args, cwd, env=None, **kw):
    return subprocess.run([CLI, *args], cwd=cwd, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=900, **kw)


def start(args, cwd, env=None):
    return subprocess.Popen([CLI, *args], cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def one_line_error(text: str) -> bool:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return len(lines) >= 1 and lines[-1].startswith("gan-pipeline: error: ") and not any(
        "Traceback" in line for line in lines)


def client(cwd: Path):
    return mlflow.MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")


def runs(cwd: Path):
    if not (cwd / "mlflow.db").exists():
        return []
    c = client(cwd)
    return c.search_runs([e.experiment_id for e in c.search_experiments()])


def logged(cwd: Path, run_id: str) -> str:
    """The epochs a run logged, as 'epochs 1-5' (or a list when there are gaps or repeats)."""
    got = [m.step for m in client(cwd).get_metric_history(run_id, "d_loss")]
    if not got:
        return "no epochs"
    if got == list(range(1, len(got) + 1)):
        return f"epochs 1-{len(got)}"
    return f"epochs {got}"


def state(cwd: Path, name: str = "gaussian_1d") -> dict | None:
    path = cwd / "checkpoints" / name / "state.json"
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except ValueError:  # being replaced right now
        return None


def wait_for(cwd: Path, proc, test, what: str) -> dict:
    deadline = time.time() + 600
    while time.time() < deadline:
        s = state(cwd)
        if s and test(s):
            return s
        if proc.poll() is not None:
            raise RuntimeError(f"training ended before {what}")
        time.sleep(0.1)
    raise RuntimeError(f"no {what} in time")


def row(scenario: str, expected: str, observed: str) -> None:
    ROWS.append((scenario, expected, observed, expected == observed))
    print(f"  {'ok  ' if expected == observed else 'FAIL'} {scenario}", file=sys.stderr,
          flush=True)


def final_weights(cwd: Path, name: str) -> dict[str, np.ndarray]:
    s = state(cwd, name)
    reader = tf.train.load_checkpoint(str(cwd / "checkpoints" / name / s["checkpoint"]))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k.startswith("gan/") and "OPTIMIZER_SLOT" not in k}


# -- interruptions -----------------------------------------------------------------------------

def scenario_kill(tmp: Path):
    # a checkpoint every 64 of the 256 steps; killed as soon as one lands inside epoch 3
    proc = start([*TRAIN, "--set", "tracking.checkpoint_every_steps=64"], tmp)
    s = wait_for(tmp, proc, lambda s: s["epoch"] >= 2 and "step" in s, "a mid-epoch checkpoint")
    proc.kill()
    proc.wait()
    result = cli([*TRAIN, "--set", "tracking.checkpoint_every_steps=64", "--resume"], tmp)
    (run,) = runs(tmp)
    row("SIGKILL inside an epoch, then --resume",
        f"killed, resume exit 0, one run FINISHED, {ALL_EPOCHS}",
        f"{'killed' if proc.returncode == -signal.SIGKILL else proc.returncode}, resume exit "
        f"{result.returncode}, one run {run.info.status}, {logged(tmp, s['run_id'])}")


def stop_with(sig: int, label: str):
    def scenario(tmp: Path):
        proc = start(TRAIN, tmp)
        s = wait_for(tmp, proc, lambda s: s["epoch"] >= 1, "the first checkpoint")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=300)
        status = client(tmp).get_run(s["run_id"]).info.status
        says = "--resume" in last_line(err)
        result = cli([*TRAIN, "--resume"], tmp)
        (run,) = runs(tmp)
        row(f"{label}, then --resume",
            f"exit 130, KILLED, resume command printed; resume exit 0, FINISHED, {ALL_EPOCHS}",
            f"exit {proc.returncode}, {status}, resume command printed"
            f"{'' if says else ': no'}; resume exit {result.returncode}, {run.info.status}, "
            f"{logged(tmp, s['run_id'])}")
    scenario.__name__ = f"scenario_{label}"
    return scenario


def scenario_post_training(tmp: Path):
    args = [a if a != "tracking.log_model=false" else "tracking.log_model=true" for a in TRAIN]
    proc = start(args, tmp)
    wait_for(tmp, proc, lambda s: s["epoch"] >= EPOCHS, "the last checkpoint")
    proc.send_signal(signal.SIGINT)  # during the end-of-run logging (or just after it)
    proc.communicate(timeout=300)
    (run,) = runs(tmp)
    if run.info.status != "FINISHED":
        cli([*args, "--resume"], tmp)
    every = runs(tmp)
    run = client(tmp).get_run(every[0].info.run_id)
    has = "with" if "generator_model_uri" in run.data.tags else "without"
    # retraining would start a second run, or log some epochs twice
    row("Ctrl-C during the end-of-run logging",
        f"one run, FINISHED with its generator, {ALL_EPOCHS}",
        f"{len(every)} run{'s' if len(every) > 1 else ''}, {run.info.status} {has} its "
        f"generator, {logged(tmp, run.info.run_id)}".replace("1 run,", "one run,"))


def scenario_mid_epoch_resume(tmp: Path):
    sets = ["--set", "epochs=2", "--set", "tracking.checkpoint_every_steps=64"]
    straight = cli([*TRAIN, *sets, "--set", "name=straight"], tmp)
    proc = start([*TRAIN, *sets], tmp)
    wait_for(tmp, proc, lambda s: s["epoch"] >= 1 and s.get("step", 0) >= 128,
             "a checkpoint at epoch 2, step 128")
    proc.kill()
    proc.wait()
    s = state(tmp)
    resumed = cli([*TRAIN, *sets, "--resume"], tmp)
    a, b = final_weights(tmp, "straight"), final_weights(tmp, "gaussian_1d")
    same = a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    row("resume from a mid-epoch checkpoint",
        "exits 0, 0; killed at epoch 2 step 128+; weights equal an uninterrupted run's",
        f"exits {straight.returncode}, {resumed.returncode}; killed at epoch {s['epoch'] + 1} "
        f"step {'128+' if s.get('step', 0) >= 128 else s.get('step')}; weights "
        f"{'equal' if same else 'differ from'} an uninterrupted run's")


def scenario_nan(tmp: Path):
    # data far outside float16's range: D's loss is NaN at the first step
    result = cli(["train", "--config", PIPELINE, "--set", "data.mean=1e6",
                  "--set", "train.precision=mixed_float16", "--set", "eval.every_epochs=0"], tmp)
    (run,) = runs(tmp)
    says = "d_loss became nan at epoch 1, step 1" in last_line(result.stderr)
    row("NaN loss (float16 overflow)", "exit 1, FAILED, says what and where, no epochs",
        f"exit {result.returncode}, {run.info.status}, "
        f"{'says what and where' if says else 'does not say where'}, {logged(tmp, run.info.run_id)}")


# -- ownership of folders ----------------------------------------------------------------------

def scenario_takeover(tmp: Path):
    one = ["--set", "epochs=1"]
    cli([*TRAIN, *one], tmp)
    first = state(tmp)["run_id"]
    files = sorted(p.name for p in (tmp / "checkpoints" / "gaussian_1d" / first).iterdir())
    cli([*TRAIN, *one, "--set", "model.g_hidden=8"], tmp)
    second = state(tmp)["run_id"]
    result = cli([*TRAIN, "--set", "epochs=2", "--set", "model.g_hidden=8", "--resume"], tmp)
    kept = sorted(p.name for p in (tmp / "checkpoints" / "gaussian_1d" / first).iterdir())
    row("a new run in a used folder, then --resume of it",
        "resume exit 0, the second run FINISHED with epochs 1-2, the first run's files kept",
        f"resume exit {result.returncode}, the second run "
        f"{client(tmp).get_run(second).info.status} with {logged(tmp, second)}, the first "
        f"run's files {'kept' if kept == files else 'changed'}")


def scenario_concurrent(tmp: Path):
    first = start(TRAIN, tmp)
    wait_for(tmp, first, lambda s: s["epoch"] >= 1, "the first checkpoint")
    second = cli(TRAIN, tmp)
    first.communicate(timeout=600)
    names = f"pid {first.pid}" in second.stderr and "checkpoints/gaussian_1d" in second.stderr
    said = ("one line naming the folder and holder" if one_line_error(second.stderr) and names
            else repr(last_line(second.stderr)[:60]))
    row("two trainings of one pipeline at once",
        "second exit 2, one line naming the folder and holder; first exit 0, 1 run",
        f"second exit {second.returncode}, {said}; first exit {first.returncode}, "
        f"{len(runs(tmp))} run")


# -- bad input: one line, exit 2, nothing left behind ------------------------------------------

def bad_input(scenario: str, args: list[str], says: str, env=None, before=None):
    def run_it(tmp: Path):
        if before:
            before(tmp)
        result = cli(args, tmp, env=env)
        text = result.stdout + result.stderr
        leftovers = [p.name for p in tmp.iterdir() if p.name in ("checkpoints", "mlruns")]
        secret = "s3cret" in text
        row(scenario, f"exit 2, one line saying {says!r}, nothing left",
            f"exit {result.returncode}, "
            + (f"one line saying {says!r}" if one_line_error(result.stderr) and says in
               last_line(result.stderr) else repr(last_line(result.stderr)[:70]))
            + (", nothing left" if not runs(tmp) and not leftovers else f", left {leftovers}")
            + (", SHOWS THE PASSWORD" if secret else ""))
    run_it.__name__ = scenario
    return run_it


def _store(tmp: Path):
    mlflow.MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}").search_experiments()


def _not_a_generator(tmp: Path):
    import keras

    x = keras.Input((28, 28, 1))
    keras.Model(x, keras.layers.Dense(10)(keras.layers.Flatten()(x)),
                name="feature_classifier").save(tmp / "classifier.keras")


def scenario_corrupt(tmp: Path):
    cli([*TRAIN, "--set", "epochs=1"], tmp)
    before = state(tmp)
    for path in (tmp / "checkpoints" / "gaussian_1d").rglob("ckpt-*.data-*"):
        path.write_bytes(b"garbage")
    result = cli([*TRAIN, "--resume"], tmp)
    said = ("one line saying it is corrupt" if one_line_error(result.stderr)
            and "is corrupt" in result.stderr else repr(last_line(result.stderr)[:60]))
    # a silent restart from fresh weights would write a new state and checkpoints
    row("corrupt checkpoint on --resume",
        "exit 2, one line saying it is corrupt, 1 runs, the state untouched",
        f"exit {result.returncode}, {said}, {len(runs(tmp))} runs, the state "
        f"{'untouched' if state(tmp) == before else 'changed'}")


def scenario_full_disk(tmp: Path):
    # Room for the first checkpoint, not for the second: measured from a run in a normal folder.
    sizing = tmp / "sizing"
    sizing.mkdir()
    cli([*TRAIN, "--set", "epochs=1"], sizing)
    one = sum(-(-p.stat().st_size // 4096) * 4096  # tmpfs gives each file whole pages
              for p in (sizing / "checkpoints").rglob("*") if p.is_file())
    shutil.rmtree(sizing)
    mount = tmp / "full"
    mount.mkdir()
    size = (int(one * 1.5) // 4096 + 1) * 4096
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                        capture_output=True).returncode == 0
    if not ok:
        row("full disk at the second checkpoint", "skipped: mounting a tmpfs needs root",
            "skipped: mounting a tmpfs needs root")
        return
    try:
        result = cli([*TRAIN, "--set", f"tracking.checkpoint_dir={mount}"], tmp)
        (run,) = runs(tmp)
        s = json.loads((mount / "gaussian_1d" / "state.json").read_text())
        says = "No space left on device" in result.stderr and "previous checkpoint is intact" \
            in result.stderr
        intact = (mount / "gaussian_1d" / (s["checkpoint"] + ".index")).exists()
        row(f"full disk at the second checkpoint ({size // 1024} KiB tmpfs)",
            "exit 2, says no space and the previous checkpoint is intact; it is (epoch 1)",
            f"exit {result.returncode}, "
            f"{'says no space and the previous checkpoint is intact' if says else repr(last_line(result.stderr)[:60])}; "
            f"it {'is' if intact else 'is not'} (epoch {s['epoch']})")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    dcgan = str(REPO / "pipelines/mnist_dcgan.toml")
    scenarios = [
        scenario_kill, stop_with(signal.SIGINT, "Ctrl-C (SIGINT)"),
        stop_with(signal.SIGTERM, "SIGTERM"), scenario_post_training, scenario_mid_epoch_resume,
        scenario_nan, scenario_takeover, scenario_concurrent,
        bad_input("unknown config key", [*TRAIN, "--set", "epoch=3"], "unknown setting 'epoch'"),
        bad_input("wrong type in --set", [*TRAIN, "--set", "batch_size=big"], "an integer"),
        bad_input("non-finite setting", [*TRAIN, "--set", "train.d_learning_rate=nan"],
                  "expected a finite number"),
        bad_input("seed out of range", [*TRAIN, "--set", "seed=4294967296"], "<= 4294967295"),
        bad_input("unknown model name", [*TRAIN, "--set", "model.name=gan1d"], "model.name"),
        bad_input("unknown dataset", ["train", "--config", dcgan, "--set", "data.dataset=mnsit"],
                  "unknown dataset 'mnsit'"),
        bad_input("dataset not prepared, offline",
                  ["train", "--config", dcgan, "--set", "data.data_dir=/nonexistent",
                   "--set", "data.download=false"], "is not prepared in /nonexistent"),
        bad_input("model file that does not exist",
                  ["sample", "--model", "nope.keras", "--out", "x.npy"], "does not exist"),
        bad_input("run id that does not exist (in an existing store)",
                  ["sample", "--model", "0" * 32, "--out", "x.npy"], "has no generator.keras",
                  before=_store),
        bad_input("a model that is not a generator",
                  ["sample", "--model", "classifier.keras", "--out", "x.npy"],
                  "is not a gan-pipeline generator", before=_not_a_generator),
        bad_input("--out where nothing can be written",
                  ["sample", "--model", "0" * 32, "--out", "/proc/x.npy"], "cannot write in"),
        bad_input("unreachable MLFLOW_TRACKING_URI", TRAIN, "is unreachable",
                  env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}),
        bad_input("a password in MLFLOW_TRACKING_URI", TRAIN, "http://***@127.0.0.1:9",
                  env={"MLFLOW_TRACKING_URI": "http://alice:s3cret@127.0.0.1:9"}),
        bad_input("MLFLOW_TRACKING_URI MLflow cannot use", TRAIN, "is not one MLflow can log to",
                  env={"MLFLOW_TRACKING_URI": "garbage://x"}),
        scenario_corrupt, scenario_full_disk,
    ]
    only = sys.argv[1:]
    for scenario in scenarios:
        if only and not any(o in scenario.__name__ for o in only):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                scenario(Path(tmp))
            except Exception as exc:  # a broken scenario is a finding, not a crash
                row(getattr(scenario, "__name__", "scenario"), "-", f"ERROR {exc}")
    header = ("scenario", "expected", "observed", "agree")
    table = [header, *((s, e, o, "yes" if ok else "NO") for s, e, o, ok in ROWS)]
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for i, r in enumerate(table):
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))
        if i == 0:
            print(" | ".join("-" * w for w in widths))
    failed = [r for r in ROWS if not r[3]]
    print(f"\n{len(ROWS) - len(failed)} of {len(ROWS)} rows as expected", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
