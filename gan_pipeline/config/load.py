"""Reading a pipeline file: TOML, profiles, ``--set`` overrides, validation, and the round trip
through MLflow params.

A profile (``[profiles.quick]``) holds settings, laid out as in the file, that replace the file's
own when ``profile = "quick"`` (``--set profile=quick``); ``full`` is the file as written.
``--set`` overrides win over the profile. Values given with ``--set`` are parsed as TOML (``3``,
``1e-4``, ``true``, ``[64, 128]``) and fall back to plain strings (``data.dataset=kmnist``).
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from gan_pipeline import data, evaluation, families, losses
from gan_pipeline.config.schema import SCHEMA, SECTIONS, Config, Field, unknown_key
from gan_pipeline.config.space import TUNABLE_SECTIONS, check_space
from gan_pipeline.errors import UserError, closest
from gan_pipeline.pipeline.graph import check_stages


def section_fields(section: str, raw_section: dict) -> dict[str, Field]:
    """The fields of a section; ``[model]`` and ``[data]`` add those of the chosen family or
    data source (which the section's ``name`` / ``dataset`` picks)."""
    fields = dict(SCHEMA[section])
    if section == "model":
        name = fields["name"].check("model.name", raw_section.get("name",
                                                                  fields["name"].default))
        fields.update(families.get(name).fields())
    elif section == "data":
        name = fields["dataset"].check("data.dataset",
                                       raw_section.get("dataset", fields["dataset"].default))
        fields.update(data.source_class(name).fields)
    return fields


def validate(raw: dict[str, Any]) -> Config:
    """Fill defaults into ``raw`` and check every key; returns a read-only ``Config``."""
    if "profiles" in raw:
        raw = apply_profile(raw)
    for key in raw:
        if key not in SCHEMA:
            raise unknown_key(key, list(SCHEMA))
    cfg: dict[str, Any] = {}
    for key, spec in SCHEMA.items():
        if isinstance(spec, Field):
            cfg[key] = spec.check(key, copy.deepcopy(raw.get(key, spec.default)))
            continue
        section = raw.get(key, {})
        if not isinstance(section, dict):
            raise UserError(f"[{key}] must be a table of settings, got {section!r}")
        if key == "tune":  # the search space is checked below, once the model is known
            section = {k: v for k, v in section.items() if k != "space"}
        fields = section_fields(key, section)
        for sub in section:
            if sub not in fields:
                raise unknown_key(f"{key}.{sub}", [f"{key}.{f}" for f in fields])
        cfg[key] = {sub: field.check(f"{key}.{sub}", copy.deepcopy(section.get(sub, field.default)))
                    for sub, field in fields.items()}
    _check_kinds(cfg)
    cfg["tune"]["space"] = check_space(raw.get("tune", {}).get("space", {}), cfg)
    check_stages(cfg["stages"])
    return Config(cfg)


def _check_kinds(cfg: dict) -> None:
    """The family must make the kind of samples the data source holds and report the figure
    the search optimises; the loss gets the settings it needs; augmentation is for images."""
    family = families.get(cfg["model"]["name"])
    source = data.source_class(cfg["data"]["dataset"])
    if family.kind.name != source.kind.name:
        takes = sorted(n for n, f in families.FAMILIES.items() if f.kind.name == source.kind.name)
        raise UserError(f"model.name = {family.name!r} makes {family.kind.name} but "
                        f"data.dataset = {cfg['data']['dataset']!r} holds {source.kind.name}; "
                        f"for this dataset use one of {', '.join(map(repr, takes))}")
    if cfg["train"]["augment"] and not family.kind.augments:
        raise UserError(f"train.augment = {cfg['train']['augment']!r} transforms images, but "
                        f"model.name = {family.name!r} makes {family.kind.name}; use []")
    if cfg["model"]["truncation"] and family.noise != "normal":
        raise UserError(f"model.truncation = {cfg['model']['truncation']} needs a generator of "
                        f"normal noise; model.name = {family.name!r} takes {family.noise} noise "
                        "(use 0)")
    loss = losses.LOSSES[cfg["train"]["loss"]]
    for key, why in loss.needs.items():
        if not cfg["train"][key] > 0:
            raise UserError(f"train.loss = {loss.name!r} needs train.{key} > 0: {why}")
    if cfg["tune"]["objective"]:
        evaluation.check_objective(cfg["tune"]["objective"], family.kind,
                                   family.samples_by_class)


def with_values(cfg: Config, values: dict[str, Any]) -> Config:
    """``cfg`` with dotted settings replaced (``{"train.beta_1": 0.0}``), validated again."""
    raw = cfg.to_dict()
    for key, value in values.items():
        set_dotted(raw, key.split("."), value)
    nested: dict[str, Any] = {}  # the space is validated flat; validate() reads it nested
    for key, spec in raw["tune"]["space"].items():
        set_dotted(nested, key.split("."), spec)
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
    """``'train.loss=minimax'`` -> (['train', 'loss'], 'minimax'), value parsed as TOML
    (where it is not TOML: a bare string, or ``[a, b]`` a list of bare strings)."""
    if "=" not in item:
        raise UserError(f"--set {item!r} is not valid: expected KEY=VALUE, "
                        "e.g. --set epochs=3 or --set train.g_learning_rate=1e-4")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"--set {item!r} has an empty key")
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
        if text.startswith("[") and text.endswith("]"):  # [train, evaluate]: bare words
            value = [word.strip() for word in text[1:-1].split(",") if word.strip()]
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``KEY=VALUE`` override applied (dotted keys nest)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        path, value = parse_override(item)
        set_dotted(raw, path, value, f"--set {item!r}")
    return raw


def set_dotted(raw: dict, path: list[str], value: Any, where: str = "") -> None:
    """``raw[path[0]][path[1]]... = value``, creating the tables on the way."""
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{where or '.'.join(path)}: {part!r} is a value, not a table")
    node[path[-1]] = value


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file (byte {exc.start}); pipeline files are "
                        "TOML, which is UTF-8") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None


def load(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a pipeline file, apply its profile and the ``--set`` overrides, and validate."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {str(path)!r} is a folder; give a pipeline file, e.g. "
                        "pipelines/mnist_dcgan.toml")
    if not path.is_file():
        shipped = sorted(p.name for p in Path("pipelines").glob("*.toml"))
        hint = f" Shipped pipelines: {', '.join(shipped)}." if shipped else ""
        raise UserError(f"config file {str(path)!r} does not exist.{hint}")
    raw = read_toml(path)
    # --set wins over the profile, and may itself choose the profile.
    profile = apply_overrides(raw, overrides or []).get("profile")
    raw = apply_profile(raw, profile)
    return validate(apply_overrides(raw, overrides or []))


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'train': {'loss': 'x'}}`` -> ``{'train.loss': 'x'}`` (for MLflow params)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def from_params(params: dict[str, str], overrides: list[str] | None = None) -> Config:
    """Rebuild a validated config from the MLflow params of a training run (``flatten`` undone),
    then apply ``--set`` overrides. Derived ``resolved.*`` params are skipped."""
    raw: dict[str, Any] = {}
    for key, text in params.items():
        if key.startswith("resolved."):
            continue
        _, value = parse_override(f"{key}={ {'True': 'true', 'False': 'false'}.get(text, text) }")
        set_dotted(raw, key.split("."), value)
    if isinstance(raw.get("name"), (int, float)):
        raw["name"] = params["name"]  # a name such as "2024" must stay a string
    return validate(apply_overrides(raw, overrides or []))


__all__ = ["SECTIONS", "apply_overrides", "apply_profile", "flatten", "from_params", "load",
           "parse_override", "validate", "with_values"]
