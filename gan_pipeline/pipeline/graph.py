"""The stage graph of ``gan-pipeline run``, declared once: the stages in order, the stages each
one reads when they are part of the pipeline, and those it cannot run without."""

from __future__ import annotations

from gan_pipeline.errors import UserError

STAGES = ("prepare", "tune", "train", "evaluate", "register")
READS = {"prepare": (), "tune": ("prepare",), "train": ("prepare", "tune"),
         "evaluate": ("train",), "register": ("train", "evaluate")}
# What a stage needs in the same pipeline: evaluate judges the train run's generator, register
# registers it with the evaluate run's figure. (train and tune read prepare only when it runs.)
REQUIRES = {"prepare": (), "tune": (), "train": (), "evaluate": ("train",),
            "register": ("train", "evaluate")}


def check_stages(stages: list[str]) -> None:
    """Each stage at most once, in order, with the stages it requires."""
    if not stages:
        raise UserError("stages = [] is not valid: name at least one of " + ", ".join(STAGES))
    if len(set(stages)) != len(stages) or stages != sorted(stages, key=STAGES.index):
        raise UserError(f"stages = {stages!r} is not valid: each stage once, in the order "
                        + " -> ".join(STAGES))
    for stage in stages:
        missing = [r for r in REQUIRES[stage] if r not in stages]
        if missing:
            raise UserError(f"stages: {stage!r} needs {' and '.join(map(repr, missing))} in "
                            "the same pipeline (it reads their runs)")
