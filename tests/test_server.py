"""`make server AUTH=1`: MLflow's tracking server behind its basic auth. A client with a user's
credentials logs a run; one without them, or with a wrong password, is refused before anything
is trained or written, in one `gan-pipeline: error:` line; no password is ever printed."""

import os
from unittest import mock

import mlflow
import mlflow.server
import pytest
import tensorflow as tf

from gan_pipeline import server
from gan_pipeline.errors import UserError
from tests.helpers import REPO, TempWorkdir, TrackingServer
from tests.test_cli import run_cli, tiny_overrides

ADMIN_PASSWORD = "adm1n-Pa55-for-this-test"
USER, USER_PASSWORD = "alice", "al1ce-Pa55-for-this-test"
TRAIN = ["train", "--config", REPO / "pipelines/gaussian_1d.toml", "--set", "data.n_points=20",
         "--set", "data.num_examples=64", "--set", "tracking.log_model=false",
         *tiny_overrides("gaussian_1d", epochs=1)]


def _without_login(environ):
    return {k: v for k, v in environ.items()
            if k not in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                         "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_URI")}


class ServerSettingsTest(tf.test.TestCase):
    def test_first_start_needs_the_admin_password_and_writes_no_secret(self):
        with TempWorkdir(store=False) as work:
            with self.assertRaisesRegex(UserError, "MLFLOW_AUTH_ADMIN_PASSWORD"):
                server.auth_environment(work.path, {})
            self.assertEqual(list(work.path.iterdir()), [], "nothing written before the error")
            env = server.auth_environment(work.path, {"MLFLOW_AUTH_ADMIN_PASSWORD": "pw-123456"})
            ini = (work.path / "basic_auth.ini").read_text()
            self.assertNotIn("pw-123456", ini)
            self.assertIn(f"database_uri = sqlite:///{work.path.resolve() / 'basic_auth.db'}", ini)
            self.assertEqual(env["MLFLOW_AUTH_CONFIG_PATH"], str(work.path / "basic_auth.ini"))
            key = work.path / "basic_auth.key"
            self.assertEqual(key.stat().st_mode & 0o777, 0o600)
            self.assertEqual(env["MLFLOW_FLASK_SERVER_SECRET_KEY"], key.read_text())
            again = server.auth_environment(work.path, {"MLFLOW_AUTH_ADMIN_PASSWORD": "x"})
            self.assertEqual(again["MLFLOW_FLASK_SERVER_SECRET_KEY"], key.read_text(),
                             "a restarted server keeps its key")

    def test_the_command_line_carries_no_credentials(self):
        argv = server.command(REPO, "127.0.0.1", 5000, auth=True)
        self.assertEqual(argv[1:2], ["server"])
        self.assertIn("basic-auth", argv)
        self.assertNotIn("--app-name", server.command(REPO, "127.0.0.1", 5000, auth=False))

    def test_bad_server_arguments_are_one_error_line(self):
        code, _, err = run_cli("server", "--store", "/no/such/folder")
        self.assertEqual(code, 2)
        self.assertRegex(err, r"^gan-pipeline: error: server store '/no/such/folder' is not a "
                              r"folder[^\n]*\n$")


@pytest.mark.process
class BasicAuthServerTest(tf.test.TestCase):
    def test_a_login_is_needed_to_log_and_a_user_with_one_logs_a_run(self):
        clean = _without_login(os.environ)
        with TempWorkdir(store=False) as work, TrackingServer(
                work.path, auth=True,
                environ={"MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}) as srv:
            # The admin adds a user, the way docs/scale.md says.
            with mock.patch.dict(os.environ, {**clean, "MLFLOW_TRACKING_USERNAME": "admin",
                                              "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD},
                                 clear=True):
                mlflow.server.get_app_client("basic-auth", tracking_uri=srv.uri).create_user(
                    USER, USER_PASSWORD)

            # No login, then a wrong password: one error line each, and nothing on the server.
            for login, says in (({}, "asks for a login"),
                                ({"MLFLOW_TRACKING_USERNAME": USER,
                                  "MLFLOW_TRACKING_PASSWORD": "wrong"}, "refused the login")):
                with self.subTest(login=sorted(login)), mock.patch.dict(
                        os.environ, {**clean, "MLFLOW_TRACKING_URI": srv.uri, **login},
                        clear=True):
                    code, out, err = run_cli(*TRAIN)
                    self.assertEqual(code, 2, err)
                    lines = err.strip().splitlines()
                    self.assertLen(lines, 1, err)
                    self.assertStartsWith(lines[0], "gan-pipeline: error: MLflow tracking server")
                    self.assertIn(says, lines[0])
                    self.assertIn("MLFLOW_TRACKING_USERNAME", lines[0])

            # With alice's login the same command trains and logs its run there.
            user = {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": USER_PASSWORD}
            with mock.patch.dict(os.environ, {**clean, "MLFLOW_TRACKING_URI": srv.uri, **user},
                                 clear=True):
                code, out, err = run_cli(*TRAIN)
                self.assertEqual(code, 0, err)
                client = mlflow.MlflowClient(srv.uri)
                experiment = client.get_experiment_by_name("gaussian_1d")
                runs = client.search_runs([experiment.experiment_id])
                self.assertLen(runs, 1, "only the logged-in run reached the server")
                self.assertEqual(runs[0].info.status, "FINISHED")
                self.assertEqual(runs[0].info.user_id, USER)
                self.assertIn("d_loss", runs[0].data.metrics)
                params = " ".join(f"{k}={v}" for k, v in runs[0].data.params.items())
            for secret in (ADMIN_PASSWORD, USER_PASSWORD):
                self.assertNotIn(secret, out + err + params + srv.log())
            self.assertFalse((work.path / "mlflow.db").exists(), "nothing fell back to a local store")


if __name__ == "__main__":
    tf.test.main()
