"""Settings of the ``osf`` command's stages (one dataclass each, shared by the subcommands' flags and by
``osf run`` config files) and the config-file reader, which names any unknown or mistyped key."""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..search.search import ALGORITHMS
from ..train.labels import SCORES
from .models import SpecError


class ConfigError(SpecError):
    """A config file or setting that cannot be used; the message names the key and the valid ones."""


@dataclass
class SpaceSettings:
    """Options of ``osf.SearchSpace`` (see docs/space.md)."""
    width_ratios: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    multiple_of: int = 8
    depth: bool = True
    include: list[str] | None = None
    exclude: list[str] | None = None
    prune_head_dim: bool = False


@dataclass
class TrainSettings:
    """How ``osf train`` trains: AdamW (``weight_decay`` on every parameter, or with ``decay_1d`` False on
    those of two or more dims only), cross-entropy (with
    ``label_smoothing``), ``steps`` or ``epochs`` (default: 5 epochs); ``metric``:
    the validation score of the run, its search and its exports (``accuracy``, or ``miou`` for labels per
    position); ``accumulate``: batches per optimizer step; ``val_every``: steps (or ``"epoch"``) between scores
    of the max and min subnets on the validation split while training (None: once, at the end); ``ema``: the
    decay of a moving average of the weights, which the run then scores, searches and exports (None: the
    weights as trained)."""
    steps: int | None = None
    epochs: int | None = None
    lr: float = 3e-3
    lr_schedule: str = "onecycle"
    weight_decay: float = 0.01
    decay_1d: bool = True
    label_smoothing: float = 0.0
    batch_size: int = 64
    sampler: str = "sandwich"
    subnets: int = 4
    distill: str = "inplace"
    distill_weight: float = 0.5
    warmup_epochs: float = 0.0
    clip_grad_norm: float | None = None
    amp: bool = False
    seed: int = 0
    checkpoint_every: int = 100
    device: str = "auto"
    workers: int = 0
    metric: str = "accuracy"
    accumulate: int = 1
    val_every: int | str | None = None
    ema: float | None = None

    SAMPLERS: typing.ClassVar = ("sandwich", "uniform", "motif")
    DISTILL: typing.ClassVar = ("inplace", "teacher", "none")
    SCHEDULES: typing.ClassVar = ("onecycle", "cosine", "constant", "plateau")
    GROWING: typing.ClassVar = ("constant", "plateau")  # schedules that do not span the run: it may grow
    # settings a resumed run must share with the run it continues (steps / epochs may grow when the learning
    # rate is constant; a schedule spans the run's length, which is then fixed too)
    FIXED: typing.ClassVar = ("lr", "lr_schedule", "weight_decay", "decay_1d", "label_smoothing", "batch_size",
                              "sampler", "subnets", "distill", "distill_weight", "warmup_epochs", "clip_grad_norm",
                              "amp", "seed", "accumulate", "ema")
    # what a run recorded before a setting existed used, where that is not the setting's default now
    BEFORE: typing.ClassVar = {"lr_schedule": "constant"}

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give train steps or epochs, not both")
        _choice("train.sampler", self.sampler, self.SAMPLERS)
        _choice("train.distill", self.distill, self.DISTILL)
        _choice("train.lr_schedule", self.lr_schedule, self.SCHEDULES)
        _choice("train.metric", self.metric, tuple(SCORES))
        if isinstance(self.val_every, str) and self.val_every != "epoch":
            raise ConfigError(f"train.val_every is a number of steps or 'epoch', got '{self.val_every}'")
        for name in ("steps", "epochs", "batch_size", "subnets", "checkpoint_every", "accumulate", "val_every"):
            value = getattr(self, name)
            if value is not None and value != "epoch" and value < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {value}")
        if self.warmup_epochs < 0:
            raise ConfigError(f"train.warmup_epochs must be at least 0, got {self.warmup_epochs}")
        if self.workers < 0:
            raise ConfigError(f"train.workers must be at least 0, got {self.workers}")
        if not self.lr > 0:  # AdamW refuses a negative rate itself, but trains nothing at 0
            raise ConfigError(f"train.lr must be above 0, got {self.lr}")
        if not 0 <= self.distill_weight <= 1:
            raise ConfigError(f"train.distill_weight must lie in [0, 1], got {self.distill_weight}")
        if not self.weight_decay >= 0:
            raise ConfigError(f"train.weight_decay must be at least 0, got {self.weight_decay}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ConfigError(f"train.ema must lie strictly between 0 and 1 (e.g. 0.999), got {self.ema}")
        if self.lr_schedule == "plateau" and self.val_every is None:
            raise ConfigError("train.lr_schedule plateau halves the rate when the validation score stops rising: "
                              "give train.val_every too (osf train --val-every N|epoch)")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ConfigError(f"train.clip_grad_norm must be above 0, got {self.clip_grad_norm}")
        _device("train.device", self.device)
        if self.sampler != "uniform" and self.subnets < 2:
            raise ConfigError(f"the {self.sampler} sampler runs the max and min subnets: train.subnets must be >= 2")


@dataclass
class SearchSettings:
    """Arguments of ``osf.search``; ``out`` defaults to ``RUN_DIR/search``."""
    objectives: tuple[str, ...] = ("accuracy", "flops")
    constraints: dict[str, Any] = field(default_factory=dict)
    budget: int = 100
    algorithm: str = "surrogate"
    seed: int = 0
    calib_batches: int = 20
    out: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        _choice("search.algorithm", self.algorithm, ALGORITHMS)
        _device("search.device", self.device)
        for name in ("budget", "calib_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"search.{name} must be at least 1, got {getattr(self, name)}")


EXPORT_DTYPES = ("float32", "float16", "bfloat16")


@dataclass
class ExportSettings:
    """Which subnets to export and how: ``arch`` (Arch JSON, a JSON file, ``max`` or ``min``) or, after a
    search, ``pick`` (budgets for ``Front.best``, e.g. ``{flops: 50%}``; default: the most accurate), and
    ``budgets``: one metric and several values, a subnet for each (``{flops: [25%, 50%, 100%]}``);
    ``finetune_epochs``: train each exported subnet alone that many epochs on the training split first, from
    its inherited weights, at ``finetune_lr`` (default: a tenth of the run's) annealed to zero (0: export the
    inherited weights)."""
    out: str
    arch: str | None = None
    pick: dict[str, Any] = field(default_factory=dict)
    budgets: dict[str, Any] = field(default_factory=dict)
    formats: tuple[str, ...] = ("pt2", "onnx")
    force: bool = False
    evaluate: bool = True
    dtype: str = "float32"
    finetune_epochs: int = 0
    finetune_lr: float | None = None

    def __post_init__(self) -> None:
        if self.arch is not None and (self.pick or self.budgets):
            other = "pick" if self.pick else "budgets"
            raise ConfigError(f"give export.arch or export.{other}, not both (osf export: --arch or --{other})")
        if self.budgets:
            values = next(iter(self.budgets.values()))
            if len(self.budgets) != 1 or not isinstance(values, list) or not values:
                raise ConfigError("export.budgets takes one metric and a list of its values, e.g. "
                                  f"{{flops: [25%, 50%, 100%]}}; got {self.budgets!r}")
            if set(self.budgets) & set(self.pick):
                raise ConfigError(f"export.pick and export.budgets both limit {next(iter(self.budgets))}")
        for f in self.formats:
            _choice("export.formats", f, ("pt2", "onnx"))
        _choice("export.dtype", self.dtype, EXPORT_DTYPES)
        if self.finetune_epochs < 0:
            raise ConfigError(f"export.finetune_epochs must be at least 0, got {self.finetune_epochs}")
        if self.finetune_lr is not None and not self.finetune_lr > 0:
            raise ConfigError(f"export.finetune_lr must be above 0, got {self.finetune_lr}")
        if self.finetune_lr is not None and not self.finetune_epochs:
            raise ConfigError("export.finetune_lr is the rate of fine-tuning: give export.finetune_epochs too "
                              "(osf export: --finetune-epochs)")


@dataclass
class Config:
    """An ``osf run`` config: the model and data specs, and each stage's settings."""
    model: str
    data: str
    out: str
    space: SpaceSettings
    train: TrainSettings
    search: SearchSettings | None
    export: ExportSettings | None
    image_size: int | list[int] | None = None  # a square's side or [height, width]


SECTIONS = {"model": ("spec", "image_size"), "data": ("spec",), "space": SpaceSettings, "train": TrainSettings,
            "search": SearchSettings, "export": ExportSettings}
REQUIRED = ("model", "data", "train")


def _choice(key: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} is '{value}'; choose one of {', '.join(allowed)}")


def _device(key: str, value: str) -> None:
    if value == "auto":
        return
    try:
        torch.device(value)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{key} is '{value}'; use auto (CUDA when available, else the CPU), cpu, cuda or "
                          "cuda:N") from None


def _keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _check_type(key: str, value: Any, hint: Any) -> Any:
    """``value`` converted to ``hint`` (int, float, str, bool, optional, tuple/list of, dict) or a ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        alternatives = [a for a in args if a is not type(None)]
        for hint_ in alternatives:  # the first alternative the value fits (int | str: 100 or "epoch")
            try:
                return _check_type(key, value, hint_)
            except ConfigError as e:
                error = e
        if len(alternatives) == 1:
            raise error
        names = " or ".join(getattr(a, "__name__", str(a)) for a in alternatives)
        raise ConfigError(f"{key} must be {names}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        items = [_check_type(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 3e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    raise ConfigError(f"{key} must be {getattr(hint, '__name__', hint)}, got {value!r}")


def settings(cls: type, section: str, values: dict[str, Any], *, also: tuple[str, ...] = ()) -> Any:
    """``cls(**values)`` after checking that every key is a field of ``cls`` (or one of ``also``, which the
    caller reads itself) and every value its type."""
    valid = list(also) + _keys(cls)
    if not isinstance(values, dict):
        raise ConfigError(f"section '{section}' must be a mapping of {', '.join(valid)}")
    for key in values:
        if key not in valid:
            raise ConfigError(f"unknown key '{section}.{key}'; valid keys of '{section}': {', '.join(valid)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _check_type(f"{section}.{k}", v, hints[k]) for k, v in values.items() if k not in also}
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"section '{section}' needs key(s) {', '.join(missing)}")
    return cls(**kwargs)


def read_config(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError("YAML configs need PyYAML: pip install pyyaml (or write the config as .toml)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}' is not valid YAML: {' '.join(str(e).split())}") from None
    elif path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:
            raise ConfigError("TOML configs need Python 3.11 or later (or write the config as .yaml)") from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file '{path}' is not valid TOML: {e}") from None
    else:
        raise ConfigError(f"config file '{path}' must end in .yaml, .yml or .toml")
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping with sections {', '.join(SECTIONS)}")
    return data


def parse_config(data: dict[str, Any]) -> Config:
    """Validate a raw config mapping. ``model`` and ``data`` may be a spec string or ``{spec: ...}``;
    ``train.out`` is required there (the run directory)."""
    for section in data:
        if section not in SECTIONS:
            raise ConfigError(f"unknown section '{section}'; valid sections: {', '.join(SECTIONS)}")
    for section in REQUIRED:
        if section not in data:
            raise ConfigError(f"the config needs a '{section}' section")
    specs = {}
    for section in ("model", "data"):
        value = data[section]
        value = {"spec": value} if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise ConfigError(f"section '{section}' must be a spec string or a mapping with 'spec'")
        for key in value:
            if key not in SECTIONS[section]:
                raise ConfigError(f"unknown key '{section}.{key}'; valid keys of '{section}': "
                                  f"{', '.join(SECTIONS[section])}")
        if not isinstance(value.get("spec"), str):
            raise ConfigError(f"{section}.spec must be a spec string, got {value.get('spec')!r}")
        specs[section] = value
    train = settings(TrainSettings, "train", data["train"], also=("out",))
    out = data["train"].get("out")
    if not isinstance(out, str):
        raise ConfigError("train.out must name the run directory (a string)")
    image_size = specs["model"].get("image_size")
    if image_size is not None and not _is_image_size(image_size):
        raise ConfigError(f"model.image_size must be a positive int or [height, width], got {image_size!r}")
    return Config(
        model=specs["model"]["spec"], data=specs["data"]["spec"], out=out, image_size=image_size,
        space=settings(SpaceSettings, "space", data.get("space") or {}),
        train=train,
        search=settings(SearchSettings, "search", data["search"] or {}) if "search" in data else None,
        export=settings(ExportSettings, "export", data["export"] or {}) if "export" in data else None)


def _is_image_size(value: Any) -> bool:
    sides = value if isinstance(value, list) and len(value) == 2 else [value]
    return all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sides)


def to_json(obj: Any) -> dict[str, Any]:
    """A settings dataclass as plain JSON (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))
