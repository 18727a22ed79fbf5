"""``TrainClock``: the run's training time, without logging, evaluation or checkpointing."""

from __future__ import annotations

import time

import keras

from gan_pipeline.callbacks.record import RunRecord


class TrainClock(keras.callbacks.Callback):
    def __init__(self, record: RunRecord):
        super().__init__()
        self.record = record
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.record.train_seconds += time.perf_counter() - self._start
