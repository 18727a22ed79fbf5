"""How long work shows its progress: Keras' bar on a terminal, a line per epoch in a log.

Keras draws its bar with carriage returns whenever Python's ``posix`` module is loaded (every
Linux and macOS process), so a log file or a CI console got one line per step. Every fit and
progress bar of the package asks here instead.
"""

from __future__ import annotations

import sys

import keras


def interactive() -> bool:
    return hasattr(sys.stdout, "isatty") and sys.stdout.isatty()


def verbosity(verbose: int | str = 1) -> int | str:
    """Keras' ``verbose`` for a fit: as asked on a terminal; 2 (a line per epoch) when stdout
    is not one."""
    if verbose in (1, "auto") and not interactive():
        return 2
    return verbose


def bar(total: int, unit_name: str = "step") -> keras.utils.Progbar | None:
    """A progress bar of ``total`` units on a terminal; None (nothing to draw) in a log."""
    return keras.utils.Progbar(total, unit_name=unit_name) if interactive() else None
