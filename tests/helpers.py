"""Small things the tests share: tiny model settings, a temporary MLflow store, real-data lookup."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import mlflow

REPO = Path(__file__).resolve().parents[1]

# Tiny widths so a training step takes milliseconds; the architectures are otherwise the real ones.
TINY = {
    "dcgan": {"latent_dim": 8, "g_base_filters": 8, "g_filters": 4, "d_filters": [4, 8],
              "kernel_size": 3},
    "mlp": {"latent_dim": 8, "g_widths": [16, 16], "d_widths": [16, 16]},
    "mlp_bn": {"latent_dim": 8, "g_widths": [16, 16], "d_widths": [16, 16]},
    "gaussian_1d": {"g_hidden": 16, "d_hidden": 16},
}
TINY["cdcgan"] = {**TINY["dcgan"], "label_dim": 4}
TINY["cmlp"] = {**TINY["mlp"], "label_dim": 4}
TINY["labelled_dcgan"], TINY["labelled_mlp"] = TINY["cdcgan"], TINY["cmlp"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def real_tfds_dir(test) -> str:
    """A TFDS data dir holding prepared MNIST ($TFDS_DATA_DIR, else ../shared/data/tfds);
    skips ``test`` when there is none."""
    for candidate in (os.environ.get("TFDS_DATA_DIR"), REPO.parent / "shared" / "data" / "tfds"):
        if candidate and (Path(candidate) / "mnist").is_dir():
            return str(candidate)
    test.skipTest("no prepared MNIST in TFDS_DATA_DIR or ../shared/data/tfds")


_EMPTY_STORE: Path | None = None  # this test process's freshly created, empty SQLite store


def _empty_store() -> Path:
    """An MLflow SQLite store as ``tracking.configure`` creates it (schema migrated, the Default
    experiment), made once per test process: migrating a new store takes 2-3 s, copying one
    a few milliseconds."""
    global _EMPTY_STORE
    if _EMPTY_STORE is None:
        from gan_pipeline import tracking

        folder = Path(tempfile.mkdtemp(prefix="gan-pipeline-empty-store-"))
        tracking._create_store(folder / "mlflow.db")
        _EMPTY_STORE = folder / "mlflow.db"
    return _EMPTY_STORE


class TempWorkdir:
    """chdir into a fresh temp dir with its own MLflow store (sqlite:///<tmp>/mlflow.db), a copy
    of a new, empty one; ``store=False`` leaves it to be created (or not) by what runs there."""

    def __init__(self, store: bool = True):
        self.store = store

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory()
        self._old_cwd = os.getcwd()
        self._old_uri = os.environ.pop("MLFLOW_TRACKING_URI", None)
        os.chdir(self._tmp.name)
        self.path = Path(self._tmp.name)
        self.uri = f"sqlite:///{self.path / 'mlflow.db'}"
        if self.store:
            shutil.copyfile(_empty_store(), self.path / "mlflow.db")
        return self

    def __exit__(self, *exc):
        if mlflow.active_run():
            mlflow.end_run()
        os.chdir(self._old_cwd)
        if self._old_uri is not None:
            os.environ["MLFLOW_TRACKING_URI"] = self._old_uri
        self._tmp.cleanup()


class TrackingServer:
    """``gan-pipeline server`` (what ``make server`` runs) on a free 127.0.0.1 port over a store
    folder ``root/server`` (artifacts go through the server). ``uri`` is its http:// address;
    the log is ``root/server.log``. ``environ`` adds to the server's environment (``auth=True``:
    MLflow's basic auth, the admin from ``MLFLOW_AUTH_ADMIN_PASSWORD`` there)."""

    def __init__(self, root: Path, auth: bool = False, environ: dict | None = None):
        self.root = Path(root)
        self.store = self.root / "server"
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.auth = auth
        self.environ = environ or {}

    def __enter__(self):
        import subprocess
        import sys
        import time
        import urllib.request

        self.store.mkdir(exist_ok=True)
        script = str(Path(sys.executable).parent / "gan-pipeline")
        self._log = open(self.root / "server.log", "w")
        self._proc = subprocess.Popen(
            [script, "server", "--store", str(self.store), "--port", str(self.port),
             "--workers", "1", *(["--auth"] if self.auth else [])],
            cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.environ})
        deadline = time.time() + 180
        while time.time() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("mlflow server exited:\n" + self.log()[-3000:])
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError("mlflow server did not answer within 180 s")

    def log(self) -> str:
        return (self.root / "server.log").read_text()

    def __exit__(self, *exc):
        self._proc.terminate()
        try:
            self._proc.wait(timeout=30)
        except Exception:
            self._proc.kill()
        self._log.close()
