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
from pathlib import Path

import tensorflow as tf


@functools.cache
def strategy() -> tf.distribute.Strategy:
    """The strategy for this process: multi-worker, multi-GPU or the default one. (With
    ``TF_CONFIG``, call it at program start, before TensorFlow runs any op: the CLI does.)"""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief() -> bool:
    """False only for a worker that ``TF_CONFIG`` does not make the chief (index 0, or a
    "chief" task): only the chief logs to MLflow and keeps checkpoints."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    if task.get("type") in (None, "chief"):
        return True
    return task.get("type") == "worker" and task.get("index", 0) == 0 \
        and "chief" not in config.get("cluster", {})


def replicas() -> int:
    """Replicas of the strategy in scope (1 outside any)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_loss(loss):
    """A replica's mean loss divided by the number of replicas (gradients are summed)."""
    n = replicas()
    return loss / n if n > 1 else loss


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16; Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
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


def jit_compile(setting: str = "auto"):
    """``train.jit_compile`` as Keras' ``compile(jit_compile=...)`` takes it."""
    return {"auto": "auto", "on": True, "off": False}[setting]
