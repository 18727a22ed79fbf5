"""Progress: a bar on a terminal, a line per epoch in a log (Keras alone prints a line a step)."""

import contextlib
import io
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from gan_pipeline import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


class ProgressTest(tf.test.TestCase):
    def fit_printing(self, stdout) -> str:
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        x = np.zeros((40, 2), np.float32)
        with contextlib.redirect_stdout(stdout):
            model.fit(x, x[:, :1], batch_size=4, epochs=2, verbose=progress.verbosity())
        return stdout.getvalue()

    def test_a_log_gets_one_line_per_epoch_not_per_step(self):
        printed = self.fit_printing(io.StringIO())
        self.assertNotIn("\r", printed)
        self.assertNotIn("\b", printed)
        steps = [line for line in printed.splitlines() if "10/10" in line]
        self.assertLen(steps, 2)  # one summary line per epoch, nothing for steps 1..9

    def test_a_terminal_keeps_the_bar_and_explicit_choices_stand(self):
        with mock.patch("sys.stdout", Terminal()):
            self.assertEqual(progress.verbosity(), 1)
            self.assertIsNotNone(progress.bar(3))
        with mock.patch("sys.stdout", io.StringIO()):
            self.assertEqual(progress.verbosity("auto"), 2)
            self.assertEqual(progress.verbosity(0), 0)
            self.assertIsNone(progress.bar(3))
