"""``Checkpointer``: an exact checkpoint after every completed epoch (and every ``every_steps``
steps inside one), and where an interruption stopped. A checkpoint is written only when every
weight is finite; the last good one stays otherwise (see ``gan_pipeline.checkpoints``)."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from gan_pipeline import checkpoints
from gan_pipeline.callbacks.record import RunRecord


class Checkpointer(keras.callbacks.Callback):
    def __init__(self, record: RunRecord, directory: Path, base_state: dict,
                 every_steps: int = 0):
        super().__init__()
        self.record, self.directory = record, directory
        self.base_state, self.every_steps = base_state, every_steps

    def on_train_batch_end(self, batch, logs=None):
        # Mid-epoch checkpoints keep the optimizer steps done so far; resuming from one redoes
        # the epoch's data from its start (only epoch-end checkpoints continue bit-exactly).
        last = batch + 1 == self.params.get("steps")
        if self.every_steps and (batch + 1) % self.every_steps == 0 and not last \
                and self.record.reason is None:
            checkpoints.save(self.directory, self.model,
                             {**self.base_state, "epoch": self.record.epoch, "step": batch + 1,
                              "train_seconds": self.record.train_seconds})

    def on_epoch_end(self, epoch, logs=None):
        if self.record.reason == "diverged":
            return  # the last good checkpoint stays
        if not all(np.isfinite(w.numpy()).all() for w in self.model.trainable_weights):
            self.record.stop(self.model, "diverged",
                             f"weights became non-finite in epoch {epoch + 1}")
            return
        # An epoch cut short is saved as not done: resuming redoes it from its first batch,
        # starting from the weights it had reached.
        checkpoints.save(self.directory, self.model,
                         {**self.base_state, "epoch": self.record.completed,
                          "train_seconds": self.record.train_seconds})
