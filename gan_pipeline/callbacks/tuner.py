"""``TunerObjective``: hands the trial's quality figure to Keras Tuner, which reads the
objective from the epoch's logs. Only the last epoch of a trial's fit reports it: a trial is
judged by the generator it ends with, as a training run is, not by its best epoch on the way
(an oscillating pair can pass through a good epoch and end far from it)."""

from __future__ import annotations

import keras


class TunerObjective(keras.callbacks.Callback):
    def __init__(self, objective: str):
        super().__init__()
        self.objective = objective

    def on_epoch_end(self, epoch, logs=None):
        key = f"eval/{self.objective}"
        if epoch + 1 == self.params.get("epochs") and logs is not None and key in logs:
            logs[self.objective] = logs[key]
