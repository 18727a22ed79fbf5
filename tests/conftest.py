"""Shared test set-up: quiet TensorFlow, and where the real (offline) TFDS data lives."""

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
# Tests train evaluation classifiers on mocked (random) images; they must never land in, or be
# read from, the user's real cache. One fresh cache per test session.
_CACHE = tempfile.TemporaryDirectory(prefix="gan-pipeline-test-cache-")
os.environ["GAN_PIPELINE_CACHE"] = _CACHE.name


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase carries a deprecated `test_session` helper that pytest would collect and
    # report as skipped in every class; it is not a test.
    items[:] = [item for item in items if item.name != "test_session"]
