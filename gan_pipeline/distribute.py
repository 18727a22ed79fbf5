"""Devices: which ``tf.distribute`` strategy trains, and how losses scale across replicas.

- ``TF_CONFIG`` set: ``MultiWorkerMirroredStrategy`` (every worker runs the same command; see the
  README for an example with a shared MLflow tracking server).
- Several GPUs: ``MirroredStrategy`` over all of them.
- Otherwise the default strategy: the one GPU, else the CPU.

Precision (``train.precision``): ``auto`` picks ``mixed_bfloat16`` on GPUs that compute in
bfloat16 natively (compute capability 8.0+: A100, H100), ``mixed_float16`` on older GPUs (7.x,
with a ``LossScaleOptimizer`` around each optimizer), ``float32`` on older GPUs still. On a CPU it
picks ``mixed_bfloat16`` when the CPU has bfloat16 instructions (AVX512-BF16 or AMX-BF16; twice
the DCGAN step, see docs/benchmarks.md) and ``float32`` otherwise. Models whose sample kind keeps
float32 (the 1-D GAN, see ``gan_pipeline.kinds``) always get ``float32``. Mixed policies keep variables, samples and logits in float32.

``batch_size`` is always the GLOBAL batch: each of N replicas sees batch_size / N examples, Keras
sums the replicas' gradients, so each replica's mean loss is divided by N (``scale_loss``), which
makes the update the same as one device on the whole batch. Metrics are reported un-scaled.
"""

from __future__ import annotations

import functools
import json
import os
import platform
from pathlib import Path

import tensorflow as tf


@functools.cache
def strategy() -> tf.distribute.Strategy:
    """The strategy for this process: multi-worker, multi-GPU or the default one. (With
    ``TF_CONFIG``, call it at program start, before TensorFlow runs any op: the CLI does.)"""
    if os.environ.get("TF_CONFIG"):
        # A collective that waits longer than this fails instead of hanging (a dead worker is
        # usually seen sooner, by the coordination service's heartbeats).
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=collective_timeout())
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


TIMEOUT_ENV = "GAN_PIPELINE_COLLECTIVE_TIMEOUT"


def collective_timeout() -> float:
    """Seconds a multi-worker collective may wait for the other workers ($GAN_PIPELINE_
    COLLECTIVE_TIMEOUT, default 600: long enough for the chief's evaluation between epochs)."""
    text = os.environ.get(TIMEOUT_ENV, "600")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 1 <= value <= 86_400:
        from gan_pipeline.errors import UserError

        raise UserError(f"${TIMEOUT_ENV} = {text!r} is not valid: expected seconds from 1 to "
                        "86400")
    return value


def _tf_config() -> dict:
    return json.loads(os.environ.get("TF_CONFIG") or "{}")


def task_index() -> int:
    """This worker's index in ``TF_CONFIG`` (0 without one)."""
    return int((_tf_config().get("task") or {}).get("index", 0))


def worker_addresses() -> list[str]:
    """The ``host:port`` of every task in ``TF_CONFIG``'s cluster, chief first."""
    cluster = _tf_config().get("cluster") or {}
    return [address for kind in ("chief", "worker") for address in cluster.get(kind, [])]


def weight_spread(variables) -> float:
    """The largest difference between workers in any variable's sum or sum of squares (0 when
    every worker holds the same weights, as it should after a multi-worker run; 0 on one)."""
    if not multi_worker():
        return 0.0
    current = strategy()

    @tf.function
    def checksums():
        local = tf.stack([tf.reduce_sum(tf.cast(v, tf.float64) ** p)
                          for v in variables for p in (1, 2)])
        every = tf.distribute.get_replica_context().all_gather(local[None], axis=0)
        return tf.reduce_max(tf.reduce_max(every, 0) - tf.reduce_min(every, 0))

    result = current.experimental_local_results(current.run(checksums))[0]
    return float(result.numpy())


def is_chief() -> bool:
    """False only for a worker that ``TF_CONFIG`` does not make the chief (index 0, or a
    "chief" task): only the chief logs to MLflow and keeps checkpoints."""
    config = _tf_config()
    task = config.get("task") or {}
    if task.get("type") in (None, "chief"):
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 \
        and "chief" not in config.get("cluster", {})


def multi_worker() -> bool:
    """Whether this process trains as one worker of several (``TF_CONFIG`` set)."""
    return bool(os.environ.get("TF_CONFIG")) and isinstance(
        strategy(), tf.distribute.MultiWorkerMirroredStrategy)


def step_logs(logs: dict) -> dict:
    """A train step's scalar logs as ``fit`` can reduce them under any strategy. Keras 3 averages
    a multi-worker step's outputs with ``strategy.reduce("MEAN", v, axis=0)``, which fails on
    scalars ("Invalid reduction dimension 0 for input with 0 dimensions", tensorflow#72388);
    there each value goes out as shape (1,), and the reduction gives back the scalar mean over
    the workers."""
    if not multi_worker():
        return logs
    return {name: tf.reshape(value, (1,)) for name, value in logs.items()}


def replicas() -> int:
    """Replicas of the strategy in scope (1 outside any)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_loss(loss):
    """A replica's mean loss divided by the number of replicas (gradients are summed)."""
    n = replicas()
    return loss / n if n > 1 else loss


# The CPU features that decide what oneDNN runs fast (printed beside every timing)
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def _cpuinfo() -> tuple[str, set[str]] | None:
    """The first CPU's model name and flags from /proc/cpuinfo (None where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in lines
                      if line.startswith("flags")), []))
    return model, flags


def cpu_description() -> str:
    """The CPU's model name and which of ``SPEED_FLAGS`` it has (Linux; else the platform)."""
    info = _cpuinfo()
    if info is None:
        return platform.processor() or platform.machine()
    model, flags = info
    have = [f for f in SPEED_FLAGS if f in flags]
    lacks = [f for f in SPEED_FLAGS if f not in flags]
    return f"{model}; flags {' '.join(have) or 'none'}; without {' '.join(lacks) or 'none'}"


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16; Linux only)."""
    flags = (_cpuinfo() or ("", set()))[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def precision(setting: str = "auto", mixed_ok: bool = True) -> str:
    """The dtype policy name ``train.precision`` resolves to on this machine. ``mixed_ok`` is
    False for models whose samples' kind keeps float32 (``gan_pipeline.kinds``: the 1-D GAN)."""
    if setting != "auto":
        return setting
    if not mixed_ok:
        return "float32"
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "mixed_bfloat16" if cpu_has_bf16() else "float32"
    major, minor = tf.config.experimental.get_device_details(gpus[0]).get(
        "compute_capability", (0, 0))
    if (major, minor) >= (8, 0):
        return "mixed_bfloat16"
    return "mixed_float16" if major >= 7 else "float32"


# Batches per compiled call when ``train.steps_per_execution = 0``: on a GPU a small GAN's step
# takes about a millisecond, and the host's work between calls (callbacks, the progress bar, a
# sync) would cost as much again; on a CPU the step itself dominates (docs/benchmarks.md).
AUTO_STEPS_PER_EXECUTION = {"GPU": 32, "CPU": 1}


def steps_per_execution(setting: int, steps: int, done: int = 0) -> int:
    """Batches per call of the compiled train step for ``train.steps_per_execution`` (0: by
    device), in an epoch of ``steps`` batches of which ``done`` already ran (a resume): the
    largest count up to the setting that divides both, so that every call ends inside the
    epoch and a stop or checkpoint between calls falls where a resume can continue."""
    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    wanted = max(1, setting or AUTO_STEPS_PER_EXECUTION[device])
    return max(k for k in range(1, min(wanted, steps) + 1) if steps % k == 0 and done % k == 0)


def prefetched_to_device(dataset: tf.data.Dataset, device: str | None = None) -> tf.data.Dataset:
    """``dataset`` with its next batches copied to the accelerator while the step runs, so the
    step does not wait for the host-to-device copy. ``device`` defaults to the one GPU when
    training runs on exactly one (several replicas: the strategy's distributed dataset
    prefetches to each already; a CPU: nothing to copy). Must be the last transformation."""
    if device is None:
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) != 1 or strategy().num_replicas_in_sync != 1:
            return dataset
        device = gpus[0].name
    return dataset.apply(tf.data.experimental.prefetch_to_device(device, buffer_size=2))


def jit_compile(setting: str = "auto"):
    """``train.jit_compile`` as Keras' ``compile(jit_compile=...)`` takes it."""
    return {"auto": "auto", "on": True, "off": False}[setting]
