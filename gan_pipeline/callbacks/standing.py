"""``StandingStatistics``: after each complete epoch, the sampler's BatchNorm statistics are set
from its own samples (``GAN.standing_statistics``), before the quality check, the picture, the
checkpoint and the saved generator read them. The clock counts it: it is part of making the
sampler."""

from __future__ import annotations

import math

import keras

from gan_pipeline.callbacks.record import RunRecord


class StandingStatistics(keras.callbacks.Callback):
    def __init__(self, record: RunRecord, samples: int, batch_size: int, seed: int = 0):
        super().__init__()
        self.record, self.batch_size, self.seed = record, batch_size, seed
        self.batches = math.ceil(samples / batch_size) if samples else 0

    def on_epoch_end(self, epoch, logs=None):
        if self.batches and self.record.epoch_complete(epoch):
            self.model.standing_statistics(self.batches, self.batch_size, self.seed)
