"""The tests' shared cache: a run tidies it only when no other run is using it."""

import fcntl
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start_run(cache: Path) -> None:
    """What a test run does at start-up (tests/conftest.py), in a process of its own."""
    env = {**os.environ, "GAN_PIPELINE_TEST_CACHE": str(cache)}
    subprocess.run([sys.executable, "-c", "import tests.conftest"], cwd=REPO, env=env,
                   check=True, timeout=120)


class TestCacheTest(unittest.TestCase):
    def test_a_run_leaves_the_cache_of_a_run_in_progress_alone(self):
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp)
            (cache / "folders").mkdir()
            (cache / "folders" / "decoded.npz").write_bytes(b"in use")
            with open(cache / ".lock", "a") as other:  # another run holds the cache
                fcntl.flock(other, fcntl.LOCK_SH)
                start_run(cache)
                self.assertTrue((cache / "folders" / "decoded.npz").exists())
            start_run(cache)  # alone: it tidies up
            self.assertFalse((cache / "folders").exists())


if __name__ == "__main__":
    unittest.main()
