"""`make bench` keeps running to the end for every shipped pipeline (behaviour only, not timed)."""

import contextlib
import importlib.util
import io
import sys
from unittest import mock

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.helpers import REPO


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", REPO / "bench" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
class BenchTest(tf.test.TestCase):
    def test_every_shipped_pipeline_gets_a_row(self):
        bench = load_bench()
        shipped = {p.name for p in (REPO / "pipelines").glob("*.toml")}
        self.assertTrue(shipped <= set(bench.PIPELINES.values()), "the bench times every file")
        argv = ["bench.py", "--batch-size", "16", "--steps", "2", "--repeats", "1", "--no-memory",
                "--peak-n", "256"]
        out = io.StringIO()
        with tfds.testing.mock_data(num_examples=64), mock.patch.object(sys, "argv", argv), \
                contextlib.redirect_stdout(out):
            self.assertEqual(bench.main(), 0)
        table = [line for line in out.getvalue().splitlines() if line.startswith("|")]
        self.assertTrue(table[0].startswith("| model |") and table[1].startswith("|---"), table)
        rows = [row.split(" | ")[0].removeprefix("| ") for row in table[2:]]
        self.assertEqual(sorted(rows), sorted(bench.PIPELINES))
        # every row reports its (c) MFU against a peak measured in the same run
        self.assertIn("peak, best of both: matmul bfloat16", out.getvalue())
        for row in table[2:]:
            self.assertRegex(row.rstrip(" |").rsplit(" / ", 1)[1], r"^\d+\.\d%$", row)

    def test_an_unknown_row_is_one_error_line_naming_the_allowed_ones(self):
        bench = load_bench()
        err = io.StringIO()
        with mock.patch.object(sys, "argv", ["bench.py", "--models", "dcgann", "--no-memory"]), \
                contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(bench.run(), 2)
        lines = err.getvalue().strip().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"^gan-pipeline: error: unknown bench row 'dcgann'.*allowed: dcgan")
