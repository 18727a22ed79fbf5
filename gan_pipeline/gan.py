"""The GAN as a subclassed ``keras.Model``: ``fit`` trains it, ``call(z)`` generates.

``train_step`` updates the discriminator ``d_steps`` times and then the generator ``g_steps`` times
per batch. Each update runs under its own ``tf.GradientTape`` and applies gradients only to that
network's trainable weights, so there is no ``discriminator.trainable = False`` juggling: the
generator step simply never hands D's weights to an optimizer. What is minimised comes from the
loss object and penalties given to ``compile`` (``gan_pipeline.losses``).

A conditional GAN (``num_classes`` > 0) trains on ``(images, labels)`` batches: D judges each
real image with its own label and each fake with the label it was generated for, drawn
uniformly over the classes or by ``label_probs`` (the data's class shares).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from gan_pipeline import augment, distribute, kinds, losses, standing
from gan_pipeline.health import NonFiniteWatch
from gan_pipeline.kinds import NOISES


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
        track_moments: also report the mean and std of the generated batch each step (the
            1-D GAN, whose samples are values).
        num_classes: > 0 for a conditional GAN, whose networks take ``[z, label]`` and
            ``[x, label]`` (integer labels of shape ``(batch, 1)``).
        label_probs: the class shares fake labels are drawn by (None: uniform).
        mix_classes: a conditional GAN whose ``exported`` generator draws its class from its
            noise (``kinds.class_mixture``) and so samples without labels.
    """

    def __init__(self, generator, discriminator, noise: str = "normal", seed: int | None = None,
                 ema_decay: float = 0.0, track_moments: bool = False, num_classes: int = 0,
                 label_probs: list[float] | None = None, mix_classes: bool = False, **kwargs):
        super().__init__(**kwargs)
        if noise not in NOISES:
            raise ValueError(f"noise must be one of {NOISES}, got {noise!r}")
        self.generator = generator
        self.discriminator = discriminator
        self.noise = noise
        self.seed = seed
        self.latent_shape = tuple(generator.inputs[0].shape[1:])
        self.num_classes = int(num_classes)
        if label_probs is not None and len(label_probs) != self.num_classes:
            raise ValueError(f"label_probs has {len(label_probs)} shares for "
                             f"{self.num_classes} classes")
        self.label_probs = [float(p) for p in label_probs] if label_probs is not None else None
        if mix_classes and not self.num_classes:
            raise ValueError("mix_classes needs a conditional GAN (num_classes > 0)")
        self.mix_classes = bool(mix_classes)
        object.__setattr__(self, "_exported", None)
        self.ema_decay = float(ema_decay)
        self.ema_generator = None
        if self.ema_decay > 0:
            self.ema_generator = keras.models.clone_model(generator)
            self.ema_generator.set_weights(generator.get_weights())
            self.ema_step = keras.Variable(0, dtype="int64", trainable=False, name="ema_step")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.track_moments = bool(track_moments)
        self.trackers: dict[str, keras.metrics.Mean] = {}
        self.health = NonFiniteWatch()
        self.built = True  # both networks are built functional models

    def compile(self, d_optimizer, g_optimizer, loss: losses.GANLoss | str = "non_saturating",
                penalties=(), d_steps: int = 1, g_steps: int = 1,
                augmentation: augment.DiffAugment | None = None, g_penalties=(), **kwargs):
        """``loss`` is a ``GANLoss`` (or the name of one, with its defaults); ``penalties`` are
        added to D's loss (e.g. ``losses.R1(gamma)``), ``g_penalties`` to G's (e.g.
        ``losses.ModeSeeking(1.0)``); ``augmentation`` (a ``DiffAugment``) transforms every
        image D judges, real and fake, in both steps."""
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = losses.make_loss(loss) if isinstance(loss, str) else loss
        self.penalties = list(penalties)
        self.g_penalties = list(g_penalties)
        self.augmentation = augmentation if augmentation is not None else augment.DiffAugment()
        if d_steps < 1 or g_steps < 1:
            raise ValueError(f"d_steps and g_steps must be >= 1, got {d_steps}, {g_steps}")
        self.d_steps, self.g_steps = int(d_steps), int(g_steps)
        # The optimizers' variables (Adam's moments, the step counts) are made here, not in the
        # first training step: a tf.function whose first call creates variables is traced twice,
        # which doubled the seconds every fit spent tracing the step. Built, they also load
        # their saved state from a checkpoint or a Hyperband trial (unbuilt ones are skipped).
        for optimizer, network in ((d_optimizer, self.discriminator),
                                   (g_optimizer, self.generator)):
            if not optimizer.built:
                optimizer.build(network.trainable_variables)
        names = ["d_loss", "g_loss", *self.loss_fn.metric_names]
        if self.track_moments:
            names += ["gen_mean", "gen_std"]
        self.trackers = {name: keras.metrics.Mean(name=name) for name in names}

    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def _replica_seed(self):
        """A stateless seed for this step. Under tf.distribute every replica shares the
        SeedGenerator's state: the replica id is folded in, or all would draw the same."""
        seed = self.seed_generator.next()
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = seed + ops.cast(ops.stack([0, replica.replica_id_in_sync_group]), seed.dtype)
        return seed

    def _replica_part(self, draw, batch_size):
        """``draw(n)`` for this replica's ``batch_size`` rows. Under tf.distribute every replica
        draws the global batch from the shared seed stream and keeps its own slice, so N
        replicas train on the same noise (and fake labels) as one device on the whole batch."""
        replica = tf.distribute.get_replica_context()
        n = replica.num_replicas_in_sync if replica is not None else 1
        if n == 1:
            return draw(batch_size)
        start = ops.cast(replica.replica_id_in_sync_group, "int32") * batch_size
        return draw(batch_size * n)[start:start + batch_size]

    def sample_labels(self, batch_size):
        """Class labels ``(batch, 1)`` int32 for fake samples."""
        def draw(n):
            # int32: XLA has no StatelessMultinomial for int64 seeds (the step failed to
            # compile with train.jit_compile); the seed's values, and so the draws, are the same.
            seed = ops.cast(self.seed_generator.next(), "int32")
            if self.label_probs is None:
                return tf.random.stateless_uniform((n, 1), seed, 0, self.num_classes,
                                                   dtype=tf.int32)
            logits = tf.math.log(tf.constant([self.label_probs], tf.float32))
            drawn = tf.random.stateless_categorical(logits, n, seed, dtype=tf.int32)
            return tf.reshape(drawn, (-1, 1))

        return self._replica_part(draw, batch_size)

    def sample_noise(self, batch_size):
        def draw(n):
            shape = (n, *self.latent_shape)
            if self.noise == "uniform":
                return keras.random.uniform(shape, 0.0, 1.0, seed=self.seed_generator)
            return keras.random.normal(shape, seed=self.seed_generator)

        return self._replica_part(draw, batch_size)

    @property
    def sampler(self):
        """The generator to sample from: the EMA copy when enabled, else the trained one."""
        return self.ema_generator if self.ema_generator is not None else self.generator

    @property
    def exported(self):
        """The generator as saved, evaluated and served: the ``sampler``; for a GAN that
        mixes classes, the sampler drawing its class from one more noise coordinate (same
        layers and weights, built once)."""
        if not self.mix_classes:
            return self.sampler
        if self._exported is None:  # (not tracked: its weights are the sampler's, saved once)
            object.__setattr__(self, "_exported",
                               kinds.class_mixture(self.sampler, self.label_probs))
        return self._exported

    def call(self, inputs, training=False):
        """``inputs``: z, or ``[z, labels]`` for a conditional GAN."""
        if training:
            return self.generator(inputs, training=True)
        return self.sampler(inputs, training=False)

    def generator_inputs(self, batch_size, labels=None, paired=False):
        """Fresh noise (and, conditional, ``labels`` or fresh ones) for ``batch_size``.
        ``paired``: row ``batch_size // 2 + i`` gets row ``i``'s fresh label (pairs of samples
        that differ in their noise alone, for ``losses.ModeSeeking``)."""
        z = self.sample_noise(batch_size)
        if not self.conditional:
            return z
        if labels is None and paired:
            second = self.sample_labels(batch_size - batch_size // 2)
            labels = ops.concatenate([second[:batch_size // 2], second], axis=0)
        return [z, self.sample_labels(batch_size) if labels is None else labels]

    def generate(self, batch_size):
        """``batch_size`` fresh samples from the model's own noise (and label) stream."""
        return self.sampler(self.generator_inputs(batch_size), training=False)

    def judge(self, samples, labels, training=True):
        """D's logits for ``samples`` (with their ``labels`` when conditional)."""
        return self.discriminator([samples, labels] if self.conditional else samples,
                                  training=training)

    def augmented(self, samples):
        """``samples`` as D sees them in training: through the augmentation, if any."""
        if not self.augmentation:
            return samples
        return self.augmentation(samples, self._replica_seed())

    def standing_statistics(self, batches: int, batch_size: int, seed: int = 0) -> None:
        """Set the sampler's BatchNorm statistics to those of its own samples (BigGAN's
        "standing statistics"). Each BatchNorm layer's moving mean and variance become the mean,
        over ``batches`` batches of ``batch_size`` fixed-seed noise vectors (and labels by the
        fake-label shares), of the batch mean and variance of the input it gets at sampling
        time, layer by layer (a later layer sees the earlier ones normalised as they will be).
        The EMA copy needs this: its moving statistics are averages of the trained G's, which
        do not match the activations of its averaged weights. A no-op without BatchNorm;
        deterministic for given weights and ``seed``; the training noise stream is untouched."""
        if batches < 1 or not standing.holds_batch_norm(self.sampler):
            return
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(batches):
            shape = (batch_size, *self.latent_shape)
            z = (rng.uniform(0.0, 1.0, shape) if self.noise == "uniform"
                 else rng.standard_normal(shape)).astype(np.float32)
            if self.conditional:
                labels = rng.choice(self.num_classes, size=(batch_size, 1), p=self.label_probs)
                draws.append([z, labels.astype(np.int32)])
            else:
                draws.append([z])
        standing.set_statistics(self.sampler, draws)

    def update_ema(self):
        step = ops.cast(self.ema_step, "float32")
        decay = ops.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
        for average, weight in zip(self.ema_generator.weights, self.generator.weights):
            average.assign(decay * average + (1.0 - decay) * ops.cast(weight, average.dtype))
        self.ema_step.assign_add(1)

    def discriminator_step(self, real, labels=None):
        """One D update on ``real`` (with its ``labels``, conditional) and a fresh fake batch;
        only D's weights change. Returns D's loss (penalties included) and the
        ``DiscriminatorPass`` (logits) it was computed from."""
        real = ops.convert_to_tensor(real)
        labels = None if labels is None else ops.convert_to_tensor(labels)
        inputs = self.generator_inputs(ops.shape(real)[0])
        fake_labels = inputs[1] if self.conditional else None
        fake = self.generator(inputs, training=True)
        with tf.GradientTape() as tape:
            # The input tape only records; D's input gradient is computed (and traced) only
            # when a penalty asks for it (R1 at real, R2 at fake), so it costs nothing otherwise.
            with tf.GradientTape(persistent=True) as input_tape:  # R1 and R2 may both ask
                input_tape.watch(real)
                input_tape.watch(fake)
                real_logits = self.judge(self.augmented(real), labels)
                fake_logits = self.judge(self.augmented(fake), fake_labels)
            step = losses.DiscriminatorPass(
                self.discriminator, real, fake, real_logits, fake_logits, input_tape,
                labels=labels, judge=self.judge, new_seed=self._replica_seed,
                iteration=self.d_optimizer.iterations)
            d_loss = self.loss_fn.discriminator(real_logits, fake_logits)
            for penalty in self.penalties:
                d_loss = d_loss + penalty(step)
            # / replicas (their gradients are summed); x the loss scale under float16
            scaled = self.d_optimizer.scale_loss(distribute.scale_loss(d_loss))
        grads = tape.gradient(scaled, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        return d_loss, step

    def generator_step(self, batch_size, real=None, labels=None):
        """One G update through a frozen-by-construction D; only G's weights change. A loss
        that ``needs_real`` (relativistic) also reads D's scores of ``real``."""
        if self.loss_fn.needs_real and real is None:
            raise ValueError(f"the {self.loss_fn.name} loss's G step needs a real batch")
        inputs = self.generator_inputs(
            batch_size, paired=any(getattr(p, "paired", False) for p in self.g_penalties))
        with tf.GradientTape() as tape:
            generated = self.generator(inputs, training=True)
            real_logits = (self.judge(self.augmented(real), labels)
                           if self.loss_fn.needs_real else None)
            g_loss = self.loss_fn.generator(
                self.judge(self.augmented(generated), inputs[1] if self.conditional else None),
                real_logits)
            g_pass = losses.GeneratorPass(inputs, generated)
            for penalty in self.g_penalties:
                g_loss = g_loss + penalty(g_pass)
            scaled = self.g_optimizer.scale_loss(distribute.scale_loss(g_loss))
        grads = tape.gradient(scaled, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        return g_loss, generated

    def unpack(self, data):
        """``(real, labels)`` of a batch: images alone, or ``(images, labels)``."""
        real, labels = (data[0], data[1]) if isinstance(data, (tuple, list)) else (data, None)
        if not self.conditional:
            return real, None  # (x, y) datasets are fine; the labels go unused
        if labels is None:
            raise ValueError("a conditional GAN trains on (images, labels) batches")
        return real, ops.reshape(ops.cast(labels, "int32"), (-1, 1))

    def train_step(self, data):
        real, labels = self.unpack(data)
        # D first, d_steps times, on this batch (with its labels) and fresh fakes ...
        for _ in range(self.d_steps):
            d_loss, d_pass = self.discriminator_step(real, labels)
        # ... then G, g_steps times, against the updated D ...
        for _ in range(self.g_steps):
            g_loss, generated = self.generator_step(ops.shape(real)[0], real, labels)
        # ... and the averaged copy of G follows.
        if self.ema_generator is not None:
            self.update_ema()

        values = {"d_loss": d_loss, "g_loss": g_loss,
                  **self.loss_fn.metrics(d_pass.real_logits, d_pass.fake_logits)}
        if self.track_moments:
            generated = ops.cast(generated, "float32")
            values["gen_mean"] = ops.mean(generated)
            values["gen_std"] = ops.std(generated)
        for name, value in values.items():
            self.trackers[name].update_state(value)
        # The first step whose losses are not finite is noted on the device; the host reads it
        # once per call of the compiled step (``steps_per_execution`` batches), not every batch.
        self.health.update(d_loss, g_loss)
        return distribute.step_logs({name: tracker.result()
                                     for name, tracker in self.trackers.items()})

    # -- serialisation -------------------------------------------------------------------------

    def get_config(self):
        return {
            "name": self.name,
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "noise": self.noise,
            "seed": self.seed,
            "ema_decay": self.ema_decay,
            "track_moments": self.track_moments,
            "num_classes": self.num_classes,
            "label_probs": self.label_probs,
            "mix_classes": self.mix_classes,
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
            "loss": keras.saving.serialize_keras_object(self.loss_fn),
            "penalties": [keras.saving.serialize_keras_object(p) for p in self.penalties],
            "g_penalties": [keras.saving.serialize_keras_object(p) for p in self.g_penalties],
            "augmentation": keras.saving.serialize_keras_object(self.augmentation),
            "d_steps": self.d_steps,
            "g_steps": self.g_steps,
        }

    def compile_from_config(self, config):
        config = dict(config)
        for key in ("d_optimizer", "g_optimizer", "loss"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        config["penalties"] = [keras.saving.deserialize_keras_object(p)
                               for p in config.get("penalties", [])]
        config["g_penalties"] = [keras.saving.deserialize_keras_object(p)
                                 for p in config.get("g_penalties", [])]
        if config.get("augmentation") is not None:
            config["augmentation"] = keras.saving.deserialize_keras_object(config["augmentation"])
        self.compile(**config)  # builds the optimizers, so that their saved state loads too

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a tf.distribute strategy Keras' fit first takes one batch to learn its shapes,
        # reducing it across replicas in ONE call on the whole batch structure. Under
        # MultiWorkerMirroredStrategy that call cannot take an (images, labels) pair: the
        # conditional and labelled families failed before their first step ("Attempt to convert
        # a value (PerReplica ...) to a Tensor"). Only the shapes matter here, so each part is
        # taken from this worker's first replica instead (no collective).
        if iterator is not None and self._distribute_strategy is not None:
            for _, _, batches in iterator:
                batch = next(batches)
                break
            data_batch = tf.nest.map_structure(
                lambda v: (self._distribute_strategy.experimental_local_results(v)[0]
                           if isinstance(v, tf.distribute.DistributedValues) else v), batch)
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
