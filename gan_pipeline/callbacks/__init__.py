"""The callbacks of a training run, one concern each (as in ``keras/src/callbacks/``). They
share state only through the model and one small ``RunRecord``:

- ``RunControl`` (control.py): stops cleanly on Ctrl-C/SIGTERM or a non-finite loss; counts the
  epochs that completed;
- ``StandingStatistics`` (standing.py): the sampler's BatchNorm statistics from its own samples
  after each epoch;
- ``TrainClock`` (clock.py): training time only, without logging or evaluation;
- ``QualityCheck`` (quality.py): evaluates the sampler every K epochs into the epoch's logs
  (``eval/<figure>``), warns of (and may stop on) mode collapse;
- ``EpochLogger`` (logger.py): MLflow metrics and the fixed-noise picture per epoch, the loss
  and report figures at the end;
- ``Checkpointer`` (checkpointer.py): exact checkpoints after each epoch (and every N steps);
- ``TunerObjective`` (tuner.py): hands the quality figure to Keras Tuner.

Their order matters where one reads what another wrote in the same epoch: the standing
statistics before the clock (which counts them) and everything that samples, the clock before the
logger and the checkpointer, the quality check before the logger and the tuner's objective
(``fitting.callbacks`` builds the list).
"""

from gan_pipeline.callbacks.checkpointer import Checkpointer
from gan_pipeline.callbacks.clock import TrainClock
from gan_pipeline.callbacks.control import RunControl
from gan_pipeline.callbacks.logger import EpochLogger
from gan_pipeline.callbacks.quality import QualityCheck
from gan_pipeline.callbacks.record import RunRecord
from gan_pipeline.callbacks.standing import StandingStatistics
from gan_pipeline.callbacks.tuner import TunerObjective

__all__ = ["Checkpointer", "EpochLogger", "QualityCheck", "RunControl", "RunRecord",
           "StandingStatistics", "TrainClock", "TunerObjective"]
