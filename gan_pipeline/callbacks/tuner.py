"""``TunerObjective``: hands the epoch's quality figure to Keras Tuner, which reads the
objective from the epoch's logs."""

from __future__ import annotations

import keras


class TunerObjective(keras.callbacks.Callback):
    def __init__(self, objective: str):
        super().__init__()
        self.objective = objective

    def on_epoch_end(self, epoch, logs=None):
        key = f"eval/{self.objective}"
        if logs is not None and key in logs:
            logs[self.objective] = logs[key]
