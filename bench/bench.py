"""Training-step benchmark (`make bench`): ours against the loops GAN tutorials teach.

On the same data, architecture, batch size and machine it times, after warm-up, the median of
several repeats of:
  (a) the tutorial loop: `generator.predict`, `discriminator.train_on_batch` on real and on fake,
      then `gan.train_on_batch` on a stacked model whose discriminator is frozen;
  (b) a keras.io-style subclassed `train_step`: two tapes, fresh noise, default compile settings;
  (c) `gan_pipeline.gan.GAN.train_step` built from the pipeline file, as `make pipeline` trains it.
Conditional models have no tutorial counterpart here: their rows time (c) alone. The MNIST DCGAN
and MLP files train class-labelled models (`labelled_dcgan`, `labelled_mlp`); the `dcgan` and
`mlp` rows time those files with their unconditional seed architectures, so that (a), (b) and (c)
run the same networks, and the `labelled_*` rows the files as they are. The `*_unlabelled` rows
time those networks conditioned on k-means clusters (the clustering itself is not timed).
It also times the input pipeline alone and the share of a training step spent waiting for input,
and measures the peak resident memory of a real MNIST DCGAN training run.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from gan_pipeline import config, data, distribute, families, flops  # noqa: E402
from gan_pipeline.errors import UserError  # noqa: E402
from gan_pipeline.factory import gan_for, resolved_precision  # noqa: E402
from gan_pipeline.fitting import set_steps_per_execution  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# row -> (pipeline file, settings changed in it)
ROWS = {"dcgan": ("mnist_dcgan.toml", ["model.name=dcgan"]),
        "labelled_dcgan": ("mnist_dcgan.toml", []),
        "mlp": ("mnist_mlp.toml", ["model.name=mlp_bn"]),
        "labelled_mlp": ("mnist_mlp.toml", []),
        "gaussian_1d": ("gaussian_1d.toml", []),
        "cgan": ("mnist_cgan.toml", []),
        "dcgan_unlabelled": ("mnist_dcgan_unlabelled.toml", []),
        "mlp_unlabelled": ("mnist_mlp_unlabelled.toml", [])}
PIPELINES = {row: file for row, (file, _) in ROWS.items()}


def load_cfg(name: str, batch_size: int, sets: list[str] = ()):
    if name not in ROWS:
        raise UserError(f"unknown bench row {name!r} in --models; allowed: {', '.join(ROWS)}")
    file, changed = ROWS[name]
    return config.load(REPO / "pipelines" / file,
                       [f"batch_size={batch_size}", "eval.every_epochs=0", *changed, *sets])


def fmt(value: float, spec: str = ".0f") -> str:
    """A rate (``spec`` "/s": samples a second) or ratio; "n/a" where a loop was not timed."""
    if math.isnan(value):
        return "n/a"
    return f"{value:.0f}/s" if spec == "/s" else format(value, spec)


def pct(fraction: float) -> str:
    return "n/a" if math.isnan(fraction) else f"{fraction:.1%}"


def timed(fn, steps: int, repeats: int) -> float:
    """Median seconds per step of ``fn(steps)`` over ``repeats`` runs (after one warm-up)."""
    fn(max(3, steps // 5))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(steps)
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def networks(cfg, shape):
    """The pipeline's own (generator, discriminator), in float32, for the reference loops."""
    return families.build(cfg.model.name, shape, **cfg.hyperparameters())


def tutorial_loop(cfg, real: np.ndarray):
    """(a) The classic tutorial: predict + train_on_batch, frozen D in a stacked model."""
    g, d = networks(cfg, real.shape[1:])
    t = cfg.train
    d.compile(optimizer=keras.optimizers.Adam(t.d_learning_rate, beta_1=t.beta_1),
              loss=keras.losses.BinaryCrossentropy(from_logits=True))
    d.trainable = False
    z = keras.Input(g.input_shape[1:])
    stacked = keras.Model(z, d(g(z)))
    stacked.compile(optimizer=keras.optimizers.Adam(t.g_learning_rate, beta_1=t.beta_1),
                    loss=keras.losses.BinaryCrossentropy(from_logits=True))
    batch = cfg.batch_size
    latent = g.input_shape[1:]
    rng = np.random.default_rng(0)
    ones = np.full((batch, 1), t.label_smoothing, np.float32)
    zeros = np.zeros((batch, 1), np.float32)

    def run(steps):
        for _ in range(steps):
            x = real[rng.integers(0, len(real), batch)]
            noise = rng.standard_normal((batch, *latent)).astype(np.float32)
            fake = g.predict(noise, verbose=0)
            d.trainable = True
            d.train_on_batch(x, ones)
            d.train_on_batch(fake, zeros)
            d.trainable = False
            stacked.train_on_batch(rng.standard_normal((batch, *latent)).astype(np.float32),
                                   np.ones((batch, 1), np.float32))
    return run


class KerasIoGAN(keras.Model):
    """(b) The keras.io DCGAN example's model: one D pass on real+fake, labels with noise."""

    def __init__(self, discriminator, generator, latent_shape):
        super().__init__()
        self.discriminator, self.generator = discriminator, generator
        self.latent_shape = latent_shape
        self.seed_generator = keras.random.SeedGenerator(1337)

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer, self.g_optimizer, self.loss_fn = d_optimizer, g_optimizer, loss_fn

    def train_step(self, real_images):
        batch_size = tf.shape(real_images)[0]
        z = keras.random.normal((batch_size, *self.latent_shape), seed=self.seed_generator)
        generated = self.generator(z)
        combined = tf.concat([generated, real_images], axis=0)
        labels = tf.concat([tf.ones((batch_size, 1)), tf.zeros((batch_size, 1))], axis=0)
        labels += 0.05 * tf.random.uniform(tf.shape(labels))
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(combined))
        grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
        self.d_optimizer.apply_gradients(zip(grads, self.discriminator.trainable_weights))
        z = keras.random.normal((batch_size, *self.latent_shape), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((batch_size, 1)), self.discriminator(self.generator(z)))
        grads = tape.gradient(g_loss, self.generator.trainable_weights)
        self.g_optimizer.apply_gradients(zip(grads, self.generator.trainable_weights))
        return {"d_loss": d_loss, "g_loss": g_loss}


class _EpochSeconds(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def timed_fit(model, dataset, steps: int, repeats: int) -> float:
    """Median seconds per step of ``model.fit`` as training runs it: ONE fit, so one dataset
    iterator (one filled shuffle buffer) throughout; a warm-up epoch, then an epoch per repeat.
    (A fit per repeat would refill MNIST's 60,000-image shuffle buffer each time and charge it to
    the step.)"""
    epochs = _EpochSeconds()
    model.fit(dataset, epochs=repeats + 1, steps_per_epoch=steps, verbose=0, callbacks=[epochs])
    return statistics.median(epochs.seconds[1:]) / steps


def keras_io(cfg, shape: tuple[int, ...]):
    g, d = networks(cfg, shape)
    model = KerasIoGAN(d, g, g.input_shape[1:])
    t = cfg.train
    model.compile(keras.optimizers.Adam(t.d_learning_rate, beta_1=t.beta_1),
                  keras.optimizers.Adam(t.g_learning_rate, beta_1=t.beta_1),
                  keras.losses.BinaryCrossentropy(from_logits=True))
    return model


def input_only(dataset):
    iterator = iter(dataset)

    def run(steps):
        for _ in range(steps):
            next(iterator)
    return run


def _best_seconds_per_call(fn, calls: int = 7) -> float:
    """Fewest seconds of ``fn()`` over ``calls`` runs after two warm-ups (graph tracing, oneDNN
    kernel choice). A limit is what the machine reaches at its best, so the minimum, not the
    median: a moment of contention must not lower the peak and lift MFU past 100%."""
    fn(), fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measured_peak(batch: int, n: int = 2048) -> dict[str, float]:
    """The machine's own limit, timed here: FLOP/s of a large (n x n) matmul in bfloat16 and in
    float32, and of the DCGAN discriminator's largest convolution (5x5, 64 -> 128 channels,
    stride 2, 14x14 -> 7x7) at this batch, in both dtypes."""
    peak = {}
    for dtype in ("bfloat16", "float32"):
        a = tf.random.normal((n, n), dtype=tf.float32)
        a = tf.cast(a, dtype)
        matmul = tf.function(lambda a=a: tf.reduce_sum(tf.matmul(a, a)[0, :1]))
        peak[f"matmul {dtype}"] = 2 * n ** 3 / _best_seconds_per_call(lambda: matmul().numpy())
        x = tf.cast(tf.random.normal((batch, 14, 14, 64)), dtype)
        k = tf.cast(tf.random.normal((5, 5, 64, 128)) * 0.05, dtype)
        conv = tf.function(lambda x=x, k=k: tf.reduce_sum(
            tf.nn.conv2d(x, k, strides=2, padding="SAME")[0, 0, 0, :1]))
        conv_flops = 2 * batch * 7 * 7 * 5 * 5 * 64 * 128
        peak[f"conv {dtype}"] = conv_flops / _best_seconds_per_call(lambda: conv().numpy())
    return peak


def peak_for(precision: str, peak: dict[str, float]) -> float:
    """MFU's denominator: the fastest kernel measured in the dtype a loop computes in (the
    matmul or the DCGAN convolution, whichever this machine runs faster)."""
    dtype = "bfloat16" if "bfloat16" in precision else "float32"
    return max(peak[f"matmul {dtype}"], peak[f"conv {dtype}"])


def peak_line(label: str, peak: dict[str, float]) -> str:
    return f"{label}: " + ", ".join(f"{k} {v / 1e12:.3f} TFLOP/s" for k, v in peak.items())


def best_of(*peaks: dict[str, float]) -> dict[str, float]:
    """Each kernel's best over several measurements (before and after the rows)."""
    return {k: max(p[k] for p in peaks) for k in peaks[0]}


# Runs the CLI and prints its own peak resident memory as it ends (``ru_maxrss`` of a child
# would count the pages of this big process that the child's exec replaced).
_PEAK_OF_CLI = ("import sys; from gan_pipeline import cli; "
                "from gan_pipeline.pipeline.child import peak_resident_gb; "
                "status = cli.main(sys.argv[1:]); print(f'peak_gb={peak_resident_gb()}'); "
                "sys.exit(status)")


def peak_rss_of_training() -> float:
    """Peak resident memory (GB) of a real MNIST DCGAN `train` in a subprocess (100 steps, no
    eval)."""
    with __import__("tempfile").TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", _PEAK_OF_CLI, "train", "--config",
                               str(REPO / "pipelines/mnist_dcgan.toml"), "--set", "epochs=1",
                               "--set", "train.steps_per_epoch=100", "--set",
                               "eval.every_epochs=0", "--set", "tracking.log_model=false"],
                              cwd=tmp, capture_output=True, text=True, check=True)
    return float(done.stdout.rsplit("peak_gb=", 1)[1].split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(PIPELINES))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--peak-n", type=int, default=2048, help="side of the peak's matmul")
    parser.add_argument("--variant", action="append", default=[], metavar="'KEY=VALUE ...'",
                        help="also time (c) with these settings, e.g. "
                             "'train.precision=mixed_bfloat16 train.jit_compile=on' (repeatable)")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} CPU cores ({distribute.cpu_description()}), GPUs: "
          f"{len(tf.config.list_physical_devices('GPU'))}; TF {tf.__version__}, "
          f"Keras {keras.__version__}; batch {args.batch_size}; median of {args.repeats} x "
          f"{args.steps} steps after warm-up", flush=True)
    before = measured_peak(args.batch_size, args.peak_n)
    print(peak_line("peak before the rows", before), flush=True)
    rows = []
    for name in args.models.split(","):
        # Each row starts from a clean slate: the rows before it leave models, datasets and
        # their iterators' threads behind until the garbage collector frees their cycles.
        gc.collect()
        keras.backend.clear_session()
        cfg = load_cfg(name, args.batch_size)
        keras.utils.set_random_seed(0)
        source = data.open_source(cfg)
        conditional = families.get(cfg.model.name).conditional
        batches = source.batches(cfg.batch_size, labels=conditional)
        stream = batches.repeat()
        shape = tuple(source.shape)
        # (c) as the pipeline builds it, with a learning-rate schedule spanning the timed steps
        run_length = (args.repeats + 1) * args.steps

        def ours(c):
            gan = gan_for(c, source, total_batches=run_length)
            set_steps_per_execution(gan, distribute.steps_per_execution(
                c.train.steps_per_execution, args.steps))  # as training resolves it
            return gan

        per_step = {"a": float("nan"), "b": float("nan")}
        if not conditional:  # the tutorial loops are unconditional
            real = np.concatenate([b.numpy() for b in batches.take(40)])
            per_step["a"] = timed(tutorial_loop(cfg, real), args.steps, args.repeats)
            per_step["b"] = timed_fit(keras_io(cfg, shape), stream, args.steps, args.repeats)
        gan = ours(cfg)
        per_step["c"] = timed_fit(gan, stream, args.steps, args.repeats)
        # (a) and (b) update D and G once a batch; (c) as often as the file says
        plain_flops = flops.train_step_flops(gan.generator, gan.discriminator)
        step_flops = flops.train_step_flops(gan.generator, gan.discriminator,
                                            cfg.train.d_steps, cfg.train.g_steps)
        per_step["input"] = timed(input_only(stream), args.steps * 4, args.repeats)
        # The same step fed from one cached batch: what the step costs without any input work
        # (the same model, built and traced once, fitted again on it).
        fixed = tf.data.Dataset.from_tensors(next(iter(batches))).repeat()
        per_step["c_no_input"] = timed_fit(gan, fixed, args.steps, args.repeats)
        for variant in args.variant:
            vcfg = load_cfg(name, args.batch_size, variant.split())
            per_step[f"c[{variant}]"] = timed_fit(ours(vcfg), stream, args.steps, args.repeats)
        rate = {k: args.batch_size / v for k, v in per_step.items()}
        wait = max(0.0, 1 - per_step["c_no_input"] / per_step["c"])
        resolved = resolved_precision(cfg)
        rows.append((name, rate, wait, resolved, (plain_flops, step_flops)))
        print(f"{name}: a {fmt(rate['a'])}, b {fmt(rate['b'])}, c {fmt(rate['c'])} samples/s "
              f"({resolved}); c/a {fmt(rate['c'] / rate['a'], '.2f')}, "
              f"c/b {fmt(rate['c'] / rate['b'], '.2f')}; input {fmt(rate['input'])} samples/s; "
              f"waiting for input {wait:.1%}; {plain_flops / 1e6:.3g} MFLOP a sample "
              f"((a), (b); (c) {step_flops / 1e6:.3g}), "
              f"c {rate['c'] * step_flops / 1e9:.3g} GFLOP/s", flush=True)
        for variant in args.variant:
            r = rate[f"c[{variant}]"]
            print(f"{name}: c with {variant}: {fmt(r)} samples/s; "
                  f"c/a {fmt(r / rate['a'], '.2f')}, c/b {fmt(r / rate['b'], '.2f')}", flush=True)

    after = measured_peak(args.batch_size, args.peak_n)
    print(peak_line("peak after the rows", after))
    peak = best_of(before, after)
    print(peak_line("peak, best of both", peak))
    print()
    print("| model | (a) tutorial loop | (b) keras.io train_step | (c) gan-pipeline | c/a | c/b "
          "| input pipeline alone | step share waiting for input | model FLOPs a sample (a, b / c) "
          "| (c) GFLOP/s | MFU (a) / (b) / (c) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, rate, wait, resolved, (plain_flops, step_flops) in rows:
        # MFU: model FLOP/s over the peak of the dtype each loop computes in ((a) and (b) run
        # the networks in float32)
        mfu = {k: rate[k] * plain_flops / peak_for("float32", peak) for k in "ab"}
        mfu["c"] = rate["c"] * step_flops / peak_for(resolved, peak)
        print(f"| {name} | {fmt(rate['a'], '/s')} | {fmt(rate['b'], '/s')} | "
              f"{fmt(rate['c'], '/s')} ({resolved}) | {fmt(rate['c'] / rate['a'], '.2f')} | "
              f"{fmt(rate['c'] / rate['b'], '.2f')} | {fmt(rate['input'], '/s')} | {wait:.1%} | "
              f"{plain_flops / 1e6:.3g} M / {step_flops / 1e6:.3g} M | "
              f"{rate['c'] * step_flops / 1e9:.3g} | "
              f"{pct(mfu['a'])} / {pct(mfu['b'])} / {pct(mfu['c'])} |")
    print("\nMFU: model FLOPs (gan_pipeline/flops.py: 4 G + 8 D forward a sample) a second over "
          "the best measured kernel (matmul or DCGAN convolution) of the loop's dtype (float32 "
          "for (a) and (b)), best of before and after the rows; (c) counts "
          "its file's train.d_steps and train.g_steps")
    if not args.no_memory:
        print(f"\npeak resident memory of an MNIST DCGAN training run: "
              f"{peak_rss_of_training():.2f} GB")
    return 0


def run() -> int:
    """``main``, with a user's mistake (an unknown row, MNIST not prepared) as one line and
    exit status 2, as the CLI reports it."""
    try:
        return main()
    except UserError as exc:
        print(f"gan-pipeline: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run())
