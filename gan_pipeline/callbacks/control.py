"""``RunControl``: stops training cleanly at the next step on SIGINT/SIGTERM, or when a loss is
not finite, and counts the epochs that completed. A second Ctrl-C stops at once."""

from __future__ import annotations

import contextlib
import signal
import threading

import keras
import numpy as np

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

    def on_train_batch_end(self, batch, logs=None):
        for key in ("d_loss", "g_loss"):
            value = float((logs or {}).get(key, 0.0))
            if not np.isfinite(value):
                step = self.record.step_offset + batch + 1
                self.record.stop(self.model, "diverged", f"{key} became {value} at epoch "
                                 f"{self.record.epoch + 1}, step {step}")
                return
        if batch + 1 == self.params.get("steps"):
            self.record.completed = self.record.epoch + 1
