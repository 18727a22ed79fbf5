"""``QualityCheck``: every ``every`` epochs (and after the last), the evaluator's figures for the
sampler go into the epoch's logs as ``eval/<figure>``, where the logger and the tuner's objective
read them. Mode collapse is warned of, and stops the run when ``stop_on_collapse`` is set
(after this epoch is logged: its figures count) and the epoch is past the first ``grace``. An epoch a resumed run already evaluated (it
was logged before a kill that beat its checkpoint) is not evaluated again."""

from __future__ import annotations

import time

import keras

from gan_pipeline.callbacks.record import RunRecord


class QualityCheck(keras.callbacks.Callback):
    def __init__(self, record: RunRecord, evaluator, every: int = 1,
                 stop_on_collapse: bool = False, grace: int = 0):
        super().__init__()
        self.record, self.evaluator = record, evaluator
        self.every, self.stop_on_collapse, self.grace = every, stop_on_collapse, grace

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        last = step == (self.record.epochs or self.params.get("epochs"))
        due = step % self.every == 0 or last
        if not due or not self.record.epoch_complete(epoch) or step in self.record.eval_steps:
            return
        started = time.perf_counter()
        figures = self.evaluator(self.model.exported)
        if logs is not None:
            logs.update({f"eval/{k}": float(v) for k, v in figures.items()
                         if isinstance(v, (int, float))})
            logs["eval_seconds"] = time.perf_counter() - started
        self.record.last_eval = figures
        self.record.eval_steps.append(step)
        collapse = self.evaluator.collapse(figures)
        if logs is not None:
            logs["collapse_warning"] = float(collapse is not None)
        if collapse:
            self.record.collapse = f"epoch {step}: {collapse}"
            print(f"\nwarning: epoch {step}: {collapse}", flush=True)
            if self.stop_on_collapse and step > self.grace:
                self.record.stop(self.model, "collapsed", self.record.collapse)
