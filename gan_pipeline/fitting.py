"""One ``fit`` of a GAN on a data source, as both ``gan-pipeline train`` and the tuner's trials
run it: the callbacks every run has, in their order, and the data stream that continues where a
checkpoint left it."""

from __future__ import annotations

from gan_pipeline import distribute, families, sampling
from gan_pipeline.callbacks import (EpochLogger, QualityCheck, RunControl, RunRecord,
                                   StandingStatistics, TrainClock)


class Fit:
    """The callbacks of a run on ``source``: stop control, the clock, the quality check (with an
    ``evaluator`` and ``every`` > 0) and the MLflow logger of a fixed-noise picture series."""

    def __init__(self, gan, source, cfg, record: RunRecord, evaluator=None, every: int = 0,
                 stop_on_collapse: bool = False, title: str = ""):
        self.gan, self.source, self.cfg, self.record = gan, source, cfg, record
        grid = cfg.tracking.grid_size
        labels = class_names = None
        if gan.conditional:  # one row per class, as many columns as the grid size allows
            class_names = source.class_names
            grid = max(1, grid // gan.num_classes) * gan.num_classes
            labels = sampling.spread_labels(grid, gan.num_classes)
        # the batch pictured every epoch: the same seed gives the same batch
        noise = sampling.noise((grid, *gan.latent_shape), gan.noise, cfg.seed)
        self.control = RunControl(record)
        standing = StandingStatistics(record, cfg.train.standing_statistics, cfg.batch_size,
                                      cfg.seed)
        self.callbacks = [self.control, standing, TrainClock(record)]
        if evaluator is not None and every:
            self.callbacks.append(QualityCheck(record, evaluator, every, stop_on_collapse,
                                               grace=cfg.eval.collapse_grace_epochs))
        self.logger = EpochLogger(record, families.get(cfg.model.name).kind, noise,
                                  source.real_samples(grid, cfg.seed), title=title or cfg.name,
                                  fixed_labels=labels, class_names=class_names)
        self.callbacks.append(self.logger)

    def run(self, epochs: int, steps: int, initial_epoch: int = 0, verbose: int | str = 1,
            extra=(), done_steps: int = 0):
        """``gan.fit`` from ``initial_epoch`` to ``epochs`` of ``steps`` batches; ``extra``
        callbacks run after the standard ones. ``done_steps`` batches of the first epoch ran
        before (a mid-epoch checkpoint): the rest of that epoch runs first, on its own."""
        callbacks = [*self.callbacks, *extra]
        self.record.epochs = epochs
        batches = self.source.batches(self.cfg.batch_size, labels=self.gan.conditional).repeat()

        def fit(first: int, last: int, skip: int, per_epoch: int):
            set_steps_per_execution(self.gan, distribute.steps_per_execution(
                self.cfg.train.steps_per_execution, steps, done=steps - per_epoch))
            # The data stream continues where the checkpoint left it: same seed, same order.
            stream = distribute.prefetched_to_device(batches.skip(skip))
            return self.gan.fit(stream, initial_epoch=first, epochs=last,
                                steps_per_epoch=per_epoch, callbacks=callbacks,
                                verbose=verbose, shuffle=False)

        if done_steps and initial_epoch < epochs:
            self.record.step_offset = done_steps
            history = fit(initial_epoch, initial_epoch + 1, initial_epoch * steps + done_steps,
                          steps - done_steps)
            self.record.step_offset = 0
            initial_epoch += 1
            if self.record.reason is not None or initial_epoch >= epochs:
                return history
        return fit(initial_epoch, epochs, initial_epoch * steps, steps)


def set_steps_per_execution(gan, batches: int) -> None:
    """Run ``batches`` steps per call of ``gan``'s compiled step (Keras' ``steps_per_execution``;
    a change rebuilds the step function at the next ``fit``)."""
    if gan.steps_per_execution != batches:
        gan.steps_per_execution = batches
        gan.train_function = None


def steps_per_epoch(cfg, source, fixed: int = 0) -> int:
    """Batches in an epoch: ``fixed`` if set, else ``train.steps_per_epoch``, else one pass."""
    return fixed or cfg.train.steps_per_epoch or source.num_examples // cfg.batch_size
