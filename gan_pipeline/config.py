"""Pipeline configuration: TOML files under ``pipelines/``, validated on load.

A pipeline file has a few top-level keys (``name``, ``seed``, ``epochs``, ``batch_size``,
``stages``, ``profile``) and tables: ``[data]``, ``[model]``, ``[train]``, ``[eval]``,
``[tracking]``, ``[tune]`` (with its search space ``[tune.space.*]``) and ``[register]``. Every key
has a type and a default declared in ``SCHEMA`` below; ``[model]`` takes ``name`` plus the
hyperparameters of that model family (see ``gan_pipeline.models.FAMILIES``). Unknown keys, wrong
types and out-of-range values are rejected with a ``UserError`` that names the key and what is
allowed.

Profiles scale budgets: ``[profiles.quick]`` holds settings (same layout as the file) that replace
the file's own when ``profile = "quick"`` (``--set profile=quick``); ``full`` is the file as written.
``--set`` overrides win over the profile.

Command-line overrides use dotted keys, ``--set train.g_learning_rate=1e-4``; values are parsed as
TOML (``3``, ``1e-4``, ``true``, ``[64, 128]``) and fall back to plain strings (``data.dataset=kmnist``).
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gan_pipeline.errors import UserError, closest


@dataclass(frozen=True)
class Field:
    """One setting: its type, default and allowed range or choices."""

    type: type
    default: Any
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: Callable[[], list[str]] | None = None
    help: str = ""

    def describe(self) -> str:
        if self.choices is not None:
            items = ", ".join(repr(c) for c in self.choices())
            return f"a list of {items}" if self.type is list else f"one of {items}"
        parts = [_type_name(self.type)]
        if self.min is not None:
            parts.append((">" if self.min_exclusive else ">=") + f" {self.min:g}")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        return " ".join(parts)


def _losses() -> list[str]:
    from gan_pipeline.losses import LOSSES

    return sorted(LOSSES)


STAGES = ("prepare", "tune", "train", "evaluate", "register")
TUNERS = ("random", "bayesian", "hyperband")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# What a search may vary: the model's hyperparameters, the training settings and the batch size.
TUNABLE_SECTIONS = ("model", "train")
TUNABLE_TOP = ("batch_size",)


def _models() -> list[str]:
    from gan_pipeline.models import FAMILIES

    return sorted(FAMILIES)


SCHEMA: dict[str, Any] = {
    "name": Field(str, "gan", help="pipeline name; also the default MLflow experiment"),
    "seed": Field(int, 42, min=0, help="seeds weights, data order and noise"),
    "epochs": Field(int, 10, min=1),
    "batch_size": Field(int, 128, min=1),
    "deterministic": Field(bool, False,
                           help="deterministic TF ops: bit-identical CPU runs for a seed (slower)"),
    "profile": Field(str, "full", help="'full' (the file as written) or a [profiles.NAME] table"),
    "stages": Field(list, list(STAGES), choices=lambda: list(STAGES),
                    help="the stages `gan-pipeline run` runs, in this order"),
    "data": {
        "dataset": Field(str, "mnist", help="a TFDS image dataset name, or 'gaussian_1d'"),
        "data_dir": Field(str, "", help="TFDS data dir; empty = $TFDS_DATA_DIR, then TFDS' default"),
        "download": Field(bool, True, help="let TFDS download a dataset that is not prepared"),
        "split": Field(str, "train"),
        "shuffle_buffer": Field(int, 10_000, min=1),
        "cache": Field(bool, True, help="cache the decoded, normalised images in memory"),
        "mean": Field(float, 4.0, help="gaussian_1d: mean of the real distribution"),
        "std": Field(float, 1.25, min=0, min_exclusive=True, help="gaussian_1d: its std"),
        "n_points": Field(int, 100, min=1, help="gaussian_1d: draws per example vector"),
        "num_examples": Field(int, 10_000, min=1, help="gaussian_1d: example vectors per epoch"),
    },
    "model": {
        "name": Field(str, "dcgan", choices=_models),
        # plus the hyperparameters of the chosen family, validated against FAMILIES
    },
    "train": {
        "loss": Field(str, "non_saturating", choices=_losses),
        "label_smoothing": Field(float, 1.0, min=0, max=1, min_exclusive=True,
                                 help="target for real samples in the D loss (one-sided)"),
        "r1_gamma": Field(float, 0.0, min=0,
                          help="R1 penalty weight on D's input gradient at real data (0 = off)"),
        "d_steps": Field(int, 1, min=1, help="discriminator updates per batch"),
        "g_steps": Field(int, 1, min=1, help="generator updates per batch"),
        "d_learning_rate": Field(float, 2e-4, min=0, min_exclusive=True),
        "g_learning_rate": Field(float, 2e-4, min=0, min_exclusive=True),
        "lr_schedule": Field(str, "constant", choices=lambda: ["constant", "cosine"],
                             help="cosine: each learning rate decays to 0 over the run's steps"),
        "beta_1": Field(float, 0.5, min=0, max=0.9999),
        "beta_2": Field(float, 0.999, min=0, max=0.9999),
        "steps_per_epoch": Field(int, 0, min=0, help="0 = one pass over the data"),
        "ema_decay": Field(float, 0.0, min=0, max=0.99999,
                           help="keep an EMA copy of G for sampling (0 = off, e.g. 0.999)"),
        "precision": Field(str, "auto", choices=lambda: list(PRECISIONS),
                           help="dtype policy; auto picks by device (see gan_pipeline.distribute)"),
        "jit_compile": Field(str, "auto", choices=lambda: ["auto", "on", "off"],
                             help="XLA-compile the train step; auto = Keras' choice (GPU: on)"),
    },
    "eval": {
        "every_epochs": Field(int, 1, min=0, help="evaluate every K epochs while training (0 = off)"),
        "n_samples": Field(int, 2000, min=100,
                           help="generated samples per evaluation (points, for the 1-D GAN)"),
        "final_n_samples": Field(int, 10_000, min=100,
                                 help="samples the pipeline's evaluate stage judges"),
        "collapse_max_share": Field(float, 0.5, min=0, max=1, min_exclusive=True,
                                    help="warn of mode collapse when one class exceeds this share"),
        "stop_on_collapse": Field(bool, False, help="stop training when collapse is detected"),
    },
    "tracking": {
        "experiment": Field(str, "", help="MLflow experiment; empty = the pipeline name"),
        "uri": Field(str, "", help="empty = $MLFLOW_TRACKING_URI, then sqlite:///mlflow.db here"),
        "run_name": Field(str, ""),
        "grid_size": Field(int, 64, min=1, help="samples in the per-epoch grid (fixed noise)"),
        "log_model": Field(bool, True, help="log the generator as an MLflow model at the end"),
        "checkpoint_dir": Field(str, "checkpoints",
                                help="checkpoints go to <checkpoint_dir>/<name>/ every epoch"),
        "checkpoint_every_steps": Field(int, 0, min=0,
                                        help="also checkpoint every N steps inside an epoch"),
    },
    "tune": {
        "tuner": Field(str, "random", choices=lambda: list(TUNERS),
                       help="the Keras Tuner: random search, Bayesian optimisation or Hyperband"),
        "max_trials": Field(int, 4, min=1, help="trials to run (random, bayesian)"),
        "epochs": Field(int, 1, min=1, help="epochs per trial (hyperband: the most one gets)"),
        "steps_per_epoch": Field(int, 0, min=0, help="0 = train.steps_per_epoch"),
        "n_samples": Field(int, 2000, min=100, help="samples the trial objective is judged on"),
        "hyperband_factor": Field(int, 3, min=2),
        "max_failed_trials": Field(int, 3, min=1,
                                   help="stop the search after this many failed trials in a row"),
        # plus ``space``: {section: {setting: {min, max[, log, step]} or {values: [...]}}}
    },
    "register": {
        "model_name": Field(str, "", help="Model Registry name; empty = the pipeline name"),
        "alias": Field(str, "champion",
                       help="moved to a new version only when its quality beats the holder's"),
    },
}

# Settings that only steer the pipeline around training; a training run does not log them.
PIPELINE_ONLY = ("profile", "stages", "tune", "register")

SECTIONS = tuple(k for k, v in SCHEMA.items() if isinstance(v, dict))


def _type_name(t: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            list: "a list"}.get(t, t.__name__)


def _check_value(key: str, value: Any, field: Field) -> Any:
    """Coerce ``value`` to ``field.type`` where lossless, and check its range or choices."""
    t = field.type
    if t is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if t is list and isinstance(value, tuple):
        value = list(value)
    if t is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # --set name=2024, or a run name read back from MLflow params
    if not isinstance(value, t) or (t is int and isinstance(value, bool)):
        raise UserError(f"{key} = {value!r} is not valid: expected {field.describe()}")
    if t is list:
        if field.choices is not None:
            allowed = field.choices()
            bad = [v for v in value if v not in allowed]
            if bad:
                raise UserError(f"{key} = {value!r} is not valid: {bad[0]!r} is not one of "
                                + ", ".join(repr(c) for c in allowed) + "." + closest(bad[0], allowed))
        elif not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            raise UserError(f"{key} = {value!r} is not valid: expected a list of positive integers")
        return value
    if field.choices is not None:
        allowed = field.choices()
        if value not in allowed:
            raise UserError(f"{key} = {value!r} is not valid: expected {field.describe()}."
                            + closest(value, allowed))
    too_small = field.min is not None and (
        value <= field.min if field.min_exclusive else value < field.min)
    too_big = field.max is not None and value > field.max
    if too_small or too_big:
        raise UserError(f"{key} = {value!r} is out of range: expected {field.describe()}")
    return value


def _unknown_key(key: str, allowed: list[str]) -> UserError:
    return UserError(f"unknown setting {key!r}; allowed: {', '.join(sorted(allowed))}."
                     + closest(key.rsplit(".", 1)[-1], [a.rsplit(".", 1)[-1] for a in allowed]))


def model_fields(family: str) -> dict[str, Field]:
    """The hyperparameter fields of a model family, typed from their defaults."""
    from gan_pipeline.models import FAMILIES

    fields = {}
    for hp, default in FAMILIES[family].defaults.items():
        t = type(default)
        low = {int: 1, float: 0}.get(t)  # sizes and counts >= 1; rates and slopes >= 0
        high = 0.95 if "dropout" in hp else 0.9999 if "momentum" in hp else None
        fields[hp] = Field(t, default, min=low, max=high)
    return fields


def validate(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults into ``raw`` and check every key; returns a new nested dict."""
    if "profiles" in raw:
        raw = apply_profile(raw)
    cfg: dict[str, Any] = {}
    top_allowed = list(SCHEMA)
    for key in raw:
        if key not in SCHEMA:
            raise _unknown_key(key, top_allowed)
    for key, spec in SCHEMA.items():
        if isinstance(spec, Field):
            cfg[key] = _check_value(key, raw.get(key, spec.default), spec)
            continue
        section = raw.get(key, {})
        if not isinstance(section, dict):
            raise UserError(f"[{key}] must be a table of settings, got {section!r}")
        fields = dict(spec)
        if key == "tune":  # the search space is checked below, once the model is known
            section = {k: v for k, v in section.items() if k != "space"}
        if key == "model":
            name = _check_value("model.name", section.get("name", spec["name"].default),
                                spec["name"])
            fields.update(model_fields(name))
        out = {}
        for sub in section:
            if sub not in fields:
                raise _unknown_key(f"{key}.{sub}", [f"{key}.{f}" for f in fields])
        for sub, field in fields.items():
            value = section.get(sub, field.default)
            out[sub] = _check_value(f"{key}.{sub}", copy.deepcopy(value), field)
        cfg[key] = out
    one_d_data = cfg["data"]["dataset"] == "gaussian_1d"
    if one_d_data != cfg["model"]["name"].startswith("gaussian_1d"):
        raise UserError(f"model.name = {cfg['model']['name']!r} does not fit data.dataset = "
                        f"{cfg['data']['dataset']!r}: the 'gaussian_1d' dataset takes the "
                        "gaussian_1d models; image datasets take the others")
    cfg["tune"]["space"] = _check_space(raw.get("tune", {}).get("space", {}), cfg)
    _check_stages(cfg)
    return cfg


def _check_stages(cfg: dict) -> None:
    stages = cfg["stages"]
    if not stages:
        raise UserError("stages = [] is not valid: name at least one of " + ", ".join(STAGES))
    if len(set(stages)) != len(stages) or stages != sorted(stages, key=STAGES.index):
        raise UserError(f"stages = {stages!r} is not valid: each stage once, in the order "
                        + " -> ".join(STAGES))
    needs = {"evaluate": ("train",), "register": ("train", "evaluate")}
    for stage, required in needs.items():
        missing = [r for r in required if stage in stages and r not in stages]
        if missing:
            raise UserError(f"stages: {stage!r} needs {' and '.join(map(repr, missing))} in "
                            "the same pipeline (it reads their runs)")


def _tunable_fields(cfg: dict) -> dict[str, Field]:
    fields = {k: SCHEMA[k] for k in TUNABLE_TOP}
    fields.update({f"train.{k}": f for k, f in SCHEMA["train"].items()})
    fields.update({f"model.{k}": f for k, f in model_fields(cfg["model"]["name"]).items()})
    return fields


def _check_space(space: Any, cfg: dict) -> dict[str, dict]:
    """Validate ``[tune.space]`` into ``{"train.d_learning_rate": {"min": .., "max": ..,
    "log": bool, "step": ..}}`` or ``{"model.latent_dim": {"values": [...]}}``."""
    if not isinstance(space, dict):
        raise UserError(f"[tune.space] must be a table, got {space!r}")
    fields = _tunable_fields(cfg)
    flat: dict[str, Any] = {}
    for key, value in space.items():
        if key in TUNABLE_SECTIONS and isinstance(value, dict):
            flat.update({f"{key}.{sub}": spec for sub, spec in value.items()})
        else:
            flat[key] = value
    out = {}
    for name, spec in flat.items():
        where = f"tune.space.{name}"
        if name not in fields:
            raise _unknown_key(where, [f"tune.space.{f}" for f in fields])
        field = fields[name]
        if not isinstance(spec, dict):
            raise UserError(f"{where} = {spec!r} is not valid: expected {{ values = [...] }} or "
                            "{ min = ..., max = ... } (optionally log = true, step = ...)")
        allowed = ["values"] if "values" in spec else ["min", "max", "log", "step"]
        for k in spec:
            if k not in allowed:
                raise _unknown_key(f"{where}.{k}", [f"{where}.{a}" for a in allowed])
        if "values" in spec:
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise UserError(f"{where}.values = {values!r} is not valid: expected a non-empty "
                                "list")
            out[name] = {"values": [_check_value(where, copy.deepcopy(v), field) for v in values]}
            continue
        if field.type not in (int, float):
            raise UserError(f"{where}: {name} is {_type_name(field.type)}; give its candidates "
                            "as { values = [...] }")
        if "min" not in spec or "max" not in spec:
            raise UserError(f"{where} needs both min and max (or values = [...])")
        low = _check_value(f"{where}.min", spec["min"], field)
        high = _check_value(f"{where}.max", spec["max"], field)
        if not low < high:
            raise UserError(f"{where}: min ({low!r}) must be below max ({high!r})")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise UserError(f"{where}.log = {log!r} is not valid: expected true or false")
        if log and low <= 0:
            raise UserError(f"{where}: log sampling needs min > 0")
        item = {"min": low, "max": high, "log": log}
        if "step" in spec:
            item["step"] = _check_value(f"{where}.step", spec["step"],
                                        Field(field.type, 0, min=1 if log else 0,
                                              min_exclusive=True))
        out[name] = item
    return out


def training_part(cfg: dict) -> dict:
    """``cfg`` without the pipeline-only settings: what a training run logs and resumes by."""
    return {k: v for k, v in cfg.items() if k not in PIPELINE_ONLY}


def with_values(cfg: dict, values: dict[str, Any]) -> dict:
    """``cfg`` with dotted settings replaced (``{"train.beta_1": 0.0}``), validated again."""
    raw = copy.deepcopy(cfg)
    for key, value in values.items():
        _set_dotted(raw, key.split("."), value)
    nested: dict[str, Any] = {}  # the space is validated flat; validate() reads it nested
    for key, spec in raw["tune"]["space"].items():
        _set_dotted(nested, key.split("."), spec)
    raw["tune"]["space"] = nested
    return validate(raw)


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_profile(raw: dict[str, Any], profile: str | None = None) -> dict[str, Any]:
    """``raw`` with its ``[profiles.<profile>]`` settings merged in (and ``profiles`` dropped).
    ``profile`` defaults to ``raw["profile"]``, then ``"full"`` (the file as written)."""
    raw = copy.deepcopy(raw)
    profiles = raw.pop("profiles", {})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise UserError("[profiles] must hold tables of settings, e.g. [profiles.quick]")
    name = profile if profile is not None else raw.get("profile", "full")
    if not isinstance(name, str) or (name != "full" and name not in profiles):
        allowed = ["full", *sorted(p for p in profiles if p != "full")]
        raise UserError(f"profile = {name!r} is not valid: expected one of "
                        + ", ".join(repr(a) for a in allowed) + " (declared as [profiles.NAME] "
                        "in the pipeline file)." + closest(str(name), allowed))
    if name in profiles:
        chosen = profiles[name]
        # a profile's search-space entry replaces the file's entry whole (not key by key)
        for section, specs in chosen.get("tune", {}).get("space", {}).items():
            base = raw.get("tune", {}).get("space", {}).get(section)
            if isinstance(specs, dict) and isinstance(base, dict) and section in TUNABLE_SECTIONS:
                for key in specs:
                    base.pop(key, None)
        raw = _merge(raw, chosen)
    raw["profile"] = name
    return raw


def parse_override(item: str) -> tuple[list[str], Any]:
    """``'train.loss=minimax'`` -> (['train', 'loss'], 'minimax'), value parsed as TOML."""
    if "=" not in item:
        raise UserError(f"--set {item!r} is not valid: expected KEY=VALUE, "
                        "e.g. --set epochs=3 or --set train.g_learning_rate=1e-4")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {item!r} has an empty key")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``KEY=VALUE`` override applied (dotted keys nest)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        path, value = parse_override(item)
        _set_dotted(raw, path, value, f"--set {item!r}")
    return raw


def _set_dotted(raw: dict, path: list[str], value: Any, where: str = "") -> None:
    """``raw[path[0]][path[1]]... = value``, creating the tables on the way."""
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{where}: {part!r} is a value, not a table")
    node[path[-1]] = value


def load(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a pipeline file, apply ``--set`` overrides and validate."""
    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in Path("pipelines").glob("*.toml"))
        hint = f" Shipped pipelines: {', '.join(shipped)}." if shipped else ""
        raise UserError(f"config file {str(path)!r} does not exist.{hint}")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    # --set wins over the profile, and may itself choose the profile.
    profile = apply_overrides(raw, overrides or []).get("profile")
    raw = apply_profile(raw, profile)
    return validate(apply_overrides(raw, overrides or []))


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'train': {'loss': 'x'}}`` -> ``{'train.loss': 'x'}`` (for MLflow params)."""
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def from_params(params: dict[str, str], overrides: list[str] | None = None) -> dict[str, Any]:
    """Rebuild a validated config from the MLflow params of a training run (``flatten`` undone),
    then apply ``--set`` overrides. Derived ``resolved.*`` params are skipped."""
    items = [f"{k}={ {'True': 'true', 'False': 'false'}.get(v, v) }"
             for k, v in params.items() if not k.startswith("resolved.")]
    return validate(apply_overrides({}, items + list(overrides or [])))
