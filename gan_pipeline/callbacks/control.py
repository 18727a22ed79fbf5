"""``RunControl``: stops training cleanly at the next step on SIGINT/SIGTERM, or when a loss is
not finite, and counts the epochs that completed. A second Ctrl-C stops at once.

Keras calls ``on_train_batch_end`` once per call of the compiled step, i.e. every
``steps_per_execution`` batches, with ``batch`` the last batch of that call. The losses are not
read here: the step itself notes the first non-finite one on the device (``GAN.health``), and
this callback reads that note once per call, so a stop comes within ``steps_per_execution``
steps and names the step where it happened."""

from __future__ import annotations

import contextlib
import math
import signal
import threading

import keras

from gan_pipeline.callbacks.record import RunRecord


class RunControl(keras.callbacks.Callback):
    def __init__(self, record: RunRecord):
        super().__init__()
        self.record = record

    @contextlib.contextmanager
    def signals(self):
        """Route SIGINT/SIGTERM to a clean stop while the block runs (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        if self.record.reason == "interrupted":
            raise KeyboardInterrupt
        if self.record.reason is None:
            self.record.reason = "interrupted"
            self.record.detail = signal.Signals(signum).name
        if self.model is not None:
            self.model.stop_training = True

    def on_epoch_begin(self, epoch, logs=None):
        self.record.epoch = epoch
        self.model.health.reset()  # the watch counts this epoch's steps (of this fit)

    def on_train_batch_end(self, batch, logs=None):
        bad = self.model.health.first()
        if bad is not None:
            step, d_loss, g_loss = bad
            key, value = ("d_loss", d_loss) if not math.isfinite(d_loss) else ("g_loss", g_loss)
            self.record.stop(self.model, "diverged", f"{key} became {value} at epoch "
                             f"{self.record.epoch + 1}, step {self.record.step_offset + step}")
            return
        if batch + 1 == self.params.get("steps"):
            self.record.completed = self.record.epoch + 1
