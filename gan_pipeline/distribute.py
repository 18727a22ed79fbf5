"""Devices: which ``tf.distribute`` strategy trains, and how losses scale across replicas.

- ``TF_CONFIG`` set: ``MultiWorkerMirroredStrategy`` (every worker runs the same command; see the
  README for an example with a shared MLflow tracking server).
- Several GPUs: ``MirroredStrategy`` over all of them.
- Otherwise the default strategy: the one GPU, else the CPU.

``batch_size`` is always the GLOBAL batch: each of N replicas sees batch_size / N examples, Keras
sums the replicas' gradients, so each replica's mean loss is divided by N (``scale_loss``), which
makes the update the same as one device on the whole batch. Metrics are reported un-scaled.
"""

from __future__ import annotations

import os

import tensorflow as tf


def strategy() -> tf.distribute.Strategy:
    """The strategy for this process: multi-worker, multi-GPU or the default one."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def replicas() -> int:
    """Replicas of the strategy in scope (1 outside any)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_loss(loss):
    """A replica's mean loss divided by the number of replicas (gradients are summed)."""
    n = replicas()
    return loss / n if n > 1 else loss
