"""Runs survive interruption: checkpoints continue exactly, into the same MLflow run, after
SIGKILL or Ctrl-C; a diverging run stops within a step and says what to change."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import tensorflow as tf

from gan_pipeline import checkpoints, config
from gan_pipeline.errors import UserError
from gan_pipeline.run import train
from tests.helpers import REPO, TINY, TempWorkdir, free_port

SCRIPT = str(Path(sys.executable).parent / "gan-pipeline")


def tiny_1d(*extra):
    # Constant learning rates: these tests stop and extend runs, which stretches a cosine decay
    # (its own test below keeps the run's length).
    sets = ["data.n_points=20", "data.num_examples=256", "batch_size=32", "eval.n_samples=200",
            "tracking.log_model=false", "train.lr_schedule=constant"]
    sets += [f"model.{k}={v}" for k, v in TINY["gaussian_1d"].items()]
    return config.load(REPO / "pipelines/gaussian_1d.toml", sets + list(extra))


def rewind_to_oldest(folder: Path, **fields) -> Path:
    """As if the run was killed earlier: point ``folder``'s state at its oldest kept checkpoint,
    with ``fields`` (epoch, step) as that checkpoint's. Returns the checkpoint's index file."""
    oldest = sorted(folder.rglob("ckpt-*.index"), key=lambda p: int(p.stem[5:]))[0]
    state = checkpoints.read_state(folder)
    state.update(**fields, checkpoint=str(oldest.relative_to(folder).with_suffix("")))
    (folder / "state.json").write_text(json.dumps(state))
    return oldest


def metric_steps(uri, run_id, key="d_loss"):
    return [m.step for m in mlflow.MlflowClient(uri).get_metric_history(run_id, key)]


@pytest.mark.integration
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
            for data_file in folder.rglob("ckpt-*.data-*"):
                data_file.write_bytes(b"garbage")
            with self.assertRaisesRegex(UserError, "is corrupt or does not match"):
                train(tiny_1d("epochs=2"), verbose=0, resume=True)
            (folder / "state.json").write_text("{not json")
            with self.assertRaisesRegex(UserError, "state.json is corrupt"):
                train(tiny_1d("epochs=2"), verbose=0, resume=True)


@pytest.mark.process
class ProcessFaultsTest(tf.test.TestCase):
    """The real CLI in a subprocess, stopped from outside."""

    ARGS = ["train", "--config", str(REPO / "pipelines/gaussian_1d.toml"), "--set", "epochs=6",
            "--set", "data.num_examples=2048", "--set", "batch_size=16",
            "--set", "tracking.log_model=false", "--set", "eval.n_samples=200"]

    def start(self, work, *extra):
        """The training process, its output going to files: an unread pipe fills (64 KiB of
        progress bar on a loaded machine) and blocks the process before it checkpoints."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(work.path / "stdout.txt", "w") as out, open(work.path / "stderr.txt", "w") as err:
            return subprocess.Popen([SCRIPT, *self.ARGS, *extra], cwd=work.path, env=env,
                                    stdout=out, stderr=err, text=True)

    def wait_for_epoch(self, work, proc, epoch, timeout=900, mid_epoch=False):
        """The first checkpoint with ``epoch`` epochs done (and, with ``mid_epoch``, taken
        inside the next one). The timeout only turns a hang into a failure: on a loaded
        machine the first checkpoints took over 240 s."""
        deadline = time.time() + timeout
        folder = work.path / "checkpoints" / "gaussian_1d"
        while time.time() < deadline:
            state = checkpoints.read_state(folder) if (folder / "state.json").exists() else None
            if state and state["epoch"] >= epoch and (not mid_epoch or "step" in state):
                return state
            self.assertIsNone(proc.poll(), "training ended before it could be interrupted")
            time.sleep(0.2)
        self.fail("no checkpoint in time")

    def resume(self, work):
        return subprocess.run([SCRIPT, *self.ARGS, "--resume"], cwd=work.path,
                              capture_output=True, text=True, timeout=600)

    def test_sigkill_mid_epoch_then_resume_loses_nothing(self):
        with TempWorkdir() as work:
            # a checkpoint every 64 of the 128 steps: killed once one lands inside epoch 3
            proc = self.start(work, "--set", "tracking.checkpoint_every_steps=64")
            state = self.wait_for_epoch(work, proc, 2, mid_epoch=True)
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
        self._stop_and_resume(signal.SIGINT)

    def test_sigterm_stops_like_ctrl_c(self):
        # in calls of 8 steps (the host sees the signal between calls); the resume runs 1 a call
        self._stop_and_resume(signal.SIGTERM, "--set", "train.steps_per_execution=8")

    def _stop_and_resume(self, sig, *extra):
        with TempWorkdir() as work:
            proc = self.start(work, *extra)
            state = self.wait_for_epoch(work, proc, 1)
            proc.send_signal(sig)
            proc.wait(timeout=120)
            err = (work.path / "stderr.txt").read_text()
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


@pytest.mark.process
class DivergenceTest(tf.test.TestCase):
    def test_non_finite_loss_stops_within_a_step_and_marks_the_run_failed(self):
        for calls_of in (1, 4):
            with self.subTest(steps_per_execution=calls_of):
                self._diverge(calls_of)

    def _diverge(self, calls_of: int):
        with TempWorkdir() as work:
            result = subprocess.run(
                [SCRIPT, "train", "--config", str(REPO / "pipelines/gaussian_1d.toml"),
                 # data far outside float16's range: D's loss is NaN at the first step
                 "--set", "epochs=3", "--set", "data.mean=1e6",
                 "--set", f"train.steps_per_execution={calls_of}",
                 "--set", "train.precision=mixed_float16", "--set", "eval.every_epochs=0"],
                cwd=work.path, capture_output=True, text=True, timeout=300)
            self.assertEqual(result.returncode, 1, result.stderr[-2000:])
            last = result.stderr.strip().splitlines()[-1]
            # the step that went wrong is named, though the host looked only after the call
            self.assertRegex(last, r"training diverged: [dg]_loss became (nan|inf) at epoch 1, "
                                   r"step 1\b")
            self.assertIn("learning rate", last)
            client = mlflow.MlflowClient(work.uri)
            (run,) = client.search_runs([client.get_experiment_by_name("gaussian_1d")
                                         .experiment_id])
            self.assertEqual(run.info.status, "FAILED")
            self.assertEqual(metric_steps(work.uri, run.info.run_id), [], "no NaN epoch logged")


@pytest.mark.integration
class MoreFaultsTest(tf.test.TestCase):
    def test_deterministic_runs_give_bit_identical_losses(self):
        with TempWorkdir() as work:
            runs = [train(tiny_1d("epochs=2", "deterministic=true", f"name=det{i}"), verbose=0)
                    for i in range(2)]
            client = mlflow.MlflowClient(work.uri)
            for key in ("d_loss", "g_loss", "gen_mean"):
                a, b = ([m.value for m in client.get_metric_history(r.run_id, key)] for r in runs)
                self.assertEqual(a, b, key)
            for x, y in zip(runs[0].gan.variables, runs[1].gan.variables):
                self.assertAllEqual(x, y)

    def test_collapse_is_flagged_and_can_stop_the_run(self):
        with TempWorkdir() as work:
            # learning rates this small leave G at its initial, nearly constant output (the
            # sorted family's G; the file's order-keeping G starts spread out)
            cfg = tiny_1d("epochs=3", "eval.stop_on_collapse=true",
                          "eval.collapse_grace_epochs=0",  # (the file waits 2 epochs)
                          "model.name=gaussian_1d_sorted",
                          "train.d_learning_rate=1e-9", "train.g_learning_rate=1e-9")
            with self.assertRaisesRegex(Exception, "stopped on mode collapse .*epoch 1"):
                train(cfg, verbose=0)
            client = mlflow.MlflowClient(work.uri)
            (run,) = client.search_runs([client.get_experiment_by_name("gaussian_1d")
                                         .experiment_id])
            self.assertEqual(run.info.status, "FAILED")
            self.assertEqual(run.data.metrics["collapse_warning"], 1.0)
            self.assertIn("collapsed toward a point", run.data.tags["collapse_warning"])
            self.assertEqual(metric_steps(work.uri, run.info.run_id), [1])
            state = checkpoints.read_state(work.path / "checkpoints" / "gaussian_1d")
            self.assertEqual(state["epoch"], 1, "the completed epoch is checkpointed")

    def test_collapse_in_the_grace_epochs_warns_and_stops_after_them(self):
        with TempWorkdir() as work:
            cfg = tiny_1d("epochs=3", "eval.stop_on_collapse=true",
                          "eval.collapse_grace_epochs=2", "model.name=gaussian_1d_sorted",
                          "train.d_learning_rate=1e-9", "train.g_learning_rate=1e-9")
            with self.assertRaisesRegex(Exception, "stopped on mode collapse .*epoch 3"):
                train(cfg, verbose=0)
            client = mlflow.MlflowClient(work.uri)
            (run,) = client.search_runs([client.get_experiment_by_name("gaussian_1d")
                                         .experiment_id])
            self.assertEqual(metric_steps(work.uri, run.info.run_id), [1, 2, 3])

    @pytest.mark.process
    def test_unreachable_tracking_server_fails_before_training(self):
        with TempWorkdir() as work:
            env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
            result = subprocess.run([SCRIPT, "train", "--config",
                                     str(REPO / "pipelines/gaussian_1d.toml")],
                                    cwd=work.path, env=env, capture_output=True, text=True,
                                    timeout=300)
            self.assertEqual(result.returncode, 2, result.stderr[-2000:])
            self.assertIn("MLflow tracking server http://127.0.0.1:9 is unreachable",
                          result.stderr.strip().splitlines()[-1])
            self.assertFalse((work.path / "checkpoints").exists())

    def test_full_disk_while_checkpointing_is_a_clear_error(self):
        from unittest import mock

        # as the OS reports it, and as TensorFlow's writer does (seen on a full tmpfs)
        failures = [OSError(28, "No space left on device"),
                    tf.errors.ResourceExhaustedError(None, None, "No space left on device")]
        for failure in failures:
            def no_space(*args, **kwargs):
                raise failure

            with TempWorkdir():
                with mock.patch.object(tf.train.CheckpointManager, "save", no_space):
                    with self.assertRaisesRegex(UserError, "No space left on device.*previous "
                                                           "checkpoint is intact"):
                        train(tiny_1d("epochs=1"), verbose=0)

    def test_checkpoints_every_n_steps_inside_an_epoch(self):
        from unittest import mock

        with TempWorkdir():
            with mock.patch.object(checkpoints, "save", wraps=checkpoints.save) as save:
                train(tiny_1d("epochs=1", "train.steps_per_epoch=8",
                              "tracking.checkpoint_every_steps=3"), verbose=0)
            saved = [(c.args[2]["epoch"], c.args[2].get("step")) for c in save.call_args_list]
            self.assertEqual(saved, [(0, 3), (0, 6), (1, None)])


@pytest.mark.integration
class ResumeDetailsTest(tf.test.TestCase):
    def test_new_learning_rates_take_effect_and_are_recorded(self):
        with TempWorkdir() as work:
            first = train(tiny_1d("epochs=1"), verbose=0)
            second = train(tiny_1d("epochs=2", "train.g_learning_rate=1e-5"), verbose=0,
                           resume=True)
            self.assertAllClose(float(second.gan.g_optimizer.learning_rate), 1e-5)
            tags = mlflow.MlflowClient(work.uri).get_run(first.run_id).data.tags
            self.assertIn("train.g_learning_rate", tags["resumed_at_epoch_1"])

    def test_an_epoch_logged_before_a_kill_is_not_logged_twice(self):
        with TempWorkdir() as work:
            run_id = train(tiny_1d("epochs=2"), verbose=0).run_id
            # As if killed after logging epoch 2 but before its checkpoint: point the state back
            # at the epoch-1 checkpoint (the previous one is kept).
            rewind_to_oldest(work.path / "checkpoints" / "gaussian_1d", epoch=1)
            train(tiny_1d("epochs=3"), verbose=0, resume=True)
            self.assertEqual(metric_steps(work.uri, run_id), [1, 2, 3])

    def test_a_cosine_schedule_continues_its_decay_after_a_resume(self):
        with TempWorkdir() as work:
            cosine = ("epochs=3", "train.lr_schedule=cosine")
            straight = train(tiny_1d(*cosine, "name=straight"), verbose=0)
            self.assertAllClose(float(straight.gan.g_optimizer.learning_rate), 0.0, atol=1e-9)
            train(tiny_1d(*cosine, "name=resumed"), verbose=0)
            # As if killed after epoch 2: point the state back at the epoch-2 checkpoint.
            rewind_to_oldest(work.path / "checkpoints" / "resumed", epoch=2)
            resumed = train(tiny_1d(*cosine, "name=resumed"), verbose=0, resume=True)
            for a, b in zip(straight.gan.variables, resumed.gan.variables):
                self.assertAllClose(a, b, rtol=1e-5, atol=1e-6, msg=a.path)


@pytest.mark.integration
class RunOwnershipTest(tf.test.TestCase):
    """Checkpoints belong to one run; one process at a time writes a folder."""

    def test_a_new_run_never_takes_over_another_runs_checkpoints(self):
        with TempWorkdir() as work:
            first = train(tiny_1d("epochs=1"), verbose=0)
            folder = work.path / "checkpoints" / "gaussian_1d"
            first_files = sorted(p.name for p in (folder / first.run_id).iterdir())
            # a fresh run with another architecture reaches the same step number
            second = train(tiny_1d("epochs=1", "model.g_hidden=8"), verbose=0)
            state = checkpoints.read_state(folder)
            self.assertEqual(state["run_id"], second.run_id)
            self.assertTrue(state["checkpoint"].startswith(second.run_id + "/"))
            self.assertEqual(sorted(p.name for p in (folder / first.run_id).iterdir()),
                             first_files, "the first run's files are left as they were")
            third = train(tiny_1d("epochs=2", "model.g_hidden=8"), verbose=0, resume=True)
            self.assertEqual(third.run_id, second.run_id)
            self.assertEqual(metric_steps(work.uri, second.run_id), [1, 2])

    def test_a_second_process_on_the_folder_gets_one_line(self):
        with TempWorkdir() as work:
            folder = work.path / "checkpoints" / "gaussian_1d"
            with checkpoints.exclusive(folder):
                with self.assertRaisesRegex(UserError, r"checkpoints/gaussian_1d is in use by "
                                                       r"another gan-pipeline process \(pid "
                                                       rf"{os.getpid()}\)"):
                    train(tiny_1d("epochs=1"), verbose=0)
            train(tiny_1d("epochs=1"), verbose=0)  # free again once the holder let go

    def test_a_run_left_running_by_a_killed_process_is_marked_killed(self):
        with TempWorkdir() as work:
            first = train(tiny_1d("epochs=1"), verbose=0)
            client = mlflow.MlflowClient(work.uri)
            client.update_run(first.run_id, status="RUNNING")  # as after kill -9
            train(tiny_1d("epochs=1"), verbose=0)
            self.assertEqual(client.get_run(first.run_id).info.status, "KILLED")

    def test_a_trained_run_whose_end_of_run_logging_was_cut_finishes_without_retraining(self):
        with TempWorkdir() as work:
            cfg = tiny_1d("epochs=1", "tracking.log_model=true")
            from unittest import mock

            from gan_pipeline import tracking
            with mock.patch.object(tracking, "log_generator", side_effect=KeyboardInterrupt):
                with self.assertRaises(KeyboardInterrupt):
                    train(cfg, verbose=0)
            client = mlflow.MlflowClient(work.uri)
            (run,) = client.search_runs([client.get_experiment_by_name("gaussian_1d")
                                         .experiment_id])
            self.assertNotEqual(run.info.status, "FINISHED")
            done = train(cfg, verbose=0, resume=True)
            self.assertEqual(done.run_id, run.info.run_id)
            self.assertEqual(int(done.gan.d_optimizer.iterations), 256 // 32, "not retrained")
            self.assertEqual(client.get_run(run.info.run_id).info.status, "FINISHED")
            self.assertIn("generator_model_uri", client.get_run(run.info.run_id).data.tags)
            self.assertEqual(metric_steps(work.uri, run.info.run_id), [1])


@pytest.mark.integration
class MidEpochResumeTest(tf.test.TestCase):
    def test_a_mid_epoch_checkpoint_continues_exactly_at_its_step(self):
        with TempWorkdir() as work:
            sets = ("epochs=2", "train.steps_per_epoch=8")
            straight = train(tiny_1d(*sets, "name=straight"), verbose=0)
            cut = tiny_1d(*sets, "name=cut", "tracking.checkpoint_every_steps=3")
            train(cut, verbose=0)
            # As if killed at epoch 2, step 6: point the state at that mid-epoch checkpoint
            # (ckpt-14 after 8 + 6 D steps; the run keeps its last two).
            mid = rewind_to_oldest(work.path / "checkpoints" / "cut", epoch=1, step=6)
            self.assertEqual(mid.stem, "ckpt-14")
            resumed = train(cut, verbose=0, resume=True)
            self.assertEqual(int(resumed.gan.d_optimizer.iterations), 16, "2 steps were left")
            for a, b in zip(straight.gan.variables, resumed.gan.variables):
                self.assertAllClose(a, b, rtol=1e-5, atol=1e-6, msg=a.path)


@pytest.mark.integration
class StepsPerExecutionTest(tf.test.TestCase):
    """Several batches per call of the compiled step train the same weights, stop, checkpoint
    and resume at the same steps as one batch per call."""

    def test_calls_of_several_steps_train_checkpoint_and_resume_exactly(self):
        from unittest import mock

        with TempWorkdir() as work:
            sets = ("epochs=2", "train.steps_per_epoch=8")
            one = train(tiny_1d(*sets, "name=one", "train.steps_per_execution=1"), verbose=0)
            cut = tiny_1d(*sets, "name=four", "train.steps_per_execution=4",
                          "tracking.checkpoint_every_steps=3")
            with mock.patch.object(checkpoints, "save", wraps=checkpoints.save) as save:
                four = train(cut, verbose=0)
            self.assertEqual(four.gan.steps_per_execution, 4)
            params = mlflow.MlflowClient(work.uri).get_run(four.run_id).data.params
            self.assertEqual(params["resolved.steps_per_execution"], "4")
            for a, b in zip(one.gan.variables, four.gan.variables):
                self.assertAllClose(a, b, rtol=1e-5, atol=1e-6, msg=a.path)
            # a save is due every 3 steps; calls of 4 reach it at step 4 (step 8 ends the epoch)
            saved = [(c.args[2]["epoch"], c.args[2].get("step")) for c in save.call_args_list]
            self.assertEqual(saved, [(0, 4), (1, None), (1, 4), (2, None)])
            # As if killed in epoch 2 after step 4: resume with calls of 8 asked for. Calls of 4
            # run (the largest that divides both the epoch and the steps done).
            rewind_to_oldest(work.path / "checkpoints" / "four", epoch=1, step=4)
            resumed = train(tiny_1d(*sets, "name=four", "train.steps_per_execution=8"),
                            verbose=0, resume=True)
            self.assertEqual(int(resumed.gan.d_optimizer.iterations), 16)
            self.assertEqual(resumed.gan.steps_per_execution, 4)
            for a, b in zip(one.gan.variables, resumed.gan.variables):
                self.assertAllClose(a, b, rtol=1e-5, atol=1e-6, msg=a.path)

    def test_the_count_divides_the_epoch_and_the_steps_done(self):
        from gan_pipeline import distribute

        self.assertEqual(distribute.steps_per_execution(32, 468), 26)
        self.assertEqual(distribute.steps_per_execution(32, 468, done=100), 4)
        self.assertEqual(distribute.steps_per_execution(8, 5), 5)
        self.assertEqual(distribute.steps_per_execution(7, 13), 1)
        self.assertEqual(distribute.steps_per_execution(0, 468),
                         max(k for k in range(1, distribute.AUTO_STEPS_PER_EXECUTION["CPU"] + 1)
                             if 468 % k == 0))


@pytest.mark.process
class StoreTest(tf.test.TestCase):
    def test_two_processes_creating_a_fresh_sqlite_store_both_succeed(self):
        with TempWorkdir(store=False) as work:
            code = ("import sys; from gan_pipeline import tracking; "
                    "tracking.configure(sys.argv[1]); print('ok')")
            procs = [subprocess.Popen([sys.executable, "-c", code, work.uri],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for _ in range(2)]
            for proc in procs:
                out, err = proc.communicate(timeout=300)
                self.assertEqual(proc.returncode, 0, err[-2000:])
                self.assertIn("ok", out)
            self.assertEqual(mlflow.MlflowClient(work.uri).search_experiments()[0].name,
                             "Default")

    def test_a_password_in_the_tracking_uri_is_never_written_anywhere(self):
        with TempWorkdir() as work:
            port = free_port()
            server = subprocess.Popen(
                [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
                 "--port", str(port), "--backend-store-uri", work.uri,
                 "--default-artifact-root", str(work.path / "artifacts"), "--workers", "1"],
                cwd=work.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                import requests

                for _ in range(120):
                    try:
                        if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                            break
                    except requests.RequestException:
                        time.sleep(0.5)
                env = {**os.environ, "MLFLOW_TRACKING_URI": f"http://alice:s3cret@127.0.0.1:{port}"}
                result = subprocess.run([SCRIPT, "train", "--config",
                                         str(REPO / "pipelines/gaussian_1d.toml"),
                                         "--set", "epochs=1", "--set", "data.num_examples=256",
                                         "--set", "tracking.log_model=false"],
                                        cwd=work.path, env=env, capture_output=True, text=True,
                                        timeout=600)
                self.assertEqual(result.returncode, 0, result.stderr[-2000:])
                self.assertNotIn("s3cret", result.stdout + result.stderr)
                self.assertIn("http://***@127.0.0.1", result.stdout)
                for path in work.path.rglob("*"):
                    if path.is_file() and path.suffix in (".json", ".db", ".yaml", ".txt"):
                        self.assertNotIn(b"s3cret", path.read_bytes(), path)
                (run,) = mlflow.MlflowClient(work.uri).search_runs(
                    [mlflow.MlflowClient(work.uri).get_experiment_by_name("gaussian_1d")
                     .experiment_id])
                self.assertNotIn("s3cret", json.dumps(run.data.params))
            finally:
                server.terminate()
                server.wait(timeout=60)
