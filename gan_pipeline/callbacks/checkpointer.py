"""``Checkpointer``: an exact checkpoint after every completed epoch (and every ``every_steps``
steps inside one), and where an interruption stopped, with the batches of the epoch that ran,
so that a resume continues at that very step. A checkpoint is written only when every weight is
finite; the last good one stays otherwise (see ``gan_pipeline.checkpoints``)."""

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
        self.step = 0  # batches of the epoch in progress that have run

    def on_train_batch_end(self, batch, logs=None):
        # A mid-epoch checkpoint records the batches of the epoch done so far ("step"): a resume
        # skips them in the data stream and continues exactly there.
        # Keras calls this once per compiled call (``steps_per_execution`` batches): a save is
        # due when the call crossed a multiple of ``every_steps``.
        before, step = self.step or self.record.step_offset, self.record.step_offset + batch + 1
        self.step = step
        last = batch + 1 == self.params.get("steps")
        if self.every_steps and step // self.every_steps > before // self.every_steps \
                and not last and self.record.reason is None:
            checkpoints.save(self.directory, self.model,
                             {**self.base_state, "epoch": self.record.epoch, "step": step,
                              "train_seconds": self.record.train_seconds})

    def on_epoch_end(self, epoch, logs=None):
        if self.record.reason == "diverged":
            return  # the last good checkpoint stays
        if not all(np.isfinite(w.numpy()).all() for w in self.model.trainable_weights):
            self.record.stop(self.model, "diverged",
                             f"weights became non-finite in epoch {epoch + 1}")
            return
        # An epoch cut short (Ctrl-C) is saved with the batches it ran: a resume continues
        # exactly there.
        cut = {} if self.record.completed == epoch + 1 or not self.step else {"step": self.step}
        checkpoints.save(self.directory, self.model,
                         {**self.base_state, "epoch": self.record.completed, **cut,
                          "train_seconds": self.record.train_seconds})
        self.step = 0
