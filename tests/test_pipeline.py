"""`gan-pipeline run`: stages as nested MLflow runs, Keras Tuner trials judged by quality, reuse
of finished stages, registration with a champion alias, and searches that resume."""

import os
import subprocess
import sys
from pathlib import Path

import keras_tuner as kt
import mlflow
import pytest
import tensorflow as tf

from gan_pipeline import config, tracking, tuning
from gan_pipeline.pipeline.runner import Pipeline
from tests.helpers import REPO, TINY, TempWorkdir, TrackingServer, free_port

SCRIPT = str(Path(sys.executable).parent / "gan-pipeline")

# A 1-D pipeline small enough for seconds: 10 steps per epoch, searches of 40-step epochs.
TINY_1D = (["epochs=2", "data.n_points=20", "data.num_examples=320", "batch_size=32",
            "eval.n_samples=500", "eval.final_n_samples=1000", "tune.n_samples=500",
            "tune.steps_per_epoch=40", "tune.epochs=1", "tune.max_trials=2", "tune.tuner=random",
            "tracking.grid_size=16",
            # fast learning rates, so that 40-step trials already spread their samples
            "tune.space.train.d_learning_rate={ min = 3e-3, max = 1e-2, log = true }",
            "tune.space.train.g_learning_rate={ min = 3e-3, max = 1e-2, log = true }"]
           + [f"model.{k}={v}" for k, v in TINY["gaussian_1d"].items()])


def tiny_1d(*extra):
    return config.load(REPO / "pipelines/gaussian_1d.toml", TINY_1D + list(extra))


def in_process(cfg) -> Pipeline:
    """A pipeline whose stages run in this process: these tests are about what the stages do
    (StageProcessTest covers the stages' own processes, what `gan-pipeline run` uses)."""
    return Pipeline(cfg, verbose=0, isolate_stages=False)


def children(client, experiment_id, parent_id):
    return client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")


@pytest.mark.integration
class PipelineRunTest(tf.test.TestCase):
    def test_stages_trials_registration_and_reuse(self):
        with TempWorkdir() as work:
            first = in_process(tiny_1d()).run()
            client = mlflow.MlflowClient(work.uri)
            self.assertEqual(list(first), ["prepare", "tune", "train", "evaluate", "register"])
            self.assertTrue(all(r.status == "ran" for r in first.values()))
            runs = {s: client.get_run(r.run_id) for s, r in first.items()}
            parent_id = runs["prepare"].data.tags["mlflow.parentRunId"]
            for stage, run in runs.items():  # one child run per stage, under one parent
                self.assertEqual(run.data.tags["mlflow.parentRunId"], parent_id, stage)
                self.assertEqual(run.data.tags["stage"], stage)
                self.assertEqual(run.info.status, "FINISHED")
            parent = client.get_run(parent_id)
            self.assertEqual(parent.info.status, "FINISHED")
            self.assertEqual(parent.data.tags["stage.train"], f"ran {first['train'].run_id}")

            # prepare logged the data as an MLflow dataset input with its profile
            inputs = runs["prepare"].inputs.dataset_inputs
            self.assertEqual(len(inputs), 1)
            self.assertIn("gaussian_1d", inputs[0].dataset.name)
            profile = mlflow.artifacts.load_dict(f"runs:/{first['prepare'].run_id}/dataset.json")
            self.assertEqual((profile["examples"], profile["shape"]), (320, [20]))

            # tune: each trial a nested run with its settings, objective and pictures
            trials = children(client, runs["tune"].info.experiment_id, first["tune"].run_id)
            self.assertEqual(len(trials), 2)
            for trial in trials:
                self.assertEqual(trial.data.tags["trial_outcome"], "completed")
                self.assertIn("train.d_learning_rate", trial.data.params)
                self.assertIn("objective", trial.data.metrics)
                self.assertTrue(any(a.path == "images" for a in
                                    client.list_artifacts(trial.info.run_id)))
            best = mlflow.artifacts.load_dict(
                f"runs:/{first['tune'].run_id}/best_hyperparameters.json")
            best_trial = min(trials, key=lambda t: t.data.metrics["objective"])
            self.assertAlmostEqual(best["objective"], best_trial.data.metrics["objective"],
                                   places=6)
            self.assertEqual(best["objective_name"], "ks")

            # train ran with the best settings; evaluate logged into the train run too
            train_params = runs["train"].data.params
            for key, value in best["values"].items():
                self.assertAlmostEqual(float(train_params[key]), value, places=10)
            self.assertNotIn("tune.tuner", train_params)
            # its trials' 40-batch epochs are not its 10-batch ones: the pick trained from the start
            self.assertIsNone(best["continue"])
            self.assertNotIn("continued_from_run", runs["train"].data.tags)
            self.assertEqual([m.step for m in client.get_metric_history(
                first["train"].run_id, "d_loss")], [1, 2])
            train_run = client.get_run(first["train"].run_id)
            self.assertIn("quality/ks", train_run.data.metrics)
            self.assertEqual(train_run.data.metrics["quality/ks"],
                             client.get_run(first["evaluate"].run_id).data.metrics["quality/ks"])

            # register: version 1 holds the champion alias
            holder = client.get_model_version_by_alias("gaussian_1d", "champion")
            self.assertEqual(str(holder.version), "1")
            self.assertEqual(holder.run_id, first["train"].run_id)

            # a second run reuses every stage: same run ids, no new stage runs, no new version
            second = in_process(tiny_1d()).run()
            self.assertEqual({s: r.status for s, r in second.items()},
                             {s: "reused" for s in first})
            self.assertEqual({s: r.run_id for s, r in second.items()},
                             {s: r.run_id for s, r in first.items()})
            self.assertEqual(len(client.search_model_versions("name = 'gaussian_1d'")), 1)
            parents = client.search_runs([runs["tune"].info.experiment_id],
                                         "tags.kind = 'pipeline'")
            self.assertEqual(len(parents), 2)

            # --force train recomputes train and what follows, and reuses the rest
            third = in_process(tiny_1d()).run(force="train")
            self.assertEqual({s: r.status for s, r in third.items()},
                             {"prepare": "reused", "tune": "reused", "train": "ran",
                              "evaluate": "ran", "register": "ran"})
            self.assertNotEqual(third["train"].run_id, first["train"].run_id)
            self.assertEqual(len(client.search_model_versions("name = 'gaussian_1d'")), 2)

            # --force tune searches again, in a new Keras Tuner project, with new trials
            tuned = in_process(tiny_1d()).run(only="tune", force="tune")
            self.assertEqual(tuned["tune"].status, "ran")
            self.assertNotEqual(tuned["tune"].run_id, first["tune"].run_id)
            self.assertEqual(len(children(client, runs["tune"].info.experiment_id,
                                          tuned["tune"].run_id)), 2)

            # a changed training setting makes train stale but keeps prepare and tune
            fourth = in_process(tiny_1d("epochs=3")).run(only="train")
            self.assertEqual({s: r.status for s, r in fourth.items()},
                             {"prepare": "reused", "tune": "reused", "train": "ran"})
            self.assertEqual(fourth["tune"].run_id, tuned["tune"].run_id, "the newest search")

    def test_only_needs_finished_upstream_stages(self):
        with TempWorkdir():
            from gan_pipeline.errors import UserError

            with self.assertRaisesRegex(UserError, "stage 'prepare' has no finished run.*--only"):
                in_process(tiny_1d()).run(only="train")
            with self.assertRaisesRegex(UserError, "--only 'trian' is not one of"):
                in_process(tiny_1d()).run(only="trian")

    def test_adopt_file_searches_for_the_record_and_trains_the_file_settings(self):
        with TempWorkdir() as work:
            # the file's rates lie inside the space: its own settings are the first trial
            own = ["train.d_learning_rate=5e-3", "train.g_learning_rate=4e-3",
                   "tune.max_trials=3"]
            first = in_process(tiny_1d(*own, "tune.adopt=file")).run()
            client = mlflow.MlflowClient(work.uri)
            tune = client.get_run(first["tune"].run_id)
            result = mlflow.artifacts.load_dict(
                f"runs:/{first['tune'].run_id}/best_hyperparameters.json")
            self.assertEqual(result["file_values"], {"train.d_learning_rate": 5e-3,
                                                     "train.g_learning_rate": 4e-3,
                                                     "train.beta_1": 0.5})
            trials = children(client, tune.info.experiment_id, tune.info.run_id)
            file_trial = [t for t in trials
                          if float(t.data.params["train.d_learning_rate"]) == 5e-3
                          and float(t.data.params["train.g_learning_rate"]) == 4e-3
                          and float(t.data.params["train.beta_1"]) == 0.5]
            self.assertEqual(len(file_trial), 1)
            self.assertAlmostEqual(tune.data.metrics["file_objective"],
                                   file_trial[0].data.metrics["objective"], places=6)
            self.assertEqual(tune.data.params["adopt"], "file")
            self.assertIn("file_ks", first["tune"].figures)
            # train ran with the file's rates, whatever the search found best
            params = client.get_run(first["train"].run_id).data.params
            self.assertEqual(float(params["train.d_learning_rate"]), 5e-3)
            self.assertEqual(float(params["train.g_learning_rate"]), 4e-3)
            # and does not read the search: a new search leaves the trained run standing
            searched = in_process(tiny_1d(*own, "tune.adopt=file")).run(
                only="tune", force="tune")
            again = in_process(tiny_1d(*own, "tune.adopt=file")).run()
            self.assertEqual(again["tune"].run_id, searched["tune"].run_id)
            self.assertNotEqual(again["tune"].run_id, first["tune"].run_id)
            self.assertEqual((again["train"].status, again["train"].run_id),
                             ("reused", first["train"].run_id))

    def test_adopt_best_continues_the_best_trial_instead_of_training_again(self):
        with TempWorkdir() as work:
            # trials of the train run's own epochs (10 batches) are its first epochs
            first = in_process(tiny_1d("tune.steps_per_epoch=0", "tune.epochs=1",
                                       "epochs=3")).run()
            client = mlflow.MlflowClient(work.uri)
            best = mlflow.artifacts.load_dict(
                f"runs:/{first['tune'].run_id}/best_hyperparameters.json")
            go_on = best["continue"]
            self.assertEqual(go_on["epochs"], 1)
            trial = client.get_run(go_on["trial_run_id"])
            self.assertEqual(trial.data.tags["mlflow.parentRunId"], first["tune"].run_id)
            self.assertAlmostEqual(trial.data.metrics["objective"], best["objective"], places=6)
            train = client.get_run(first["train"].run_id)
            self.assertEqual(train.data.tags["continued_from_run"], go_on["trial_run_id"])
            self.assertEqual(train.data.params["resolved.continued_from_epoch"], "1")
            # the run trained epochs 2 and 3 only, continuing the trial's optimizer steps
            history = client.get_metric_history(train.info.run_id, "d_loss")
            self.assertEqual([m.step for m in history], [2, 3])
            self.assertIn("quality/ks", client.get_run(train.info.run_id).data.metrics)

    def test_a_search_of_whole_runs_is_not_trained_again(self):
        with TempWorkdir():
            from gan_pipeline import checkpoints, data, sampling
            from gan_pipeline.factory import gan_for

            cfg = tiny_1d("tune.steps_per_epoch=0", "tune.epochs=2", "epochs=2")
            first = in_process(cfg).run()
            best = mlflow.artifacts.load_dict(
                f"runs:/{first['tune'].run_id}/best_hyperparameters.json")
            go_on = best["continue"]
            self.assertEqual(go_on["epochs"], 2)
            # the served generator is the best trial's, as its checkpoint holds it
            tuned = cfg.replace(best["values"])
            source = data.open_source(tuned)
            gan = gan_for(tuned, source, total_batches=20)
            folder = Path(go_on["folder"])
            checkpoints.restore(folder, gan, checkpoints.read_state(folder))
            served = sampling.load_generator(first["train"].run_id)
            z = tf.random.stateless_normal((64, *served.inputs[0].shape[1:]), seed=(1, 2))
            self.assertAllClose(served(z), gan.exported(z), atol=1e-5)
            self.assertEqual(mlflow.MlflowClient().get_metric_history(
                first["train"].run_id, "d_loss"), [])

    def test_without_tune_train_uses_the_file_settings(self):
        with TempWorkdir() as work:
            cfg = tiny_1d("stages=['prepare', 'train', 'evaluate']", "train.g_learning_rate=3e-4")
            results = in_process(cfg).run()
            self.assertEqual(list(results), ["prepare", "train", "evaluate"])
            params = mlflow.MlflowClient(work.uri).get_run(results["train"].run_id).data.params
            self.assertEqual(float(params["train.g_learning_rate"]), 3e-4)


@pytest.mark.integration
class RegisterTest(tf.test.TestCase):
    def test_alias_moves_only_to_a_better_version(self):
        with TempWorkdir():
            tracking.configure()
            mlflow.set_experiment("register")
            uris = []
            for _ in range(3):
                with mlflow.start_run():
                    import keras

                    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
                    uris.append(mlflow.keras.log_model(model, name="generator").model_uri)
            first = tracking.register_generator(uris[0], "g", "champion", "ks", 0.2)
            worse = tracking.register_generator(uris[1], "g", "champion", "ks", 0.3)
            better = tracking.register_generator(uris[2], "g", "champion", "ks", 0.1)
            self.assertEqual([first["champion"], worse["champion"], better["champion"]],
                             [True, False, True])
            self.assertEqual(worse["previous"], {"version": "1", "ks": 0.2})
            holder = mlflow.MlflowClient().get_model_version_by_alias("g", "champion")
            self.assertEqual(str(holder.version), "3")


def trial_runs(uri, parent_id):
    client = mlflow.MlflowClient(uri)
    run = client.get_run(parent_id)
    return children(client, run.info.experiment_id, parent_id)


@pytest.mark.integration
class TuningTest(tf.test.TestCase):
    def _search(self, cfg, work, parent_name="tune"):
        tracking.configure()
        mlflow.set_experiment("t")
        with mlflow.start_run(run_name=parent_name) as run:
            result = tuning.search(cfg, work.path / "tuner", "p", run.info.run_id)
        return result, run.info.run_id

    def test_hyperband_trials_train_the_epochs_it_asks_for(self):
        with TempWorkdir() as work:
            cfg = tiny_1d("tune.tuner=hyperband", "tune.epochs=3", "tune.hyperband_factor=3")
            result, tune_id = self._search(cfg, work)
            runs = trial_runs(work.uri, tune_id)
            self.assertEqual(len(runs), len(result["trials"]))
            continued = 0
            for run in runs:
                p = run.data.params
                first, last = int(p["tuner/initial_epoch"]), int(p["tuner/epochs"])
                steps = [m.step for m in mlflow.MlflowClient(work.uri).get_metric_history(
                    run.info.run_id, "eval/ks")]
                self.assertEqual(sorted(steps), list(range(first + 1, last + 1)),
                                 f"trial {p['trial_id']} trained epochs {steps}")
                continued += first > 0
            self.assertGreater(continued, 0, "Hyperband continued at least one trial")
            # each trial is scored by the generator it ends with, in MLflow and in the tuner
            client = mlflow.MlflowClient(work.uri)
            scores = {t["trial_id"]: t["objective"] for t in result["trials"]}
            for run in runs:
                ks = sorted(client.get_metric_history(run.info.run_id, "eval/ks"),
                            key=lambda m: m.step)
                self.assertAlmostEqual(run.data.metrics["objective"], ks[-1].value, places=6)
                self.assertAlmostEqual(scores[run.data.params["trial_id"]], ks[-1].value,
                                       places=6)

    def test_the_tuner_hears_a_trials_figure_at_its_last_epoch_only(self):
        from gan_pipeline.callbacks import TunerObjective

        objective = TunerObjective("ks")
        objective.set_params({"epochs": 3})
        heard = []
        for epoch, ks in enumerate([0.01, 0.2, 0.05]):  # the best epoch is not the last
            logs = {"eval/ks": ks}
            objective.on_epoch_end(epoch, logs)
            heard.append(logs.get("ks"))
        self.assertEqual(heard, [None, None, 0.05])

    def test_a_search_continues_where_it_stopped(self):
        with TempWorkdir() as work:
            one, tune_id = self._search(tiny_1d("tune.max_trials=1"), work)
            self.assertEqual(len(one["trials"]), 1)
            two, _ = self._search(tiny_1d("tune.max_trials=2"), work)
            self.assertEqual(len(two["trials"]), 2)
            self.assertEqual(two["trials"][0], one["trials"][0], "the first trial is kept")
            client = mlflow.MlflowClient(work.uri)
            all_trials = client.search_runs([client.get_run(tune_id).info.experiment_id],
                                            "tags.stage = 'trial'")
            self.assertEqual(len(all_trials), 2, "only the missing trial ran again")

    def test_diverging_trials_stop_and_are_marked_failed(self):
        with TempWorkdir() as work:
            # max_failed_trials=1: Keras Tuner gives up after the first failure (with a
            # RuntimeError the search turns into a clear message)
            cfg = tiny_1d("tune.max_trials=3", "tune.max_failed_trials=1")
            # data far outside float16's range: every trial's loss is NaN at its first step
            cfg = cfg.replace({"data.mean": 1e6, "tune.space": {
                "train.precision": {"values": ["mixed_float16"]}}})
            from gan_pipeline.errors import UserError

            with self.assertRaisesRegex(UserError, "without one successful trial"):
                self._search(cfg, work)
            runs = mlflow.MlflowClient(work.uri).search_runs(
                [mlflow.get_experiment_by_name("t").experiment_id], "tags.stage = 'trial'")
            self.assertGreaterEqual(len(runs), 1)
            for run in runs:
                self.assertEqual(run.info.status, "FAILED")
                self.assertEqual(run.data.tags["trial_outcome"], "diverged")
                self.assertRegex(run.data.tags["failure"], r"loss became nan at epoch 1")

    def test_list_choices_round_trip(self):
        hp = kt.HyperParameters()
        space = {"model.d_filters": {"values": [[4, 8], [8, 16]]},
                 "train.d_steps": {"min": 1, "max": 3, "log": False},
                 "model.g_hidden": {"min": 8, "max": 64, "log": True},
                 "train.beta_1": {"min": 0.1, "max": 0.9, "log": False}}
        tuning.declare(hp, space)
        values = tuning.chosen(hp, space)
        self.assertEqual(values["model.d_filters"], [4, 8])
        self.assertIsInstance(values["train.d_steps"], int)
        self.assertBetween(values["model.g_hidden"], 8, 64)
        self.assertBetween(values["train.beta_1"], 0.1, 0.9)

    def test_the_files_own_settings_are_every_searchs_first_candidate(self):
        space = {"train.d_learning_rate": {"min": 1e-4, "max": 1e-3, "log": True},
                 "train.beta_1": {"values": [0.5, 0.0]},
                 "model.d_filters": {"values": [[4, 8], [8, 16]]},
                 "train.d_steps": {"min": 1, "max": 3, "log": False}}
        file = {"train.d_learning_rate": 2e-4, "train.beta_1": 0.0, "model.d_filters": [8, 16],
                "train.d_steps": 2}
        objective = kt.Objective("frechet_distance", "min")
        oracles = {"random": lambda: kt.oracles.RandomSearchOracle(objective, max_trials=9,
                                                                    seed=1),
                   "hyperband": lambda: kt.oracles.HyperbandOracle(objective, max_epochs=9,
                                                                   seed=1),
                   "bayesian": lambda: kt.oracles.BayesianOptimizationOracle(
                       objective, max_trials=9, seed=1)}
        for name, make in oracles.items():
            with self.subTest(name), TempWorkdir() as work:
                oracle = make()
                oracle._set_project_dir(str(work.path), name)
                hp = kt.HyperParameters()
                tuning.declare(hp, space, file)
                oracle.update_space(hp)
                tuning.file_first(oracle)
                first, second = oracle.create_trial("a"), oracle.create_trial("b")
                self.assertEqual(tuning.chosen(first.hyperparameters, space), file)
                self.assertNotEqual(tuning.chosen(second.hyperparameters, space), file)
        # a file value outside the space is not offered: the search's own default instead
        hp = kt.HyperParameters()
        tuning.declare(hp, space, {**file, "train.d_learning_rate": 5e-5, "train.beta_1": 0.9})
        self.assertBetween(hp.get("train.d_learning_rate"), 1e-4, 1e-3)
        self.assertIn(hp.get("train.beta_1"), [0.5, 0.0])


@pytest.mark.process
class DistributedTuningTest(tf.test.TestCase):
    def test_a_chief_and_two_workers_share_one_search(self):
        # the three processes record to one MLflow tracking server, as a team would
        with TempWorkdir() as work, TrackingServer(work.path) as server:
            port = str(free_port())
            args = [SCRIPT, "run", str(REPO / "pipelines/gaussian_1d.toml"), "--only", "tune"]
            sets = [a for s in TINY_1D + ["tune.max_trials=4", "stages=['tune']"]
                    for a in ("--set", s)]
            base = {**os.environ, "MLFLOW_TRACKING_URI": server.uri, "KERASTUNER_ORACLE_IP":
                    "127.0.0.1", "KERASTUNER_ORACLE_PORT": port, "CUDA_VISIBLE_DEVICES": ""}
            procs = {}
            for tuner_id in ("chief", "tuner0", "tuner1"):
                env = {**base, "KERASTUNER_TUNER_ID": tuner_id}
                # output to a file each: waiting on one process while another's unread pipe
                # fills would block them both
                with open(work.path / f"{tuner_id}.log", "w") as log:
                    procs[tuner_id] = subprocess.Popen(
                        args + sets, env=env, cwd=work.path, stdout=log,
                        stderr=subprocess.STDOUT, text=True)
            for proc in procs.values():
                proc.wait(timeout=600)
            outs = {k: (work.path / f"{k}.log").read_text() for k in procs}
            for tuner_id, proc in procs.items():
                self.assertEqual(proc.returncode, 0, f"{tuner_id}:\n{outs[tuner_id][-3000:]}")
            mlflow.set_tracking_uri(server.uri)  # artifacts below are read through it
            client = mlflow.MlflowClient(server.uri)
            experiment = client.get_experiment_by_name("gaussian_1d").experiment_id
            tune = client.search_runs([experiment], "tags.stage = 'tune'")
            self.assertEqual(len(tune), 1)
            self.assertEqual(tune[0].info.status, "FINISHED")
            trials = children(client, experiment, tune[0].info.run_id)
            self.assertEqual(len(trials), 4)
            # which worker wins the race for each trial is up to them; only workers run trials
            by_worker = {t.data.tags["tuner_id"] for t in trials}
            self.assertTrue(by_worker and by_worker <= {"tuner0", "tuner1"}, by_worker)
            best = mlflow.artifacts.load_dict(
                f"runs:/{tune[0].info.run_id}/best_hyperparameters.json")
            self.assertEqual(len(best["trials"]), 4)


@pytest.mark.process
class StageProcessTest(tf.test.TestCase):
    """Stages run in child processes: a Ctrl-C reaches the training once, stops it cleanly, and
    the same command continues; the summary and the parent run report the memory."""

    def test_a_stage_process_reports_its_own_peak_not_its_parents(self):
        # Linux's ru_maxrss of a process started from a big one counts the parent's pages that
        # its exec replaced: a small child of this (TensorFlow-sized) test process would report
        # this process's size as its own peak.
        from gan_pipeline.pipeline import child

        ballast = bytearray(300 * 2**20)  # noqa: F841 (this process: at least 0.3 GB more)
        here = child.peak_resident_gb()
        report = subprocess.run(
            [sys.executable, "-c", "from gan_pipeline.pipeline import child; "
             "print(child.peak_resident_gb(), child.own_resident_gb())"],
            capture_output=True, text=True, check=True)
        peak, own = map(float, report.stdout.split())
        self.assertGreater(here, 0.3)
        self.assertBetween(peak, 0.001, here / 3)
        self.assertBetween(own, 0.0001, peak)

    def test_ctrl_c_in_the_train_stage_stops_cleanly_and_the_rerun_continues(self):
        import signal
        import time

        from gan_pipeline import checkpoints

        with TempWorkdir() as work:
            sets = [a for s in TINY_1D + ["epochs=6", "data.num_examples=6400",
                                          "stages=['prepare', 'train', 'evaluate']"]
                    for a in ("--set", s)]
            args = [SCRIPT, "run", str(REPO / "pipelines/gaussian_1d.toml"), *sets]
            with open(work.path / "first.log", "w") as log:
                proc = subprocess.Popen(args, cwd=work.path, stdout=log,
                                        stderr=subprocess.STDOUT, text=True)
            # the train stage's first checkpoint: training is under way in its own process
            deadline = time.time() + 600
            while not list(work.path.glob("checkpoints/*/*/gaussian_1d/state.json")):
                self.assertIsNone(proc.poll(), (work.path / "first.log").read_text()[-3000:])
                self.assertLess(time.time(), deadline, "no checkpoint in time")
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)  # to the pipeline's process, as a terminal would
            proc.wait(timeout=300)
            first = (work.path / "first.log").read_text()
            self.assertEqual(proc.returncode, 130, first[-3000:])
            self.assertIn("Pipeline stopped (KILLED)", first)
            self.assertNotIn("Traceback", first)
            client = mlflow.MlflowClient(work.uri)
            experiment = client.get_experiment_by_name("gaussian_1d").experiment_id
            (train_run,) = client.search_runs([experiment], "tags.stage = 'train'")
            self.assertEqual(train_run.info.status, "KILLED")
            (state_file,) = work.path.glob("checkpoints/*/*/gaussian_1d/state.json")
            done = checkpoints.read_state(state_file.parent)["epoch"]
            self.assertBetween(done, 1, 5)

            again = subprocess.run(args, cwd=work.path, capture_output=True, text=True,
                                   timeout=600)
            self.assertEqual(again.returncode, 0, again.stdout[-3000:] + again.stderr[-3000:])
            self.assertIn("[prepare] reused", again.stdout)
            self.assertIn(f"resumed after epoch {done}", again.stdout)
            train_run = client.get_run(train_run.info.run_id)
            self.assertEqual(train_run.info.status, "FINISHED")
            self.assertEqual([m.step for m in client.get_metric_history(
                train_run.info.run_id, "d_loss")], [1, 2, 3, 4, 5, 6])
            self.assertRegex(again.stdout, r"finished in [\d.]+ s, peak resident memory "
                                           r"[\d.]+ GB")
            parent = client.search_runs([experiment], "tags.kind = 'pipeline'",
                                        order_by=["attributes.start_time DESC"])[0]
            peaks = {k: v for k, v in parent.data.metrics.items()
                     if k.startswith("peak_memory_gb/")}
            self.assertEqual(set(peaks), {"peak_memory_gb/train", "peak_memory_gb/evaluate",
                                          "peak_memory_gb/total"})
            self.assertGreater(peaks["peak_memory_gb/total"], peaks["peak_memory_gb/train"])


@pytest.mark.integration
class PipelineErrorsTest(tf.test.TestCase):
    def test_tune_without_a_search_space_is_refused_before_any_run(self):
        from gan_pipeline.errors import UserError

        with TempWorkdir() as work:
            cfg = tiny_1d().replace({"tune.space": {}})
            with self.assertRaisesRegex(UserError, r"tune stage needs a search space.*stages"):
                in_process(cfg).run()
            self.assertFalse((work.path / "mlflow.db").exists() and mlflow.MlflowClient(
                work.uri).search_runs([e.experiment_id for e in mlflow.MlflowClient(
                    work.uri).search_experiments()]))
