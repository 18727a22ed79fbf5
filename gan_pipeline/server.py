"""``gan-pipeline server``: MLflow's tracking server over a store folder, optionally behind
MLflow's basic auth (``--auth``; what ``make server AUTH=1`` runs).

The store folder holds ``mlflow.db`` (runs) and ``mlruns/`` (artifacts, sent through the server,
so clients need no shared disk). With ``--auth`` it also holds ``basic_auth.ini`` (written here,
no secrets in it), ``basic_auth.db`` (MLflow's users) and ``basic_auth.key`` (the login form's
CSRF key, owner-only, unless ``MLFLOW_FLASK_SERVER_SECRET_KEY`` is set). Credentials only ever come from the
environment, which MLflow reads itself:

- the server's admin, created on first start: ``MLFLOW_AUTH_ADMIN_USERNAME`` (default ``admin``)
  and ``MLFLOW_AUTH_ADMIN_PASSWORD``;
- every client: ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``.

Nothing here prints or passes a password on a command line.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from gan_pipeline.errors import UserError

AUTH_INI = """\
# Written by `gan-pipeline server --auth` on every start; no credentials in it: the admin comes
# from MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD on the first start.
[mlflow]
# What a logged-in user may do with other users' experiments and models (theirs: everything).
default_permission = READ
database_uri = sqlite:///{users}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


def auth_environment(store: Path, environ: dict | None = None) -> dict:
    """The environment for ``mlflow server --app-name basic-auth`` over ``store``: writes
    ``store/basic_auth.ini`` and points ``MLFLOW_AUTH_CONFIG_PATH`` at it. The first start (no
    users yet) needs an admin password in the environment; later ones do not."""
    environ = dict(os.environ if environ is None else environ)
    users = store / "basic_auth.db"
    if not users.is_file() and not environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        raise UserError("make server AUTH=1 needs MLFLOW_AUTH_ADMIN_PASSWORD in the environment "
                        "on its first start (it creates the admin user, named by "
                        "MLFLOW_AUTH_ADMIN_USERNAME, default 'admin'): export it, then start "
                        "again; clients log in with MLFLOW_TRACKING_USERNAME and "
                        "MLFLOW_TRACKING_PASSWORD")
    ini = store / "basic_auth.ini"
    partial = ini.with_name(ini.name + ".partial")
    partial.write_text(AUTH_INI.format(users=users.resolve()))
    os.replace(partial, ini)
    environ["MLFLOW_AUTH_CONFIG_PATH"] = str(ini.resolve())
    # The login form's CSRF key: the caller's, else one kept (owner-only) beside the users, so
    # that a restarted server accepts the sessions it signed.
    if not environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        environ["MLFLOW_FLASK_SERVER_SECRET_KEY"] = _secret_key(store / "basic_auth.key")
    return environ


def _secret_key(path: Path) -> str:
    if not path.is_file():
        partial = path.with_name(path.name + ".partial")
        handle = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(handle, "w") as out:
            out.write(secrets.token_hex(32))
        os.replace(partial, path)
    return path.read_text().strip()


def command(store: Path, host: str, port: int, auth: bool, workers: int | None = None) -> list[str]:
    """The ``mlflow server`` command line (no credentials on it)."""
    mlflow_cli = str(Path(sys.executable).parent / "mlflow")
    argv = [mlflow_cli, "server",
            "--backend-store-uri", f"sqlite:///{(store / 'mlflow.db').resolve()}",
            "--artifacts-destination", str((store / "mlruns").resolve()),
            "--host", host, "--port", str(port)]
    if workers:
        argv += ["--workers", str(workers)]
    if auth:
        argv += ["--app-name", "basic-auth"]
    return argv


def serve(store: str, host: str, port: int, auth: bool, workers: int | None = None) -> None:
    """Replace this process by the tracking server (Ctrl-C and signals reach it directly)."""
    folder = Path(store)
    if not folder.is_dir():
        raise UserError(f"server store {store!r} is not a folder: pass an existing folder "
                        "(it keeps mlflow.db and mlruns/)")
    if not 0 < port < 65536:
        raise UserError(f"--port {port} is not a TCP port (1-65535)")
    if auth:  # (checked before anything is written to the store)
        try:
            import flask_wtf  # noqa: F401  (the mlflow[auth] extra)
        except ImportError:
            raise UserError("make server AUTH=1 needs MLflow's auth extra: "
                            "pip install 'mlflow[auth]' (make install does)") from None
    environ = auth_environment(folder) if auth else dict(os.environ)
    argv = command(folder, host, port, auth, workers)
    login = (" with basic auth (clients set MLFLOW_TRACKING_USERNAME and "
             "MLFLOW_TRACKING_PASSWORD)" if auth else " (no login: keep it on 127.0.0.1)")
    print(f"MLflow tracking server on http://{host}:{port}{login}; store {folder.resolve()}",
          flush=True)
    os.execve(argv[0], argv, environ)
