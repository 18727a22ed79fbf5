"""Shared test set-up: quiet TensorFlow, a cache of evaluation classifiers kept between runs,
and where the real (offline) TFDS data lives."""

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


_HOLD = None  # this run's shared lock on the cache, held until the process ends


def _test_cache() -> str:
    """The tests' own cache (never the user's: tests train classifiers on mocked images).

    Kept between runs, so the classifiers of mocked MNIST and of the tests' folders (keyed by
    dataset, version and data folder) train once, not every run. Entries are written atomically (write, then
    rename), so runs at the same time can share it; each holds a shared lock on it while it runs.
    Only a run that finds no other one holding it tidies it up: decoded image folders, entries
    whose data folder no longer exists (the temporary folders of earlier runs) and entries older
    than two weeks are dropped."""
    global _HOLD
    root = Path(os.environ.get("GAN_PIPELINE_TEST_CACHE")
                or Path.home() / ".cache" / "gan-pipeline-tests")
    root.mkdir(parents=True, exist_ok=True)
    _HOLD = open(root / ".lock", "a")
    try:
        fcntl.flock(_HOLD, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # another test run is using the cache: leave it as it is
        fcntl.flock(_HOLD, fcntl.LOCK_SH)
        return str(root)
    shutil.rmtree(root / "folders", ignore_errors=True)
    for meta in (root / "classifiers").glob("*.json"):
        try:
            data_dir = json.loads(meta.read_text()).get("data_dir", "")
        except ValueError:
            data_dir = ""
        stale = time.time() - meta.stat().st_mtime > 14 * 86400
        if stale or not data_dir or not Path(data_dir).exists():
            meta.unlink(missing_ok=True)
            meta.with_suffix(".keras").unlink(missing_ok=True)
    fcntl.flock(_HOLD, fcntl.LOCK_SH)  # tidied: now share it with any run that starts
    return str(root)


os.environ["GAN_PIPELINE_CACHE"] = _test_cache()


def pytest_collection_finish(session):
    # The test modules have imported TensorFlow, Keras, MLflow and Keras Tuner: keep their
    # objects out of every later full garbage collection, as the command line does.
    from gan_pipeline.cli import freeze_imports

    freeze_imports()


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase carries a deprecated `test_session` helper that pytest would collect and
    # report as skipped in every class; it is not a test.
    items[:] = [item for item in items if item.name != "test_session"]
    # `make test` runs tests in two processes (pytest-xdist). The real-data tests, among the
    # longest, go first, so that neither process is left with a long one at the end.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
