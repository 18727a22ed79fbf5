"""Runs survive interruption: checkpoints continue exactly, into the same MLflow run, after
SIGKILL or Ctrl-C; a diverging run stops within a step and says what to change."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import tensorflow as tf

from gan_pipeline import checkpoints, config
from gan_pipeline.errors import UserError
from gan_pipeline.train import train
from tests.helpers import REPO, TINY, TempWorkdir

SCRIPT = str(Path(sys.executable).parent / "gan-pipeline")


def tiny_1d(*extra):
    sets = ["data.n_points=20", "data.num_examples=256", "batch_size=32", "eval.n_samples=200",
            "tracking.log_model=false"] + [f"model.{k}={v}" for k, v in TINY["gaussian_1d"].items()]
    return config.load(REPO / "pipelines/gaussian_1d.toml", sets + list(extra))


def metric_steps(uri, run_id, key="d_loss"):
    return [m.step for m in mlflow.MlflowClient(uri).get_metric_history(run_id, key)]


class ExactResumeTest(tf.test.TestCase):
    def test_resumed_run_matches_an_uninterrupted_one(self):
        with TempWorkdir() as work:
            straight = train(tiny_1d("epochs=4", "name=straight"), verbose=0)
            first = train(tiny_1d("epochs=2", "name=resumed"), verbose=0)
            state = checkpoints.read_state(work.path / "checkpoints" / "resumed")
            self.assertEqual((state["epoch"], state["run_id"]), (2, first.run_id))
            second = train(tiny_1d("epochs=4", "name=resumed"), verbose=0, resume=True)
            self.assertEqual(second.run_id, first.run_id, "resume continues the same MLflow run")
            for a, b in zip(straight.gan.variables, second.gan.variables):
                self.assertAllClose(a, b, rtol=1e-5, atol=1e-6, msg=a.path)
            self.assertEqual(metric_steps(work.uri, second.run_id), [1, 2, 3, 4])
            self.assertEqual(metric_steps(work.uri, second.run_id, "eval/ks"), [1, 2, 3, 4])
            run = mlflow.MlflowClient(work.uri).get_run(second.run_id)
            self.assertEqual(run.info.status, "FINISHED")

    def test_resume_refuses_what_it_cannot_continue(self):
        with TempWorkdir():
            with self.assertRaisesRegex(UserError, "nothing to resume"):
                train(tiny_1d("epochs=2"), verbose=0, resume=True)
            train(tiny_1d("epochs=1"), verbose=0)
            with self.assertRaisesRegex(UserError, r"differ in model.g_hidden"):
                train(tiny_1d("epochs=3", "model.g_hidden=8"), verbose=0, resume=True)
            with self.assertRaisesRegex(UserError, r"already trained 1 epochs.*epochs=6"):
                train(tiny_1d("epochs=1"), verbose=0, resume=True)

    def test_corrupt_checkpoint_is_reported_not_ignored(self):
        with TempWorkdir() as work:
            train(tiny_1d("epochs=1"), verbose=0)
            folder = work.path / "checkpoints" / "gaussian_1d"
            for data_file in folder.glob("ckpt-*.data-*"):
                data_file.write_bytes(b"garbage")
            with self.assertRaisesRegex(UserError, "is corrupt or does not match"):
                train(tiny_1d("epochs=2"), verbose=0, resume=True)
            (folder / "state.json").write_text("{not json")
            with self.assertRaisesRegex(UserError, "state.json is corrupt"):
                train(tiny_1d("epochs=2"), verbose=0, resume=True)


class ProcessFaultsTest(tf.test.TestCase):
    """The real CLI in a subprocess, stopped from outside."""

    ARGS = ["train", "--config", str(REPO / "pipelines/gaussian_1d.toml"), "--set", "epochs=6",
            "--set", "data.num_examples=4096", "--set", "batch_size=16",
            "--set", "tracking.log_model=false", "--set", "eval.n_samples=200"]

    def start(self, work):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.Popen([SCRIPT, *self.ARGS], cwd=work.path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_for_epoch(self, work, proc, epoch, timeout=240):
        deadline = time.time() + timeout
        folder = work.path / "checkpoints" / "gaussian_1d"
        while time.time() < deadline:
            state = checkpoints.read_state(folder) if (folder / "state.json").exists() else None
            if state and state["epoch"] >= epoch:
                return state
            self.assertIsNone(proc.poll(), "training ended before it could be interrupted")
            time.sleep(0.2)
        self.fail("no checkpoint in time")

    def resume(self, work):
        return subprocess.run([SCRIPT, *self.ARGS, "--resume"], cwd=work.path,
                              capture_output=True, text=True, timeout=600)

    def test_sigkill_mid_epoch_then_resume_loses_nothing(self):
        with TempWorkdir() as work:
            proc = self.start(work)
            state = self.wait_for_epoch(work, proc, 2)
            time.sleep(0.5)  # into the next epoch
            proc.kill()
            proc.wait()
            self.assertEqual(proc.returncode, -signal.SIGKILL)
            done = checkpoints.read_state(work.path / "checkpoints" / "gaussian_1d")["epoch"]
            self.assertGreaterEqual(done, state["epoch"])
            result = self.resume(work)
            self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            self.assertIn(f"resumed after epoch {done}", result.stdout)
            self.assertEqual(metric_steps(work.uri, state["run_id"]), [1, 2, 3, 4, 5, 6])
            images = [a.path for a in mlflow.MlflowClient(work.uri).list_artifacts(
                state["run_id"], "images") if a.path.endswith(".png")]
            self.assertLen(images, 6, "the fixed-noise series continues, one picture per epoch")

    def test_ctrl_c_checkpoints_marks_killed_and_prints_the_resume_command(self):
        with TempWorkdir() as work:
            proc = self.start(work)
            state = self.wait_for_epoch(work, proc, 1)
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=120)
            self.assertEqual(proc.returncode, 130, err[-2000:])
            self.assertIn("marked KILLED", err)
            self.assertIn("--resume", err.strip().splitlines()[-1])
            run = mlflow.MlflowClient(work.uri).get_run(state["run_id"])
            self.assertEqual(run.info.status, "KILLED")
            result = self.resume(work)
            self.assertEqual(result.returncode, 0, result.stderr[-2000:])
            self.assertEqual(metric_steps(work.uri, state["run_id"]), [1, 2, 3, 4, 5, 6])
            run = mlflow.MlflowClient(work.uri).get_run(state["run_id"])
            self.assertEqual(run.info.status, "FINISHED")


class DivergenceTest(tf.test.TestCase):
    def test_non_finite_loss_stops_within_a_step_and_marks_the_run_failed(self):
        with TempWorkdir() as work:
            result = subprocess.run(
                [SCRIPT, "train", "--config", str(REPO / "pipelines/gaussian_1d.toml"),
                 "--set", "epochs=3", "--set", "train.d_learning_rate=1e30",
                 "--set", "train.g_learning_rate=1e30", "--set", "eval.every_epochs=0"],
                cwd=work.path, capture_output=True, text=True, timeout=300)
            self.assertEqual(result.returncode, 1, result.stderr[-2000:])
            last = result.stderr.strip().splitlines()[-1]
            self.assertRegex(last, r"training diverged: [dg]_loss became (nan|inf) at epoch 1, "
                                   r"step \d+")
            self.assertIn("learning rate", last)
            client = mlflow.MlflowClient(work.uri)
            (run,) = client.search_runs([client.get_experiment_by_name("gaussian_1d")
                                         .experiment_id])
            self.assertEqual(run.info.status, "FAILED")
            self.assertEqual(metric_steps(work.uri, run.info.run_id), [], "no NaN epoch logged")
