"""Speed settings train correctly: every precision policy and XLA setting gives finite losses,
float32 samples and logits, and a saved generator that loads in safe mode and outputs float32."""

import tempfile
from pathlib import Path
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from gan_pipeline import config, distribute
from gan_pipeline.factory import build_gan, resolved_precision
from tests.helpers import TINY

SHAPES = {"dcgan": (8, 8, 1), "mlp": (4, 4, 1), "gaussian_1d": (16,)}


def tiny_cfg(family, *sets):
    data = "gaussian_1d" if family == "gaussian_1d" else "mnist"
    items = [f"model.name={family}", f"data.dataset={data}", "train.ema_decay=0.99",
             *[f"model.{k}={v}" for k, v in TINY[family].items()], *sets]
    return config.validate(config.apply_overrides({}, items))


def real_batch(shape, n=16):
    low = 3.0 if len(shape) == 1 else -1.0
    return np.random.default_rng(0).uniform(low, low + 2, (n, *shape)).astype("float32")


class PrecisionTest(tf.test.TestCase):
    def _train(self, family, precision, jit="off"):
        cfg = tiny_cfg(family, f"train.precision={precision}", f"train.jit_compile={jit}")
        gan = build_gan(cfg, SHAPES[family])
        before = [w.numpy() for w in gan.generator.trainable_weights]
        ds = tf.data.Dataset.from_tensor_slices(real_batch(SHAPES[family], 64)).batch(16)
        history = gan.fit(ds, epochs=1, verbose=0).history
        return gan, history, before

    def test_every_policy_trains_with_float32_outputs_and_variables(self):
        for family in ("dcgan", "mlp", "gaussian_1d"):
            for precision in ("float32", "mixed_bfloat16", "mixed_float16"):
                with self.subTest(family=family, precision=precision):
                    gan, history, before = self._train(family, precision)
                    self.assertTrue(np.isfinite(history["d_loss"]).all())
                    self.assertTrue(np.isfinite(history["g_loss"]).all())
                    compute = precision.removeprefix("mixed_")
                    self.assertEqual(gan.generator.layers[2].compute_dtype, compute)
                    self.assertTrue(all(w.dtype == "float32" for w in gan.weights
                                        if "seed" not in w.path and "step" not in w.path
                                        and "iteration" not in w.path))
                    z = gan.sample_noise(4)
                    self.assertEqual(gan.generator(z).dtype, "float32")
                    self.assertEqual(gan.discriminator(gan.generator(z)).dtype, "float32")
                    moved = any(not np.allclose(a, b.numpy()) for a, b in
                                zip(before, gan.generator.trainable_weights))
                    self.assertTrue(moved, "the generator trained")

    def test_float16_wraps_each_optimizer_in_a_loss_scaler(self):
        gan, _, _ = self._train("mlp", "mixed_float16")
        for optimizer in (gan.d_optimizer, gan.g_optimizer):
            self.assertIsInstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.assertIsNot(gan.d_optimizer, gan.g_optimizer)
        gan, _, _ = self._train("mlp", "mixed_bfloat16")
        self.assertNotIsInstance(gan.d_optimizer, keras.optimizers.LossScaleOptimizer)

    def test_xla_step_trains(self):
        for precision in ("float32", "mixed_bfloat16"):
            with self.subTest(precision=precision):
                gan, history, _ = self._train("dcgan", precision, jit="on")
                self.assertTrue(gan.jit_compile)
                self.assertTrue(np.isfinite(history["d_loss"]).all())

    def test_xla_step_trains_a_labelled_gan_drawing_classes_by_the_datas_shares(self):
        # the MNIST files' settings: fake labels drawn by the data's class shares
        cfg = config.validate(config.apply_overrides({}, [
            "model.name=labelled_dcgan", "train.fake_labels=data", "train.jit_compile=on",
            "train.mode_seeking=0.1", *[f"model.{k}={v}" for k, v in TINY["cdcgan"].items()]]))
        gan = build_gan(cfg, (28, 28, 1), class_names=list("0123456789"),
                        class_shares=[0.1] * 10)
        self.assertTrue(gan.jit_compile)
        rng = np.random.default_rng(0)
        ds = tf.data.Dataset.from_tensor_slices(
            (rng.uniform(-1, 1, (32, 28, 28, 1)).astype("float32"),
             rng.integers(0, 10, 32))).batch(16)
        history = gan.fit(ds, epochs=1, verbose=0).history
        self.assertTrue(np.isfinite(history["d_loss"]).all())
        self.assertTrue(np.isfinite(history["g_loss"]).all())

    def test_saved_mixed_generator_loads_and_outputs_float32(self):
        gan, _, _ = self._train("dcgan", "mixed_bfloat16")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "g.keras"
            gan.sampler.save(path)
            loaded = keras.models.load_model(path, safe_mode=True)
        z = gan.sample_noise(4)
        out = loaded(z)
        self.assertEqual(out.dtype, "float32")
        self.assertAllClose(out, gan.sampler(z), atol=1e-2)

    def test_building_leaves_the_global_policy_alone(self):
        self._train("mlp", "mixed_bfloat16")
        self.assertEqual(keras.config.dtype_policy().name, "float32")

    def test_auto_resolves_by_device(self):
        if not tf.config.list_physical_devices("GPU"):
            # CPUs: bfloat16 for images only where the CPU has bfloat16 instructions; 1-D never
            for has_bf16, images in ((True, "mixed_bfloat16"), (False, "float32")):
                with mock.patch.object(distribute, "cpu_has_bf16", return_value=has_bf16):
                    self.assertEqual(resolved_precision(tiny_cfg("dcgan")), images)
                    self.assertEqual(resolved_precision(tiny_cfg("gaussian_1d")), "float32")
        self.assertEqual(resolved_precision(tiny_cfg("gaussian_1d",
                                                     "train.precision=mixed_float16")),
                         "mixed_float16")
        self.assertEqual(distribute.jit_compile("on"), True)

    def test_cpu_bf16_flags_are_read_from_cpuinfo(self):
        cpuinfo = "processor : 0\nflags : fpu sse avx512f {}\n"
        for flag, expected in (("avx512_bf16", True), ("amx_bf16", True), ("avx512_vnni", False)):
            distribute.cpu_has_bf16.cache_clear()
            with mock.patch.object(distribute.Path, "read_text",
                                   return_value=cpuinfo.format(flag)):
                self.assertEqual(distribute.cpu_has_bf16(), expected, flag)
        distribute.cpu_has_bf16.cache_clear()
