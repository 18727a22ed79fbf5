"""Training: build data, models and the GAN from a validated config, fit, and track in MLflow."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import mlflow
import numpy as np

from gan_pipeline import config as config_mod
from gan_pipeline import data as data_mod
from gan_pipeline import evaluation, models, tracking
from gan_pipeline.gan import GAN


@dataclass
class Result:
    run_id: str
    model_uri: str | None
    history: dict[str, list[float]]
    gan: GAN


def build_gan(cfg: dict, shape: tuple[int, ...]) -> GAN:
    """The compiled GAN a config describes, for samples of ``shape``."""
    model_cfg = dict(cfg["model"])
    family_name = model_cfg.pop("name")
    generator, discriminator = models.build(family_name, shape, **model_cfg)
    gan = GAN(generator, discriminator, noise=models.get_family(family_name).noise,
              seed=cfg["seed"], ema_decay=cfg["train"]["ema_decay"], name=f"{family_name}_gan")
    t = cfg["train"]
    gan.compile(
        d_optimizer=keras.optimizers.Adam(t["d_learning_rate"], beta_1=t["beta_1"],
                                          beta_2=t["beta_2"]),
        g_optimizer=keras.optimizers.Adam(t["g_learning_rate"], beta_1=t["beta_1"],
                                          beta_2=t["beta_2"]),
        loss=t["loss"], label_smoothing=t["label_smoothing"],
        d_steps=t["d_steps"], g_steps=t["g_steps"],
    )
    return gan


def fixed_noise(gan: GAN, n: int, seed: int) -> np.ndarray:
    """The noise batch whose samples are pictured every epoch (same seed -> same batch)."""
    rng = np.random.default_rng(seed)
    shape = (n, *gan.latent_shape)
    if gan.noise == "uniform":
        return rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def train(cfg: dict, verbose: int | str = 1) -> Result:
    """Train the GAN ``cfg`` describes into one MLflow run; returns the run id and history.

    Everything that can fail on user input (data, model shapes) is checked before the run is
    created, so a bad config leaves nothing behind in MLflow.
    """
    keras.utils.set_random_seed(cfg["seed"])
    data = data_mod.from_config(cfg)
    gan = build_gan(cfg, data.shape)
    batch_size = cfg["batch_size"]
    steps = cfg["train"]["steps_per_epoch"] or data.num_examples // batch_size
    noise = fixed_noise(gan, cfg["tracking"]["grid_size"], cfg["seed"])
    real_preview = data_mod.real_samples(cfg, cfg["tracking"]["grid_size"], cfg["seed"])
    evaluate = evaluation.GeneratorEvaluator(cfg) if cfg["eval"]["every_epochs"] else None

    tracking.configure(cfg["tracking"]["uri"])
    classifier_run = (tracking.log_classifier(evaluate.images.classifier)
                      if evaluate is not None and evaluate.images is not None else None)
    mlflow.set_experiment(cfg["tracking"]["experiment"] or cfg["name"])
    with mlflow.start_run(run_name=cfg["tracking"]["run_name"] or None) as run:
        print(f"MLflow run {run.info.run_id} (experiment "
              f"{cfg['tracking']['experiment'] or cfg['name']!r}, {mlflow.get_tracking_uri()})",
              flush=True)
        params = config_mod.flatten(cfg)
        params.update({
            "resolved.steps_per_epoch": steps,
            "resolved.sample_shape": list(data.shape),
            "resolved.latent_shape": list(gan.latent_shape),
            "resolved.noise": gan.noise,
            "resolved.train_examples": data.num_examples,
            "resolved.generator_params": gan.generator.count_params(),
            "resolved.discriminator_params": gan.discriminator.count_params(),
            "resolved.backend": keras.backend.backend(),
        })
        mlflow.log_params(params)
        if classifier_run:
            mlflow.set_tag("evaluation_classifier_run", classifier_run)
        logger = tracking.MlflowLogger(noise, real_preview, title=cfg["name"], evaluate=evaluate,
                                       every=cfg["eval"]["every_epochs"])
        gan.fit(data.dataset.repeat(), epochs=cfg["epochs"], steps_per_epoch=steps,
                callbacks=[logger], verbose=verbose, shuffle=False)
        model_uri = tracking.log_generator(gan.sampler) if cfg["tracking"]["log_model"] else None
        print(f"Finished MLflow run {run.info.run_id}. To review it, {tracking.run_link(run)}",
              flush=True)
        print(f"Samples: gan-pipeline sample --model {run.info.run_id} --n 100 --out samples.png",
              flush=True)
    return Result(run.info.run_id, model_uri, logger.history, gan)
