"""Checkpoints that let a run continue exactly where it stopped, and that belong to one run.

One folder per pipeline name, ``checkpoints/<name>/``, holds ``state.json`` (the latest run's
epoch, MLflow run id, training seconds so far, resolved config and checkpoint) and one
subfolder per run, ``<run id>/``, with its TensorFlow object checkpoints: the GAN (both
networks, the EMA copy), both optimizers and every random-number state (the model's noise
``SeedGenerator`` and the Dropout layers' ones, which neither ``.keras`` files nor plain
``tf.train.Checkpoint`` capture). A new run never inherits, skips or deletes another run's files.

Writes are atomic: ``tf.train.CheckpointManager`` writes the data files before it moves its
``checkpoint`` index to them, and ``state.json`` is replaced (write to a file of this process,
then rename) only after that. A crash mid-write leaves the previous checkpoint intact. One
process at a time writes a folder (``exclusive``: an OS lock, released when the process dies).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path

import tensorflow as tf

from gan_pipeline.errors import UserError

STATE_FILE = "state.json"
LOCK_FILE = ".lock"


def _trackable(gan) -> tf.train.Checkpoint:
    seeds = [v.value for v in gan.variables if "seed_generator_state" in v.path]
    return tf.train.Checkpoint(gan=gan, d_optimizer=gan.d_optimizer, g_optimizer=gan.g_optimizer,
                               seed_states=seeds)


def folder(root: str | Path, name: str) -> Path:
    return Path(root) / name


@contextlib.contextmanager
def exclusive(directory: Path, what: str = "training run"):
    """Hold ``directory`` for this process while the block runs; a second process gets a
    ``UserError`` naming the folder and the holder's pid. The OS drops the lock when the
    holder dies, however it dies."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(f"{directory} is in use by another gan-pipeline process (pid "
                            f"{holder}): one {what} at a time writes there. Wait for it to "
                            "finish, or give this one another name (--set name=...) or "
                            "tracking.checkpoint_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def save(directory: Path, gan, state: dict) -> Path:
    """Write a checkpoint of ``gan`` into the run's own subfolder of ``directory``, and
    ``state`` (with ``run_id``) into ``directory/state.json``; keeps the run's last two."""
    run_folder = directory / state["run_id"]
    run_folder.mkdir(parents=True, exist_ok=True)
    manager = tf.train.CheckpointManager(_trackable(gan), str(run_folder), max_to_keep=2)
    # Numbered by optimizer steps, which only grow: a new checkpoint never overwrites the one
    # state.json points to. With no step since the run's last save, the weights are that one.
    number = int(gan.d_optimizer.iterations.numpy())
    try:
        latest = manager.latest_checkpoint
        if latest and latest.endswith(f"-{number}"):
            path = latest
        else:
            path = manager.save(checkpoint_number=number)
        tmp = directory / f".{STATE_FILE}.{os.getpid()}.tmp"
        relative = Path(path).relative_to(directory)
        tmp.write_text(json.dumps({**state, "checkpoint": str(relative)}, indent=2))
        os.replace(tmp, directory / STATE_FILE)
    except (OSError, tf.errors.OpError) as exc:  # a full disk comes as ResourceExhaustedError
        text = str(exc)
        reason = getattr(exc, "strerror", None) or (
            "No space left on device" if "No space left" in text else type(exc).__name__)
        raise UserError(f"could not write a checkpoint to {directory}: {reason}; "
                        "the previous checkpoint is intact. Free some disk space (or set "
                        "tracking.checkpoint_dir) and resume with --resume") from None
    return Path(path)


def read_state(directory: Path) -> dict | None:
    """The ``state.json`` of a checkpoint folder, None when there is none."""
    path = directory / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        state["epoch"], state["run_id"], state["config"]  # noqa: B018 - required keys
    except (ValueError, KeyError) as exc:
        raise UserError(f"checkpoint {path} is corrupt ({type(exc).__name__}: {exc}); it was "
                        "not used. Delete the folder to start over, or restore it from a "
                        "backup") from None
    return state


def restore(directory: Path, gan, state: dict) -> None:
    """Load the checkpoint ``state`` names into ``gan`` (built and compiled from the same
    config: its optimizers' variables exist, so their saved state loads too)."""
    path = directory / state["checkpoint"]
    try:
        status = _trackable(gan).restore(str(path))
        status.assert_existing_objects_matched()
    except Exception as exc:  # TF reports damaged files as OpError, IndexError, ValueError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} is corrupt or does not match this model ({first}); "
                        "it was not used. Delete the folder to start over") from None
