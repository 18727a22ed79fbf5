"""``NonFiniteWatch``: the first non-finite loss of a run, noted inside the compiled step and
read on the host once per call (``callbacks/control.py`` stops the run on it)."""

from __future__ import annotations

import tensorflow as tf


class NonFiniteWatch:
    """Where training first produced a non-finite loss, kept on the device.

    ``update`` (inside the compiled step) counts steps and, at the first step whose D or G loss
    is NaN or infinite, keeps that step's number and both losses; ``first()`` reads them on the
    host: ``None`` while every loss has been finite, else ``(step, d_loss, g_loss)``, ``step``
    counted from 1 since the watch was made or ``reset``. Plain ``tf.Variable``s, not Keras
    ones: the watch is not part of the model's saved state.
    """

    def __init__(self):
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first,
                                 name="health_steps")
        self.bad_step = tf.Variable(0, dtype=tf.int64, trainable=False, aggregation=first,
                                    name="health_bad_step")
        self.bad_losses = tf.Variable([0.0, 0.0], dtype=tf.float32, trainable=False,
                                      aggregation=first, name="health_bad_losses")

    def update(self, d_loss, g_loss):
        step = self.steps.assign_add(1)
        losses_now = tf.stack([tf.cast(d_loss, tf.float32), tf.cast(g_loss, tf.float32)])
        first_bad = tf.logical_and(tf.equal(self.bad_step, 0),
                                   tf.logical_not(tf.reduce_all(tf.math.is_finite(losses_now))))
        self.bad_step.assign(tf.where(first_bad, step, self.bad_step))
        self.bad_losses.assign(tf.where(first_bad, losses_now, self.bad_losses))

    def first(self):
        step = int(self.bad_step.numpy())
        if not step:
            return None
        d_loss, g_loss = (float(v) for v in self.bad_losses.numpy())
        return step, d_loss, g_loss

    def reset(self):
        for variable in (self.steps, self.bad_step):
            variable.assign(0)
