"""The GAN as a subclassed ``keras.Model``: ``fit`` trains it, ``call(z)`` generates.

``train_step`` updates the discriminator ``d_steps`` times and then the generator ``g_steps`` times
per batch. Each update runs under its own ``tf.GradientTape`` and applies gradients only to that
network's trainable weights, so there is no ``discriminator.trainable = False`` juggling: the
generator step simply never hands D's weights to an optimizer.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from gan_pipeline import distribute
from gan_pipeline.losses import GANLoss

NOISES = ("normal", "uniform")


@keras.saving.register_keras_serializable(package="gan_pipeline")
class GAN(keras.Model):
    """A generator and a discriminator trained adversarially.

    Args:
        generator: maps ``z`` of shape ``(batch, *latent_shape)`` to samples.
        discriminator: maps samples to one logit each.
        noise: distribution of ``z``: ``"normal"`` N(0, 1) or ``"uniform"`` U(0, 1).
        seed: seeds the model's own ``SeedGenerator``, so a seed reproduces the noise of a run.
        ema_decay: when > 0, keep ``ema_generator``, an exponential moving average of the
            generator's weights (with warm-up: the decay used at step t is
            ``min(ema_decay, (1 + t) / (10 + t))``). ``sampler`` is the network to sample from.
    """

    def __init__(self, generator, discriminator, noise: str = "normal", seed: int | None = None,
                 ema_decay: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        self.generator = generator
        self.discriminator = discriminator
        self.noise = noise
        self.seed = seed
        self.latent_shape = tuple(generator.input_shape[1:])
        self.ema_decay = float(ema_decay)
        self.ema_generator = None
        if self.ema_decay > 0:
            self.ema_generator = keras.models.clone_model(generator)
            self.ema_generator.set_weights(generator.get_weights())
            self.ema_step = keras.Variable(0, dtype="int64", trainable=False, name="ema_step")
        self.seed_generator = keras.random.SeedGenerator(seed)
        # 1-D GANs (vector samples) also report the moments of what they generate.
        self.tracks_moments = len(generator.output_shape) == 2
        names = ["d_loss", "g_loss", "d_real", "d_fake"]
        if self.tracks_moments:
            names += ["gen_mean", "gen_std"]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}
        self.built = True  # both networks are built functional models

    def compile(self, d_optimizer, g_optimizer, loss: str = "non_saturating",
                label_smoothing: float = 1.0, d_steps: int = 1, g_steps: int = 1,
                r1_gamma: float = 0.0, **kwargs):
        """``r1_gamma`` > 0 adds the R1 penalty ``r1_gamma / 2 * |grad_x D(x)|^2`` on real
        samples to D's loss (Mescheder et al. 2018): it damps the oscillation of the two
        networks around the equilibrium instead of letting it persist."""
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.gan_loss = GANLoss(loss, label_smoothing)
        if d_steps < 1 or g_steps < 1:
            raise ValueError(f"d_steps and g_steps must be >= 1, got {d_steps}, {g_steps}")
        if r1_gamma < 0:
            raise ValueError(f"r1_gamma must be >= 0, got {r1_gamma}")
        self.d_steps, self.g_steps = int(d_steps), int(g_steps)
        self.r1_gamma = float(r1_gamma)

    @property
    def metrics(self):
        return list(self.trackers.values())

    def sample_noise(self, batch_size):
        shape = (batch_size, *self.latent_shape)
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            # Under tf.distribute every replica shares the SeedGenerator's state: fold the
            # replica id into the step's seed, or all replicas would draw the same noise.
            seed = self.seed_generator.next()
            seed = seed + ops.cast(ops.stack([0, replica.replica_id_in_sync_group]), seed.dtype)
            if self.noise == "uniform":
                return tf.random.stateless_uniform(shape, seed, 0.0, 1.0)
            return tf.random.stateless_normal(shape, seed)
        if self.noise == "uniform":
            return keras.random.uniform(shape, 0.0, 1.0, seed=self.seed_generator)
        return keras.random.normal(shape, seed=self.seed_generator)

    @property
    def sampler(self):
        """The generator to sample from: the EMA copy when enabled, else the trained one."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    def call(self, z, training=False):
        if training:
            return self.generator(z, training=True)
        return self.sampler(z, training=False)

    def generate(self, batch_size):
        """``batch_size`` fresh samples from the model's own noise stream."""
        return self.sampler(self.sample_noise(batch_size), training=False)

    def update_ema(self):
        step = ops.cast(self.ema_step, "float32")
        decay = ops.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
        for average, weight in zip(self.ema_generator.weights, self.generator.weights):
            average.assign(decay * average + (1.0 - decay) * ops.cast(weight, average.dtype))
        self.ema_step.assign_add(1)

    def discriminator_step(self, real):
        """One D update on ``real`` and a fresh fake batch; only D's weights change."""
        fake = self.generator(self.sample_noise(ops.shape(real)[0]), training=True)
        with tf.GradientTape() as tape:
            if self.r1_gamma > 0:
                with tf.GradientTape() as input_tape:  # inside `tape`: the penalty trains D
                    input_tape.watch(real)
                    real_logits = self.discriminator(real, training=True)
                    total = ops.sum(ops.cast(real_logits, "float32"))
                slopes = input_tape.gradient(total, real)
                slopes = ops.reshape(ops.cast(slopes, "float32"), (ops.shape(real)[0], -1))
                penalty = 0.5 * self.r1_gamma * ops.mean(ops.sum(ops.square(slopes), axis=1))
            else:
                real_logits = self.discriminator(real, training=True)
                penalty = 0.0
            fake_logits = self.discriminator(fake, training=True)
            d_loss = self.gan_loss.discriminator_loss(real_logits, fake_logits) + penalty
            # / replicas (their gradients are summed); x the loss scale under float16
            scaled = self.d_optimizer.scale_loss(distribute.scale_loss(d_loss))
        grads = tape.gradient(scaled, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        return d_loss, real_logits, fake_logits

    def generator_step(self, batch_size):
        """One G update through a frozen-by-construction D; only G's weights change."""
        z = self.sample_noise(batch_size)
        with tf.GradientTape() as tape:
            generated = self.generator(z, training=True)
            g_loss = self.gan_loss.generator_loss(self.discriminator(generated, training=True))
            scaled = self.g_optimizer.scale_loss(distribute.scale_loss(g_loss))
        grads = tape.gradient(scaled, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        return g_loss, generated

    def train_step(self, real):
        if isinstance(real, (tuple, list)):  # tolerate (x, y) datasets; labels are unused
            real = real[0]
        for _ in range(self.d_steps):
            d_loss, real_logits, fake_logits = self.discriminator_step(real)
        for _ in range(self.g_steps):
            g_loss, generated = self.generator_step(ops.shape(real)[0])
        if self.ema_generator is not None:
            self.update_ema()

        values = {
            "d_loss": d_loss,
            "g_loss": g_loss,
            "d_real": ops.mean(ops.sigmoid(ops.cast(real_logits, "float32"))),
            "d_fake": ops.mean(ops.sigmoid(ops.cast(fake_logits, "float32"))),
        }
        if self.tracks_moments:
            generated = ops.cast(generated, "float32")
            values["gen_mean"] = ops.mean(generated)
            values["gen_std"] = ops.std(generated)
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    # -- serialisation -------------------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "noise": self.noise,
            "seed": self.seed,
            "ema_decay": self.ema_decay,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["generator"] = keras.saving.deserialize_keras_object(config["generator"])
        config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return cls(**config)

    def get_compile_config(self):
        if not getattr(self, "compiled", False):
            return None
        return {
            "d_optimizer": keras.saving.serialize_keras_object(self.d_optimizer),
            "g_optimizer": keras.saving.serialize_keras_object(self.g_optimizer),
            "loss": self.gan_loss.kind,
            "label_smoothing": self.gan_loss.label_smoothing,
            "d_steps": self.d_steps,
            "g_steps": self.g_steps,
            "r1_gamma": self.r1_gamma,
        }

    def compile_from_config(self, config):
        config = dict(config)
        for key in ("d_optimizer", "g_optimizer"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        self.compile(**config)
        # Build the optimizers now so that their saved state (moments, iterations) loads too.
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)
