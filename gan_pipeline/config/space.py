"""``[tune.space]``: which settings a search may vary, and over what.

A space names settings of ``[model]`` and ``[train]`` (and ``batch_size``) with a range
``{ min, max[, log, step] }`` or candidates ``{ values = [...] }``. It is validated against the
settings themselves: a range must lie inside what the setting allows, and candidates must each
be valid values.
"""

from __future__ import annotations

import copy
from typing import Any

from gan_pipeline import families
from gan_pipeline.config.schema import SCHEMA, Field, _type_name, unknown_key
from gan_pipeline.errors import UserError

TUNABLE_SECTIONS = ("model", "train")
TUNABLE_TOP = ("batch_size",)


def tunable_fields(cfg: dict) -> dict[str, Field]:
    fields = {k: SCHEMA[k] for k in TUNABLE_TOP}
    fields.update({f"train.{k}": f for k, f in SCHEMA["train"].items()})
    fields.update({f"model.{k}": f
                   for k, f in families.get(cfg["model"]["name"]).fields().items()})
    return fields


def check_space(space: Any, cfg: dict) -> dict[str, dict]:
    """Validate ``[tune.space]`` into ``{"train.d_learning_rate": {"min": .., "max": ..,
    "log": bool, "step": ..}}`` or ``{"model.latent_dim": {"values": [...]}}``."""
    if not isinstance(space, dict):
        raise UserError(f"[tune.space] must be a table, got {space!r}")
    fields = tunable_fields(cfg)
    flat: dict[str, Any] = {}
    for key, value in space.items():
        if key in TUNABLE_SECTIONS and isinstance(value, dict):
            flat.update({f"{key}.{sub}": spec for sub, spec in value.items()})
        else:
            flat[key] = value
    return {name: _check_entry(name, spec, fields) for name, spec in flat.items()}


def _check_entry(name: str, spec: Any, fields: dict[str, Field]) -> dict:
    where = f"tune.space.{name}"
    if name not in fields:
        raise unknown_key(where, [f"tune.space.{f}" for f in fields])
    field = fields[name]
    if not isinstance(spec, dict):
        raise UserError(f"{where} = {spec!r} is not valid: expected {{ values = [...] }} or "
                        "{ min = ..., max = ... } (optionally log = true, step = ...)")
    allowed = ["values"] if "values" in spec else ["min", "max", "log", "step"]
    for k in spec:
        if k not in allowed:
            raise unknown_key(f"{where}.{k}", [f"{where}.{a}" for a in allowed])
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise UserError(f"{where}.values = {values!r} is not valid: expected a non-empty list")
        return {"values": [field.check(where, copy.deepcopy(v)) for v in values]}
    if field.type not in (int, float):
        raise UserError(f"{where}: {name} is {_type_name(field.type)}; give its candidates "
                        "as { values = [...] }")
    if "min" not in spec or "max" not in spec:
        raise UserError(f"{where} needs both min and max (or values = [...])")
    low = field.check(f"{where}.min", spec["min"])
    high = field.check(f"{where}.max", spec["max"])
    if not low < high:
        raise UserError(f"{where}: min ({low!r}) must be below max ({high!r})")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}.log = {log!r} is not valid: expected true or false")
    if log and low <= 0:
        raise UserError(f"{where}: log sampling needs min > 0")
    item = {"min": low, "max": high, "log": log}
    if "step" in spec:
        item["step"] = Field(field.type, 0, min=1 if log else 0, min_exclusive=True).check(
            f"{where}.step", spec["step"])
    return item
