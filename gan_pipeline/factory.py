"""``build_gan``: the compiled GAN a config describes: the family's networks under the resolved
dtype policy, the generator's spec, the loss and penalties, one Adam per network (with a
learning-rate schedule and float16 loss scaling when asked for)."""

from __future__ import annotations

import contextlib

import keras

from gan_pipeline import augment, distribute, families, kinds, losses
from gan_pipeline.errors import UserError
from gan_pipeline.gan import GAN


@contextlib.contextmanager
def dtype_policy(policy: str):
    """The global Keras dtype policy set to ``policy`` while the block runs (layers take the
    policy in force when they are made)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def resolved_precision(cfg) -> str:
    """The dtype policy ``train.precision`` resolves to for this config on this machine."""
    family = families.get(cfg.model.name)
    return distribute.precision(cfg.train.precision, family.kind.mixed_precision)


def build_gan(cfg, shape: tuple[int, ...], total_batches: int = 0,
              data_spec: dict | None = None, class_names: list[str] | None = None,
              class_shares: list[float] | None = None) -> GAN:
    """The compiled GAN ``cfg`` describes, for samples of ``shape``.

    ``total_batches`` is the length of the run in batches: with ``train.lr_schedule = "cosine"``
    each learning rate decays to 0 over it (over ``d_steps``/``g_steps`` times as many optimizer
    steps). The optimizers' step counts are checkpointed, so a resumed run continues the decay.
    ``data_spec`` (the data settings) is saved inside the generator for ``evaluate``. A
    conditional family needs the data's ``class_names`` (saved in the generator's spec) and,
    with ``train.fake_labels = "data"``, its ``class_shares``.
    """
    family = families.get(cfg.model.name)
    t = cfg.train
    policy = resolved_precision(cfg)
    classes = list(class_names or []) if family.conditional else []
    if family.conditional and not classes:
        raise UserError(f"model.name = {family.name!r} is conditional and needs labelled data; "
                        f"data.dataset = {cfg.data.dataset!r} has no labels")
    label_probs = None
    if classes and t.fake_labels == "data":
        if class_shares is None:
            raise ValueError("train.fake_labels = 'data' needs the data's class shares")
        label_probs = list(class_shares)
    with dtype_policy(policy):
        generator, discriminator = family.build(shape, len(classes), **cfg.hyperparameters())
        generator = kinds.attach_spec(generator, noise=family.noise, kind=family.kind.name,
                                      family=family.name,
                                      data=data_spec if data_spec is not None else
                                      cfg.data.to_dict(), class_names=classes or None)
        generator = kinds.with_truncation(generator, cfg.model.truncation)
        gan = GAN(generator, discriminator, noise=family.noise, seed=cfg.seed,
                  ema_decay=t.ema_decay, track_moments=family.kind.track_moments,
                  num_classes=len(classes), label_probs=label_probs,
                  mix_classes=family.mixes_classes,
                  name=f"{family.name}_gan")

    def adam(learning_rate, steps_per_batch):
        if t.lr_schedule == "cosine":
            if total_batches < 1:
                raise ValueError("train.lr_schedule = 'cosine' needs the run's length in batches")
            learning_rate = keras.optimizers.schedules.CosineDecay(
                learning_rate, decay_steps=total_batches * steps_per_batch)
        optimizer = keras.optimizers.Adam(learning_rate, beta_1=t.beta_1, beta_2=t.beta_2)
        # float16 gradients underflow without loss scaling; one scaler per network
        return (keras.optimizers.LossScaleOptimizer(optimizer) if policy == "mixed_float16"
                else optimizer)

    gan.compile(
        d_optimizer=adam(t.d_learning_rate, t.d_steps),
        g_optimizer=adam(t.g_learning_rate, t.g_steps),
        loss=losses.make_loss(t.loss, **t.to_dict()),
        penalties=losses.penalties_from(t),
        g_penalties=losses.generator_penalties_from(t),
        augmentation=augment.DiffAugment(t.augment),
        d_steps=t.d_steps, g_steps=t.g_steps,
        jit_compile=distribute.jit_compile(t.jit_compile),
    )
    return gan


def gan_for(cfg, source, total_batches: int = 0) -> GAN:
    """``build_gan`` for the data ``source``: its sample shape, its settings (saved in the
    generator) and, for a conditional family, its classes (and their shares when fake labels
    follow the data)."""
    conditional = families.get(cfg.model.name).conditional
    classes = source.require_labels(f"model.name = {cfg.model.name!r} (a conditional "
                                    "family)") if conditional else None
    shares = source.class_shares() if conditional and cfg.train.fake_labels == "data" else None
    return build_gan(cfg, source.shape, total_batches=total_batches, data_spec=source.spec(),
                     class_names=classes, class_shares=shares)
