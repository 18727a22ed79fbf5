"""Shared test set-up: quiet TensorFlow, and where the real (offline) TFDS data lives."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase carries a deprecated `test_session` helper that pytest would collect and
    # report as skipped in every class; it is not a test.
    items[:] = [item for item in items if item.name != "test_session"]
