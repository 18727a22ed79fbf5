"""Every setting of a pipeline file: its type, default and allowed values, and the typed,
read-only sections a validated config is made of (``cfg.train.precision``).

The fixed sections are declared here. Two sections grow with the registries: ``[model]`` takes
``name`` plus the hyperparameters of that family (``gan_pipeline.families``), and ``[data]`` takes
``dataset`` plus the settings of that data source (``gan_pipeline.data``). Each declares its own
fields, so a new family or data source brings its settings with it.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gan_pipeline.errors import UserError, closest
from gan_pipeline.pipeline.graph import STAGES

TUNERS = ("random", "bayesian", "hyperband")
ADOPT = ("best", "file")  # what the train stage takes from the search (tune.adopt)
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
SCHEDULES = ("constant", "cosine")
SEED_MAX = 2**32 - 1  # NumPy and TensorFlow seeds are unsigned 32-bit


@dataclass(frozen=True)
class Field:
    """One setting: its type, default and allowed range, choices or list lengths."""

    type: type
    default: Any
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    choices: Callable[[], list] | None = None
    lengths: tuple[int, ...] | None = None  # lists: the allowed lengths (None: any non-empty)
    nonempty: bool = False  # strings
    pattern: str = ""  # strings: a regular expression the whole value must match
    pattern_help: str = ""
    help: str = ""

    def describe(self) -> str:
        if self.choices is not None:
            items = ", ".join(repr(c) for c in self.choices())
            return f"a list of {items}" if self.type is list else f"one of {items}"
        if self.type is list:
            if self.lengths:
                return "a list of " + " or ".join(
                    "no values" if n == 0 else f"{n} positive integers" for n in self.lengths)
            return "a non-empty list of positive integers"
        bounds = []
        if self.min is not None:
            bounds.append((">" if self.min_exclusive else ">=") + f" {_number(self.min)}")
        if self.max is not None:
            bounds.append(f"<= {_number(self.max)}")
        return " ".join([_type_name(self.type), " and ".join(bounds)]).strip()

    def check(self, key: str, value: Any) -> Any:
        """``value`` coerced to this field's type where lossless, or a ``UserError``."""
        t = self.type
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if t is list and isinstance(value, tuple):
            value = list(value)
        if t is str and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # --set name=2024, or a run name read back from MLflow params
        if not isinstance(value, t) or (t is int and isinstance(value, bool)):
            raise UserError(f"{key} = {value!r} is not valid: expected {self.describe()}")
        if t is list:
            return self._check_list(key, value)
        if t is str and self.nonempty and not value.strip():
            raise UserError(f"{key} = {value!r} is not valid: expected a non-empty string")
        if t is str and self.pattern and not re.fullmatch(self.pattern, value):
            raise UserError(f"{key} = {value!r} is not valid: expected {self.pattern_help}")
        if t is float and not math.isfinite(value):
            raise UserError(f"{key} = {value!r} is not valid: expected a finite number"
                            + (f" ({self.describe()})" if self.min is not None else ""))
        if self.choices is not None:
            allowed = self.choices()
            if value not in allowed:
                raise UserError(f"{key} = {value!r} is not valid: expected {self.describe()}."
                                + closest(value, allowed))
        too_small = self.min is not None and (
            value <= self.min if self.min_exclusive else value < self.min)
        too_big = self.max is not None and value > self.max
        if too_small or too_big:
            raise UserError(f"{key} = {value!r} is out of range: expected {self.describe()}")
        return value

    def _check_list(self, key: str, value: list) -> list:
        if self.choices is not None:
            allowed = self.choices()
            bad = [v for v in value if v not in allowed]
            if bad:
                raise UserError(f"{key} = {value!r} is not valid: {bad[0]!r} is not one of "
                                + ", ".join(repr(c) for c in allowed) + "."
                                + closest(bad[0], allowed))
            return value
        ints = all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
        length_ok = len(value) in self.lengths if self.lengths else bool(value)
        too_big = self.max is not None and any(isinstance(v, int) and v > self.max for v in value)
        if not ints or not length_ok or too_big:
            limit = f", each <= {_number(self.max)}" if self.max is not None else ""
            raise UserError(f"{key} = {value!r} is not valid: expected {self.describe()}{limit}")
        return value


def unknown_key(key: str, allowed: list[str]) -> UserError:
    """The error for a key that is not a setting, with the allowed ones and the closest."""
    return UserError(f"unknown setting {key!r}; allowed: {', '.join(sorted(allowed))}."
                     + closest(key.rsplit(".", 1)[-1], [a.rsplit(".", 1)[-1] for a in allowed]))


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def _type_name(t: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            list: "a list"}.get(t, t.__name__)


def _losses() -> list[str]:
    from gan_pipeline import losses

    return sorted(losses.LOSSES)


def _objectives() -> list[str]:
    from gan_pipeline import evaluation

    return ["", *evaluation.DIRECTIONS]


def _augmentations() -> list[str]:
    from gan_pipeline import augment

    return list(augment.AUGMENTATIONS)


def _families() -> list[str]:
    from gan_pipeline import families

    return sorted(families.FAMILIES)


WIDTH_MAX = 65_536  # layer widths and filter counts: beyond this a model cannot fit in memory

SCHEMA: dict[str, Any] = {
    "name": Field(str, "gan", nonempty=True, pattern=r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}",
                  pattern_help="letters, digits, '.', '_' or '-' (it names a folder and an "
                               "MLflow experiment), starting with a letter or digit, at most 100",
                  help="pipeline name; also the default MLflow experiment"),
    "seed": Field(int, 42, min=0, max=SEED_MAX, help="seeds weights, data order and noise"),
    "epochs": Field(int, 10, min=1, max=1_000_000),
    "batch_size": Field(int, 128, min=1, max=1_000_000),
    "deterministic": Field(bool, False,
                           help="deterministic TF ops: bit-identical CPU runs for a seed (slower)"),
    "profile": Field(str, "full", help="'full' (the file as written) or a [profiles.NAME] table"),
    "stages": Field(list, list(STAGES), choices=lambda: list(STAGES),
                    help="the stages `gan-pipeline run` runs, in this order"),
    "data": {
        "dataset": Field(str, "mnist", nonempty=True,
                         help="a TFDS image dataset, 'folder' (data.path) or 'gaussian_1d'"),
        "shuffle_buffer": Field(int, 10_000, min=1, max=10_000_000),
        "cache": Field(bool, True, help="cache the decoded, normalised samples in memory"),
        # plus the settings of the chosen data source (gan_pipeline.data)
    },
    "model": {
        "name": Field(str, "dcgan", choices=_families),
        "truncation": Field(float, 0.0, min=0, max=10,
                            help="truncation trick: the saved generator maps its N(0, 1) noise "
                                 "onto N(0, 1) cut at +-t when sampling (0 = off)"),
        # plus the hyperparameters of the chosen family (gan_pipeline.families)
    },
    "train": {
        "loss": Field(str, "non_saturating", choices=_losses),
        "label_smoothing": Field(float, 1.0, min=0, max=1, min_exclusive=True,
                                 help="target for real samples in the D loss (one-sided)"),
        "r1_gamma": Field(float, 0.0, min=0, max=1e6,
                          help="R1 penalty weight on D's input gradient at real data (0 = off)"),
        "r1_every": Field(int, 1, min=1, max=1000,
                          help="lazy R1: the penalty (times k) on every k-th D step only"),
        "r2_gamma": Field(float, 0.0, min=0, max=1e6,
                          help="R2 penalty weight on D's input gradient at fake samples "
                               "(0 = off; R3GAN: with r1_gamma and loss = relativistic)"),
        "gp_weight": Field(float, 0.0, min=0, max=1e6,
                           help="gradient penalty weight at points between real and fake "
                                "(0 = off; needed by the wasserstein loss)"),
        "mode_seeking": Field(float, 0.0, min=0, max=1e3,
                              help="mode-seeking term in G's loss: weight / (how far G's samples "
                                   "move per unit of noise) over pairs of samples (0 = off)"),
        "augment": Field(list, [], choices=_augmentations,
                         help="DiffAugment of every image D judges, real and fake, in both "
                              "steps: translation, cutout, color (images only; [] = off)"),
        "d_steps": Field(int, 1, min=1, max=100, help="discriminator updates per batch"),
        "g_steps": Field(int, 1, min=1, max=100, help="generator updates per batch"),
        "d_learning_rate": Field(float, 2e-4, min=0, max=1, min_exclusive=True),
        "g_learning_rate": Field(float, 2e-4, min=0, max=1, min_exclusive=True),
        "lr_schedule": Field(str, "constant", choices=lambda: list(SCHEDULES),
                             help="cosine: each learning rate decays to 0 over the run's steps"),
        "beta_1": Field(float, 0.5, min=0, max=0.9999),
        "beta_2": Field(float, 0.999, min=0, max=0.9999),
        "steps_per_epoch": Field(int, 0, min=0, max=100_000_000, help="0 = one pass over the data"),
        "fake_labels": Field(str, "uniform", choices=lambda: ["uniform", "data"],
                             help="conditional models: fake labels drawn uniformly over the "
                                  "classes, or by the data's class shares"),
        "standing_statistics": Field(int, 2048, min=0, max=10_000_000,
                                     help="after each epoch, set the sampler's BatchNorm "
                                          "statistics from this many of its own samples "
                                          "(BigGAN's standing statistics; 0 = off)"),
        "ema_decay": Field(float, 0.0, min=0, max=0.99999,
                           help="keep an EMA copy of G for sampling (0 = off, e.g. 0.999)"),
        "precision": Field(str, "auto", choices=lambda: list(PRECISIONS),
                           help="dtype policy; auto picks by device (see gan_pipeline.distribute)"),
        "jit_compile": Field(str, "auto", choices=lambda: ["auto", "on", "off"],
                             help="XLA-compile the train step; auto = Keras' choice (GPU: on)"),
        "steps_per_execution": Field(int, 0, min=0, max=10_000,
                                     help="batches per call of the compiled step (the host "
                                          "checks for a stop between calls); 0 = by device"),
    },
    "eval": {
        "every_epochs": Field(int, 1, min=0, max=1_000_000,
                              help="evaluate every K epochs while training (0 = off)"),
        "n_samples": Field(int, 2000, min=100, max=1_000_000,
                           help="generated samples per evaluation (points, for the 1-D GAN)"),
        "final_n_samples": Field(int, 10_000, min=100, max=1_000_000,
                                 help="samples the pipeline's evaluate stage judges"),
        "collapse_max_share": Field(float, 0.5, min=0, max=1, min_exclusive=True,
                                    help="warn of mode collapse when one class exceeds this share"),
        "stop_on_collapse": Field(bool, False, help="stop training when collapse is detected"),
        "collapse_grace_epochs": Field(int, 0, min=0, max=1_000_000,
                                       help="first epochs whose collapse is warned of but stops "
                                            "nothing (training runs and search trials alike): "
                                            "for losses whose samples start narrow and spread"),
    },
    "tracking": {
        "experiment": Field(str, "", help="MLflow experiment; empty = the pipeline name"),
        "uri": Field(str, "", help="empty = $MLFLOW_TRACKING_URI, then sqlite:///mlflow.db here"),
        "run_name": Field(str, ""),
        "grid_size": Field(int, 64, min=1, max=4096,
                           help="samples in the per-epoch picture (fixed noise)"),
        "log_model": Field(bool, True, help="log the generator as an MLflow model at the end"),
        "system_metrics": Field(bool, True,
                                help="MLflow system metrics of training runs: CPU, memory, disk, "
                                     "network (GPU with nvidia-ml-py installed)"),
        "checkpoint_dir": Field(str, "checkpoints", nonempty=True,
                                help="checkpoints go to <checkpoint_dir>/<name>/ every epoch"),
        "checkpoint_every_steps": Field(int, 0, min=0, max=100_000_000,
                                        help="also checkpoint every N steps inside an epoch"),
    },
    "tune": {
        "tuner": Field(str, "random", choices=lambda: list(TUNERS),
                       help="the Keras Tuner: random search, Bayesian optimisation or Hyperband"),
        "max_trials": Field(int, 4, min=1, max=100_000, help="trials to run (random, bayesian)"),
        "epochs": Field(int, 1, min=1, max=1_000_000,
                        help="epochs per trial (hyperband: the most one gets)"),
        "steps_per_epoch": Field(int, 0, min=0, max=100_000_000,
                                 help="0 = train.steps_per_epoch"),
        "n_samples": Field(int, 2000, min=100, max=1_000_000,
                           help="samples the trial objective is judged on"),
        "objective": Field(str, "", choices=_objectives,
                           help="the figure the search optimises (its direction is known); "
                                "empty = fd_over_recall for images (the Frechet distance over the "
                                "recall; metrics.fd_over_recall), ks for 1-D"),
        "hyperband_factor": Field(int, 3, min=2, max=100),
        "adopt": Field(str, "best", choices=lambda: list(ADOPT),
                       help="what the train stage takes from the search: 'best', the best "
                            "trial's settings; 'file', the file's own (the search still runs "
                            "and is recorded beside them: for files whose settings were "
                            "measured to beat the search's picks over the full run)"),
        "max_failed_trials": Field(int, 3, min=1, max=100_000,
                                   help="stop the search after this many failed trials in a row"),
        # plus ``space``: {section: {setting: {min, max[, log, step]} or {values: [...]}}}
    },
    "register": {
        "model_name": Field(str, "", help="Model Registry name; empty = the pipeline name"),
        "alias": Field(str, "champion", nonempty=True,
                       help="moved to a new version only when its quality beats the holder's"),
    },
}

# Settings that only steer the pipeline around training; a training run does not log them.
PIPELINE_ONLY = ("profile", "stages", "tune", "register")
SECTIONS = tuple(k for k, v in SCHEMA.items() if isinstance(v, dict))


def hyperparameter_fields(defaults: dict[str, Any],
                          choices: dict[str, tuple[str, ...]] | None = None) -> dict[str, Field]:
    """Fields for a family's hyperparameters, typed and bounded from their defaults: sizes and
    counts are integers >= 1, rates and slopes numbers >= 0, dropout < 0.95, momentum < 1;
    strings are one of their ``choices``."""
    fields = {}
    for hp, default in defaults.items():
        t = type(default)
        if hp in (choices or {}):
            fields[hp] = Field(str, default, choices=lambda allowed=choices[hp]: list(allowed))
            continue
        if t is list:
            fields[hp] = Field(list, default, max=WIDTH_MAX)
            continue
        low = {int: 1, float: 0}.get(t)
        high = (0.95 if "dropout" in hp else 0.9999 if "momentum" in hp
                else WIDTH_MAX if t is int else 1e6 if t is float else None)
        fields[hp] = Field(t, default, min=low, max=high)
    return fields


class Section:
    """A read-only section of a validated config: settings as attributes (``cfg.train.loss``).

    ``to_dict()`` gives plain nested dicts (for MLflow params, JSON and stage keys).
    """

    __slots__ = ("_values", "_where")

    def __init__(self, values: dict[str, Any], where: str = ""):
        wrapped = {k: Section(v, f"{where}{k}.") if isinstance(v, dict) and k != "space" else v
                   for k, v in values.items()}
        object.__setattr__(self, "_values", wrapped)
        object.__setattr__(self, "_where", where)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # pickle's probes (__getstate__ ...) of a bare instance
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no setting {self._where}{name}") from None

    def __setattr__(self, name, value):
        raise AttributeError("a config is read-only; use cfg.replace({...}) for a changed copy")

    # A config travels to a pipeline stage's process by pickle; the read-only guard above
    # would refuse the default restore.
    def __getstate__(self):
        return self._values, self._where

    def __setstate__(self, state):
        object.__setattr__(self, "_values", state[0])
        object.__setattr__(self, "_where", state[1])

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def __eq__(self, other) -> bool:
        return isinstance(other, Section) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Section({self.to_dict()!r})"

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() if isinstance(v, Section) else copy.deepcopy(v)
                for k, v in self._values.items()}

    def items(self):
        return self._values.items()


MODEL_SETTINGS = ("name", "truncation")  # the [model] keys that are not family hyperparameters


class Config(Section):
    """A validated pipeline config (see ``gan_pipeline.config.load``)."""

    def hyperparameters(self) -> dict[str, Any]:
        """The chosen family's hyperparameters (``[model]`` without ``name``)."""
        return {k: v for k, v in self.model.to_dict().items() if k not in MODEL_SETTINGS}

    def training_part(self) -> dict[str, Any]:
        """The settings without the pipeline-only ones: what a training run logs and resumes by."""
        return {k: v for k, v in self.to_dict().items() if k not in PIPELINE_ONLY}

    def replace(self, values: dict[str, Any]) -> "Config":
        """A copy with dotted settings replaced (``{"train.beta_1": 0.0}``), validated again."""
        from gan_pipeline.config.load import with_values

        return with_values(self, values)
