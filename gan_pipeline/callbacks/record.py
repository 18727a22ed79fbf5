"""``RunRecord``: the little the callbacks of one run share."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RunRecord:
    """Where a run stands.

    ``completed`` counts the epochs whose every step ran; ``reason`` is set when the run stops
    early (``"interrupted"``, ``"diverged"`` or ``"collapsed"``) with ``detail`` saying what
    happened; ``train_seconds`` is training time only; ``history`` holds every logged metric per
    epoch; ``last_eval`` and ``eval_steps`` the latest quality figures and the epochs evaluated.
    """

    completed: int = 0
    epoch: int = 0  # the epoch in progress (0-based)
    epochs: int = 0  # the run's length in epochs
    step_offset: int = 0  # batches of the epoch in progress done before this fit (a resume)
    reason: str | None = None
    detail: str = ""
    train_seconds: float = 0.0
    history: dict[str, list[float]] = field(default_factory=dict)
    last_eval: dict | None = None
    eval_steps: list[int] = field(default_factory=list)
    collapse: str = ""  # the latest collapse warning

    def stop(self, model, reason: str, detail: str) -> None:
        """Stop the run at the end of this step for ``reason``; the first reason stands."""
        if self.reason is None:
            self.reason, self.detail = reason, detail
        model.stop_training = True

    def epoch_complete(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) ran every step and its weights count."""
        return self.reason != "diverged" and self.completed == epoch + 1
