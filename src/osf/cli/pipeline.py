"""The stages behind ``osf train`` / ``search`` / ``export`` / ``run``, on a run directory (see ``run_dir``)."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch.utils.data import DataLoader

from ..export import export
from ..ir import load_ir
from ..ir.io import staged_directory
from ..ir.codegen import load_spec, traced_signature
from ..ir.serial import spec_children
from ..search import Front, LatencyModel, search
from ..space.arch import Arch
from ..space.space import SearchSpace
from ..supernet import Supernet
from ..supernet.batches import split_batch
from ..train import (EMA, ArchSampler, Distill, MotifSampler, Sampler, SandwichSampler, UniformSampler, Validation,
                     WarmupSampler, evaluate, train)
from ..train import checkpoint as ckpt
from ..train.distill import select_output
from ..train.labels import IGNORE_INDEX, SCORES, Score, class_dim
from ..train.loop import ARCH_NOTE, STEP_NOTE
from .config import Config, ConfigError, ExportSettings, SearchSettings, SpaceSettings, TrainSettings, to_json
from .data import PYTHON_API, Splits, load_data, loaders
from .models import (BUILTIN, ImageSize, ModelSpec, SpecError, has_random_weights, is_module_spec, is_saved_ir,
                     python_target, resolve, takes_channels, takes_classes, takes_image_size, trace_spec)
from .run_dir import IR_DIR, Run, Trained, build_supernet, is_run_dir, load_trained, read_run, write_run

DEFAULT_EPOCHS = 5
SEARCH_DIR = "search"
EXPORTS_INDEX = "exports.json"  # what osf export --budgets writes beside its subnets
INDEX_FIELDS = ("budget", "dir", "params", "flops", "flops_share")  # an index row's own fields; the rest: scores
CALIB_BATCHES = 20  # BatchNorm recalibration batches before evaluating or exporting a subnet
PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.5, 2  # --lr-schedule plateau: halve after 2 validations without a gain
FINETUNE_DIR = "finetune"  # RUN_DIR/finetune/NAME-DIGEST: one osf.train run directory per fine-tuned subnet


def say(message: str) -> None:
    """Progress notes go to stderr, so stdout stays the command's result."""
    print(message, file=sys.stderr)


def run_device(setting: str, key: str) -> torch.device:
    """The device a stage runs on: ``auto`` is CUDA when available, else the CPU; on a rank torchrun started
    a bare ``cuda`` is that rank's GPU (``LOCAL_RANK``). ``key`` names the setting in errors."""
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(setting)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise ConfigError(f"{key} is '{setting}' but CUDA is not available on this machine; use cpu or auto")
    if "RANK" in os.environ and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    elif "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", 1)) > 1:  # NCCL binds rank r to cuda:r
        raise ConfigError(_one_gpu_per_rank(key, setting))
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{key}: {device} does not exist, this machine has {torch.cuda.device_count()} GPU(s); "
                          "start at most one rank per GPU (--nproc) or use cpu")
    return device


def check_rank_devices(setting: str, nproc: int, key: str) -> None:
    """Refuse ``nproc`` ranks on CUDA before torchrun starts them when the machine has fewer GPUs (each rank
    takes its own: NCCL binds rank r to cuda:r), or when ``setting`` names one GPU for all of them."""
    device = run_device(setting, key)
    if device.type != "cuda":
        return
    if device.index is not None:
        raise ConfigError(_one_gpu_per_rank(key, setting))
    if nproc > torch.cuda.device_count():
        gpus = torch.cuda.device_count()
        raise ConfigError(f"{key} is '{setting}': --nproc {nproc} needs one GPU per rank and this machine has {gpus}; "
                          f"use --nproc {gpus} (or fewer) or --device cpu")


def _one_gpu_per_rank(key: str, setting: str) -> str:
    return f"{key} is '{setting}', but under --nproc each rank takes its own GPU; use cuda or auto"


def new_supernet(model: str, space: SpaceSettings, image_size: ImageSize | None = None,
                 data: Splits | None = None, classes: int | None = None, channels: int | None = None) -> Supernet:
    """Trace the model spec (or load a saved IR) into a supernet over ``space``. ``data``: what the supernet
    will train on; the model is traced as the data will call it, and refused before tracing when its example
    input is shaped otherwise than the data's samples. ``classes``: the head of a spec ``resolve`` builds
    (``head_classes``; a text architecture's scores each token where the data label each); ``channels``: of the
    images of a spec that takes them (``image_channels``)."""
    options = to_json(space)
    if is_saved_ir(model):
        return Supernet(None, ir=load_ir(model), copy_ir=False, **options)
    m = resolve(model, image_size=image_size, classes=classes, channels=channels,  # for the supernet alone
                per_position=data is not None and data.y_train.dim() > 1)
    if data is not None:
        m = _fed_by(data, model, m)
    if data is not None and len(m.args) == 1 and not m.kwargs and isinstance(m.args[0], torch.Tensor):
        _check_inputs(model, m.args[0], data.x_train[:2], spatial=bool(m.trace_options.get("dynamic_spatial")))
    ir = trace_spec(m, batched=not model.startswith("python:") or bool(data is not None and data.inputs_train))
    return Supernet(None, ir=ir, copy_ir=False, **options).train(m.model.training)


def head_classes(model: str, data: Splits) -> int | None:
    """The classes of the head osf builds for spec ``model`` (torchvision:, timm:, hf:ARCH) to train on
    ``data``: labels 0 to the largest, where the data tell it (arrays, or datasets listing their
    ``targets``); None for other specs, whose head is their own."""
    if not takes_classes(model) or (data.sets is not None and data.top_label is None):
        return None
    return data.largest_label() + 1


def _fed_by(data: Splits, model: str, m: ModelSpec) -> ModelSpec:
    """The spec traced as the data will call it: the data's ``x`` as its first input and their further inputs
    (``NAME_train`` / ``NAME_val`` arrays) by name, then from the data's first two samples. Its other example
    tensors (a text model's ``attention_mask`` when the data give token ids alone) are left out where
    ``forward`` has a default for them, and refused otherwise; inputs that are not tensors (``use_cache=False``)
    stay."""
    first_input = m.args[0] if m.args else next(iter(m.kwargs.values()), None)
    if not isinstance(first_input, torch.Tensor) and any(isinstance(t, torch.Tensor)
                                                         for t in pytree.tree_leaves(first_input)):
        raise ConfigError(f"{model} takes a {type(first_input).__name__} of tensors as its first input, but the data "
                          "give it one array per sample: use a python: factory whose model takes tensors (a wrapper "
                          "whose forward builds that structure from them), or osf.train with a batch_fn (docs/train.md)")
    tensors = [(i, v) for i, v in enumerate(m.args) if isinstance(v, torch.Tensor)]
    tensors += [(k, v) for k, v in m.kwargs.items() if isinstance(v, torch.Tensor)]
    if tensors:
        _check_kind(model, tensors[0][1], data.x_train)
    given = data.inputs_train
    if len(tensors) <= 1 and not given:
        return m
    params = list(inspect.signature(m.model.forward).parameters.values())
    by_name = {p.name: p for p in params}
    named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.POSITIONAL_ONLY)]

    def name_of(key: int | str) -> str:
        return named[key].name if isinstance(key, int) and key < len(named) else str(key)
    first = name_of(tensors[0][0]) if tensors else None
    takes_any = any(p.kind == p.VAR_KEYWORD for p in params)
    unknown = [n for n in given if n == first or not (n in by_name or takes_any)]
    if unknown:
        why = "is its first input, which x_train / x_val feed" if unknown[0] == first else \
            f"is no parameter of its forward {tuple(by_name)}"
        raise ConfigError(f"the data give {unknown[0]}_train / {unknown[0]}_val, but '{unknown[0]}' {why}; "
                          "rename or drop those arrays")
    left = [(k, name_of(k)) for k, _ in tensors[1:] if name_of(k) not in given]
    required = [n for _, n in left if n not in by_name or by_name[n].default is inspect.Parameter.empty]
    if required:
        raise ConfigError(f"{model} takes the input tensors {[name_of(k) for k, _ in tensors]}, but the data give "
                          f"{['x', *given]} and {required} has no default: give it as arrays "
                          f"{required[0]}_train and {required[0]}_val in the data, or use a python: factory whose "
                          "model takes the data's inputs (or osf.train with a batch_fn, docs/train.md)")
    if left:
        warnings.warn(f"{model} is traced with the data's inputs {[first, *given]}: {[n for _, n in left]} left at "
                      "the defaults of its forward (give them as NAME_train / NAME_val arrays in the data)",
                      stacklevel=2)
    dropped = {k for k, _ in left}
    cut = min([k for k in dropped if isinstance(k, int)], default=len(m.args))
    args = list(m.args[:cut])  # positional inputs after a dropped one are passed by name
    kwargs = {**{name_of(i): v for i, v in enumerate(m.args) if i >= cut and i not in dropped},
              **{k: v for k, v in m.kwargs.items() if k not in dropped}}
    if given:  # traced on the data themselves, so that every input has the data's sizes
        slot = {name_of(k): k for k, _ in tensors}  # where the example passed an input the data give
        for key, value in ((tensors[0][0], data.x_train), *((slot.get(n, n), data.inputs_train[n]) for n in given)):
            if isinstance(key, int) and key < len(args):
                args[key] = value[:2]
            else:
                kwargs[name_of(key)] = value[:2]
    return replace(m, args=tuple(args), kwargs=kwargs)


def _batch_layout(supernet: Supernet, data: Splits) -> tuple[str | None, dict[str, Any]]:
    """How batches call the traced model: the name of its first input tensor (the data's ``x``), or None
    when plain ``(x, y)`` batches do; and the constants it was traced with by keyword (``use_cache=False``),
    which every call must pass again."""
    positional, named = spec_children(load_spec(supernet.ir.info["in_spec"]))
    keys = [*range(positional.num_children), *(named.context or [])]
    leaves, first, constants = iter(supernet.ir.info["user_leaves"]), None, {}
    for key, child in zip(keys, [*spec_children(positional), *spec_children(named)]):
        entries = [next(leaves) for _ in range(child.num_leaves)]
        if first is None and any("placeholder" in e for e in entries):
            first = key
        if isinstance(key, str) and child.num_leaves == 1 and "const" in entries[0]:
            constants[key] = entries[0]["const"]
    if not data.inputs_train and not constants:
        return None, {}
    if isinstance(first, str):
        return first, constants
    signature = traced_signature(supernet.ir)
    if signature is None:
        raise ConfigError("the model's forward takes *args, so osf train cannot pass its first input by name beside "
                          f"{[*data.inputs_train, *constants]}: give it named parameters, or use osf.train with a "
                          "batch_fn (docs/train.md)")
    return list(signature.parameters)[1 + first], constants


def _inputs(x: torch.Tensor, inputs: dict[str, torch.Tensor], layout: tuple[str | None, dict[str, Any]]
            ) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of a call on the data's ``x`` and further inputs, laid out by ``_batch_layout``."""
    x_name, constants = layout
    return ((), {x_name: x, **inputs, **constants}) if x_name is not None else ((x,), {})


def _check_kind(model: str, example: torch.Tensor, x: torch.Tensor) -> None:
    """Refuse integer data ``x`` (images as uint8) for a model whose ``example`` input is floating point, and the
    converse (token ids stored as floats), before tracing: the model would fail on them inside its forward."""
    if example.is_floating_point() == x.is_floating_point():
        return
    want = ("floating-point inputs (images scaled to [0, 1]: x / 255)" if example.is_floating_point()
            else f"{example.dtype} inputs (token ids as integers)")
    raise ConfigError(f"{model} takes {example.dtype} inputs, but the data's x_train is {x.dtype}: give it "
                      f"{want} in x_train and x_val")


def _check_inputs(model: str, example: torch.Tensor, inputs: torch.Tensor, spatial: bool) -> None:
    """Refuse data whose samples the model cannot take (another rank or channel count, or another size
    unless traced with symbolic height and width)."""
    want, got = tuple(example.shape[1:]), tuple(inputs.shape[1:])
    if len(want) == len(got) and want[:1] == got[:1] and (spatial or want == got):
        return
    hint = _layout_hint(want, got) or ": choose a model for this data"
    if model.startswith("builtin:"):
        others = [f"builtin:{n}" for n in BUILTIN if tuple(resolve(f"builtin:{n}").args[0].shape[1:]) == got]
        hint += f"; {' and '.join(others)} take{'s' * (len(others) == 1)} these" if others else ""
    raise ConfigError(f"{model} takes samples shaped {list(want)}, but the data's are {list(got)}{hint}")


def _layout_hint(want: tuple[int, ...], got: tuple[int, ...]) -> str:
    """How data samples shaped ``got`` may be stored for a model taking ``want`` (channels first): channels
    last, a missing channel dim, one channel for several; empty when none of these fits."""
    if len(want) < 2:
        return ""
    channels = want[0]
    if len(got) == len(want) and got[-1] == channels and got[0] != channels:
        axes = ", ".join(map(str, (0, len(got), *range(1, len(got)))))
        return (f": these look channels-last, and PyTorch models take channels first; store x.transpose({axes}) as "
                "x_train and x_val")
    if got == want[1:]:
        fix = f"np.repeat(x[:, None], {channels}, axis=1)" if channels > 1 else "x[:, None]"
        return f": the samples lack the channel dim the model takes first; store {fix} as x_train and x_val"
    if len(got) == len(want) and got[0] == 1 and channels > 1:
        return (f": the model takes {channels} channels, the data have 1; store np.repeat(x, {channels}, axis=1) as "
                "x_train and x_val")
    return ""


# ----- train -----

def train_run(model: str, data: str, out: str | Path, space: SpaceSettings, settings: TrainSettings, *,
              image_size: ImageSize | None = None, progress: bool = True) -> Run:
    """Train the supernet of ``model`` on ``data`` into the run directory ``out``, resuming what is there
    (the same model, data, space and settings are required; steps / epochs may grow at a constant learning
    rate)."""
    out = Path(out)
    model, data = _absolute(model), _absolute(data)
    recorded = read_run(out) if is_run_dir(out) else None  # resumed
    root = (recorded.import_root if recorded else None) or os.getcwd()  # module specs import from here
    splits = load_data(data, root)  # bad data fails before any tracing
    device = run_device(settings.device, "train.device")
    if image_size is None and recorded is not None:
        image_size = recorded.image_size  # a resumed run was traced at its size (hf:vit: at 32 before 12-07)
    elif image_size is None and takes_image_size(model):
        image_size = _image_size(splits.x_train)  # traced at the data's size: other sizes are refused
    if settings.steps is None and settings.epochs is None:
        settings = replace(settings, epochs=DEFAULT_EPOCHS)
    if settings.distill == "teacher" and has_random_weights(model):
        raise ConfigError(f"train.distill teacher: {model} is built with random weights here (osf downloads none), "
                          "so it has nothing to teach; give a trained model (hf:PATH, a python: factory that loads "
                          "your weights, a saved IR) or use --distill inplace")
    requested = Run(model, data, to_json(space), to_json(settings), image_size,
                    import_root=root if is_module_spec(model) or is_module_spec(data) else None,
                    data_fingerprint=splits.fingerprint())
    if out.is_dir() and not is_run_dir(out) and {p.name for p in out.iterdir()} - {IR_DIR}:
        raise ConfigError(f"'{out}' exists and is not an osf run directory (no run.json); choose another --out")
    main_rank = not dist.is_initialized() or dist.get_rank() == 0  # under --nproc, rank 0 writes the run
    if dist.is_initialized():
        dist.barrier()  # every rank has looked before rank 0 writes
    if recorded is not None:
        run = recorded
        _check_resumable(out, run, requested)
        run.train = requested.train
        run.data_fingerprint = run.data_fingerprint or requested.data_fingerprint  # runs recorded before it
        supernet = build_supernet(out, run)
        if main_rank:
            say(f"resuming the run in {out}")
    else:
        torch.manual_seed(settings.seed)  # the model's initial weights
        classes = head_classes(model, splits)
        if progress and main_rank:
            head = f" with a head for the data's {classes} classes" if classes is not None else ""
            say(f"tracing {model}{head} and deriving its search space")
        began = time.perf_counter()
        channels = image_channels(splits.x_train) if takes_channels(model) else None
        supernet = new_supernet(model, space, image_size, data=splits, classes=classes, channels=channels)
        if progress and main_rank:
            say(f"{supernet.space.summary()} ({time.perf_counter() - began:.1f} s)")
        layout = _batch_layout(supernet, splits)
        for split, x, inputs in (("", splits.x_train, splits.inputs_train), (" validation", splits.x_val,
                                                                              splits.inputs_val)):
            args, kwargs = _inputs(x[:2], {k: v[:2] for k, v in inputs.items()}, layout)
            # outputs that are no class scores for these labels: refused before anything is written; the
            # validation split too, which is read only once training is over
            with torch.no_grad():
                try:
                    output = supernet.eval()(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - whatever the model raises on the data, said in one line
                    advice = ("give x_val (and each NAME_val) samples shaped and typed as the training ones" if split
                              else "check that the data suit the model (token ids within its vocabulary, the "
                              "special tokens it expects, the inputs it needs)")
                    raise ConfigError(f"{model} fails on the data's first two{split} samples ({type(e).__name__}: "
                                      f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); {advice}") from e
                _check_class_scores(output, splits.y_train[:2], splits.largest_label(), model)
        supernet.train()
        run = requested
        if main_rank:
            supernet.ir.save(str(out / IR_DIR), overwrite=True)  # a run cut short before its run.json is redone
            write_run(out, run)
    train_loader, val_loader = loaders(splits, settings.batch_size, *_batch_layout(supernet, splits), settings.workers)
    supernet.to(device)
    optimizer = adamw(supernet, settings.lr, settings)
    steps_per_epoch = len(train_loader) // settings.accumulate
    if settings.steps is None and steps_per_epoch == 0:
        raise ConfigError(f"train.accumulate {settings.accumulate} exceeds the {len(train_loader)} batches of an epoch "
                          f"(batch size {settings.batch_size}): accumulate fewer batches or give train.steps")
    steps = settings.steps if settings.steps is not None else settings.epochs * steps_per_epoch
    distill = None
    if settings.distill == "inplace":
        distill = Distill("inplace", weight=settings.distill_weight)
    elif settings.distill == "teacher":  # the model as given, before training (the run's IR holds its weights)
        teacher = supernet.ir.build().eval().requires_grad_(False).to(device)  # (training restores later)
        distill = Distill("teacher", teacher=teacher, weight=settings.distill_weight)
    # the max and min subnets, as scored at the end; every rank validates alike (the same data everywhere)
    validate = Validation(val_loader, every=settings.val_every, metric=settings.metric) if settings.val_every else None
    ema = EMA(supernet, settings.ema) if settings.ema is not None else None
    try:
        result = train(supernet, train_loader, optimizer=optimizer, scheduler=_scheduler(settings, optimizer, steps),
                       loss_fn=functools.partial(_cross_entropy, label_smoothing=settings.label_smoothing),
                       steps=steps, sampler=_sampler(settings, supernet, steps_per_epoch),
                       seed=settings.seed, clip_grad_norm=settings.clip_grad_norm, amp=settings.amp, distill=distill,
                       accumulate=settings.accumulate, validate=validate, ema=ema,
                       run_dir=out, checkpoint_every=settings.checkpoint_every, progress=progress and main_rank)
    except Exception as e:  # noqa: BLE001 - a subnet's failure on a batch, said in one line with its step
        failure = _step_failure(e, settings)
        if failure is None:
            raise
        raise failure from e
    if ema is not None:  # what the run scores, searches and exports (load_trained loads the same)
        ema.copy_to()
    if main_rank:
        validated = result.history[-1] if result.history else {}  # with --val-every: scored after the last step
        scores = {}
        for name, arch in (("max", supernet.space.max()), ("min", supernet.space.min())):
            key = f"val_{settings.metric}/{name}{'_ema' if ema is not None else ''}"
            scores[name] = round(validated[key] if key in validated else evaluate(
                supernet, arch, val_loader, calib_loader=train_loader, metric=settings.metric), 4)
        run.result = {"step": result.step, f"val_{settings.metric}": scores}
        write_run(out, run)
    return run


def adamw(module: torch.nn.Module, lr: float, settings: TrainSettings) -> torch.optim.AdamW:
    """AdamW over ``module``'s parameters with the run's weight decay: on all of them, or with
    ``settings.decay_1d`` False on those of two or more dims only (a second group without decay)."""
    if settings.decay_1d:
        return torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=settings.weight_decay)
    params = list(module.parameters())
    return torch.optim.AdamW([{"params": [p for p in params if p.dim() > 1]},
                              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}],
                             lr=lr, weight_decay=settings.weight_decay)


def _step_failure(e: Exception, settings: TrainSettings) -> ConfigError | None:
    """``e`` said in one line naming the training step and subnet it came from (the note ``osf.train``
    adds); None when it came from elsewhere."""
    note = next((n for n in getattr(e, "__notes__", ()) if n.startswith(STEP_NOTE)), None)
    if note is None:
        return None
    where = note.removeprefix("osf.train: ").split(ARCH_NOTE)[0]
    lines = str(e).strip().splitlines()
    hint = (f"; lower --batch-size (now {settings.batch_size})" if isinstance(e, torch.cuda.OutOfMemoryError)
            else "; the data's first samples passed, so look at the batch (--debug shows the traceback)")
    return ConfigError(f"training failed {where}: {type(e).__name__}: {lines[0] if lines else ''}{hint}")


def _loaders_of(trained: Trained) -> tuple[DataLoader, DataLoader]:
    """The training and validation loaders of a trained run's data."""
    data = load_data(trained.run.data, trained.run.import_root)
    if trained.run.data_fingerprint not in (None, data.fingerprint()):
        warnings.warn(f"the data of {trained.run.data} changed since this run trained on them: scores and "
                      "BatchNorm statistics now come from the new data", stacklevel=2)
    return loaders(data, trained.run.train["batch_size"], *_batch_layout(trained.supernet, data),
                   trained.run.train.get("workers", 0))


CHANNELS = (1, 3, 4)  # of images: grey, RGB, RGBA


def _grey(x: torch.Tensor) -> bool:
    """Whether ``x`` holds grey images without their channel dim, ``(N, H, W)``."""
    return x.dim() == 3 and min(x.shape[1:]) > max(CHANNELS)


def image_channels(x: torch.Tensor) -> int | None:
    """The channels of images ``(N, C, H, W)``, 1 for grey images ``(N, H, W)`` (which the model then refuses,
    saying to add the channel dim); None for other data (channels last too: the model then says how to store
    them)."""
    if _grey(x):
        return 1
    return int(x.shape[1]) if x.dim() == 4 and x.shape[1] in CHANNELS else None


def _image_size(x: torch.Tensor) -> ImageSize | None:
    """The size of images ``(N, C, H, W)`` (or ``(N, H, W, C)`` or ``(N, H, W)``, which the model then refuses,
    saying why): the side of square ones, else ``[H, W]``; None for other data (the model's default example
    size)."""
    if _grey(x):
        return _image_size(x[:, None])
    if x.dim() != 4:
        return None
    h, w = x.shape[-2:] if x.shape[-1] not in CHANNELS or x.shape[1] in CHANNELS else x.shape[1:3]  # channels last
    return int(h) if h == w else [int(h), int(w)]


def _absolute(spec: str) -> str:
    """Specs that name files (``npz:PATH``, ``python:PATH.py:NAME``, a saved IR) with absolute paths, so a
    run directory works from any working directory."""
    if spec.startswith("npz:"):
        return f"npz:{Path(spec[4:]).resolve()}"
    if spec.startswith("python:"):
        source, name, is_file = python_target(spec.removeprefix("python:"))
        return f"python:{Path(source).resolve()}:{name}" if is_file else spec
    return str(Path(spec).resolve()) if is_saved_ir(spec) else spec


def _sampler(settings: TrainSettings, supernet: Supernet, steps_per_epoch: int) -> Sampler:
    if settings.sampler == "motif":
        sampler: Sampler = MotifSampler(supernet, settings.subnets, settings.seed)
    else:
        cls = SandwichSampler if settings.sampler == "sandwich" else UniformSampler
        sampler = cls(supernet.space, settings.subnets, settings.seed)
    if settings.warmup_epochs:  # in epochs, not a fraction of the run: a resumed run may grow
        return WarmupSampler(sampler, math.ceil(settings.warmup_epochs * steps_per_epoch))
    return sampler


def _scheduler(settings: TrainSettings, optimizer: torch.optim.Optimizer,
               steps: int) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The learning-rate schedule over the run's ``steps``: one-cycle (a warm-up over the first 10 % to
    ``lr``, then annealed towards zero), cosine (from ``lr`` down to zero), plateau (halved after
    ``PLATEAU_PATIENCE`` validations without a better max-subnet score) or none (constant)."""
    if settings.lr_schedule == "onecycle":
        warm_up = 0.1 if 0.1 * steps != 1 else 0.15  # a warm-up of exactly one step: OneCycleLR divides by zero
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=steps, pct_start=warm_up)
    if settings.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    if settings.lr_schedule == "plateau":  # stepped by osf.train after each validation, on the max subnet's score
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=PLATEAU_FACTOR,
                                                          patience=PLATEAU_PATIENCE)
    return None


def _identity(run: Run) -> dict[str, Any]:
    """What a resumed run must share with the run it continues: with a learning-rate schedule, which spans
    the run, its length too."""
    defaults = TrainSettings()  # a run recorded before a setting existed had its default then
    train = {k: run.train.get(k, TrainSettings.BEFORE.get(k, getattr(defaults, k))) for k in TrainSettings.FIXED}
    length = {k: run.train.get(k) for k in ("steps", "epochs")} if train["lr_schedule"] not in TrainSettings.GROWING \
        else {}
    flags = {**run.space, **train, "image_size": run.image_size, **length}
    return {"model": run.model, "data": run.data, **{f"--{k.replace('_', '-')}": v for k, v in flags.items()}}


# settings of on/off flags: (the flag, the value it sets)
SWITCHES = {"--depth": ("--no-depth", False), "--decay-1d": ("--no-decay-1d", False), "--amp": ("--amp", True),
            "--prune-head-dim": ("--prune-head-dim", True)}


def _check_resumable(out: Path, run: Run, requested: Run) -> None:
    if run.data_fingerprint not in (None, requested.data_fingerprint):
        raise ConfigError(f"the data of {run.data} changed since {out} started training on them; resuming would "
                          "train on other data than its checkpoints were: restore them, or train into another --out")
    theirs = _identity(requested)
    for key, value in _identity(run).items():
        if theirs.get(key) != value:
            why = (f"its --lr-schedule {run.train['lr_schedule']} spans the whole run: resume with the same "
                   "length, or train a run that may grow with --lr-schedule constant into another --out"
                   if key in ("--steps", "--epochs") else "resume with the same settings or train into another --out")
            if key in SWITCHES:  # an on/off flag: said as the flag the command takes
                flag, on = SWITCHES[key]
                raise ConfigError(f"{out} holds a run trained {'with' if value == on else 'without'} {flag}; "
                                  f"{why}")
            raise ConfigError(f"{out} holds a run with {key} {value!r}, not {theirs.get(key)!r}; {why}")


# ----- search -----

def search_run(run_dir: str | Path, settings: SearchSettings, *, progress: bool = True) -> Front:
    """Search the trained supernet of ``run_dir`` (top-1 accuracy on its validation split, BatchNorm
    recalibrated on its training split) and save ``front.json`` and ``front.png`` to ``settings.out``
    (default ``RUN_DIR/search``, replaced by each search). Evaluations are cached there per checkpoint, so a
    rerun with a larger budget only evaluates the new subnets."""
    trained = load_trained(run_dir)
    trained.supernet.to(run_device(settings.device, "search.device"))
    out = Path(settings.out) if settings.out is not None else Path(run_dir) / SEARCH_DIR
    train_loader, val_loader = _loaders_of(trained)
    objectives, constraints = tuple(settings.objectives), dict(settings.constraints)
    latency = (LatencyModel(trained.supernet, cache=out / "latency.json")
               if "latency" in objectives or "latency" in constraints else None)
    metric = _metric(trained)
    front = search(trained.supernet, _score_on(val_loader, metric), objectives=objectives, constraints=constraints,
                   budget=settings.budget, algorithm=settings.algorithm, seed=settings.seed, latency=latency,
                   calib_loader=train_loader, calib_batches=settings.calib_batches, progress=progress,
                   score_name=SCORES[metric],
                   cache=out / (f"evaluations-step{trained.step}-calib{settings.calib_batches}-seed{settings.seed}"
                                f"{'' if metric == 'accuracy' else '-' + metric}.jsonl"))
    front.info["step"] = trained.step  # the checkpoint searched: export refuses a front of older weights
    front.info["metric"] = metric  # and one scored otherwise than the run now scores
    front.save(out / "front.json", overwrite=True)
    costs = [o for o in front.objectives if o != "accuracy"]
    try:
        front.plot(out / "front.png", x=costs[0] if costs else "flops", overwrite=True)
    except ImportError:
        say("matplotlib is not installed: no front.png (pip install matplotlib)")
    return front


def _check_class_scores(output: Any, labels: torch.Tensor, top_label: int, model: str = "") -> None:
    """Refuse, saying why, a model output whose logits (the output itself, or its ``logits`` (Hugging Face) or
    first entry) do not score classes for ``labels`` (a few samples' labels: one per sample, or one per position)
    up to ``top_label``; for an ``hf:PATH`` ``model``, say how to give the checkpoint a head for those
    classes."""
    logits = select_output(output)
    per_position = labels.dim() > 1
    folder = model[3:] if model.startswith("hf:") and Path(model[3:]).is_dir() else None
    head = "ForTokenClassification" if per_position else "ForSequenceClassification"
    new_head = (f": save one with a new head for the data's {top_label + 1} classes, e.g. "
                f"transformers.AutoModel{head}.from_pretrained('{folder}', num_labels="
                f"{top_label + 1}, ignore_mismatched_sizes=True).save_pretrained('{folder}-{top_label + 1}-classes')"
                + ("" if per_position else " (ForImageClassification for images)")) if folder is not None else ""
    dim = class_dim(logits, labels)
    if dim is None:
        if per_position:
            raise ConfigError(
                f"the data label each sample's positions ({list(labels.shape[1:])} per sample: segmentation, "
                f"tagging), so osf train needs class scores with those positions and a dim of classes, [batch, "
                f"classes, {', '.join(map(str, labels.shape[1:]))}] or [batch, {', '.join(map(str, labels.shape[1:]))}, "
                f"classes]; the model returns {list(logits.shape)}{_per_sample_hint(logits, labels)}"
                + (new_head or "; use a model with such a head (e.g. a Hugging Face ...ForTokenClassification "
                   "checkpoint, a torchvision segmentation model)"))
        raise ConfigError(f"the model returns {list(logits.shape)} where osf train needs class scores shaped "
                          f"[batch, classes] for {len(labels)} samples; use a model with a classification head"
                          + (new_head or " (e.g. a Hugging Face ...ForSequenceClassification checkpoint)"))
    if top_label >= logits.size(dim):
        ignore = (f"; if {top_label} marks positions to leave out (as 255 does in Pascal VOC), store np.where(y == "
                  f"{top_label}, {IGNORE_INDEX}, y): positions labelled {IGNORE_INDEX} count for nothing"
                  if per_position else "")
        raise ConfigError(f"the data have labels up to {top_label} but the model scores {logits.size(dim)} classes; "
                          f"give it a head with at least {top_label + 1}{new_head}{ignore}")


def _per_sample_hint(logits: torch.Tensor, labels: torch.Tensor) -> str:
    """Labels of two dims shaped like the model's scores: what they look like (one-hot, multi-label)."""
    if labels.dim() != 2 or logits.shape != labels.shape or not bool(((labels == 0) | (labels == 1)).all()):
        return ""
    if bool((labels.sum(1) == 1).all()):
        return "; the labels look one-hot: store y.argmax(1)"
    return f"; the labels look like several labels per sample (multi-label){PYTHON_API}"


def _cross_entropy(output: Any, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the model's logits (checked once, before training, by ``_check_class_scores``), over
    the labelled samples or positions."""
    logits = select_output(output)
    dim = class_dim(logits, target)
    return F.cross_entropy(logits if dim in (1, None) else logits.movedim(dim, 1), target, ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing)


def _score_on(loader: DataLoader, metric: str = "accuracy", dtype: torch.dtype | None = None):
    """``evaluate(model) -> score`` over ``loader`` (``metric``: a ``Score`` kind; floating-point inputs cast
    to ``dtype`` when given), for ``osf.search`` and reduced-precision exports."""
    def evaluate(model: torch.nn.Module) -> float:
        score = Score(metric)
        device = next(model.parameters(), torch.empty(0)).device
        with torch.no_grad():
            for batch in loader:
                args, kwargs, y = split_batch(batch)
                args, kwargs = pytree.tree_map_only(
                    torch.Tensor, lambda t: t.to(device, dtype) if dtype is not None and t.is_floating_point()
                    else t.to(device), (args, kwargs))
                score.add(select_output(model(*args, **kwargs)).cpu(), y)
        return score.value()
    return evaluate


# ----- export -----

def parse_arch(text: str, space: SearchSpace) -> Arch:
    """``max``, ``min``, an Arch as JSON text, or a JSON file holding one (e.g. an export's arch.json)."""
    if text in ("max", "min"):
        return space.max() if text == "max" else space.min()
    source = text
    if not text.lstrip().startswith("{"):
        path = Path(text)
        if not path.is_file():
            raise SpecError(f"--arch '{text}' is neither max, min, JSON ('{{\"width\": ..., \"depth\": ...}}') "
                            "nor an existing JSON file")
        source = path.read_text()
    try:
        arch = Arch.from_json(json.loads(source))
    except (ValueError, TypeError, AttributeError) as e:
        raise SpecError(f"--arch '{text}' is not an osf Arch ({e}); expected {{\"width\": {{...}}, \"depth\": "
                        "{...}}") from None
    space.validate(arch)
    return arch


def export_run(run_dir: str | Path, settings: ExportSettings, *, front: Front | None = None,
               source: str | None = None, progress: bool = True) -> Path:
    """Export subnets of the trained supernet in ``run_dir`` to ``settings.out``: ``settings.arch``, or
    the front's (``front``, else ``RUN_DIR/search/front.json``) best point within ``settings.pick``, or with
    ``settings.budgets`` the best point within each of its values (and ``pick``), each in a directory of
    its own under ``out`` beside an index (``exports.json``, ``exports.md``), all written atomically.
    With ``settings.finetune_epochs`` each subnet is first trained alone from its inherited weights (see
    ``_finetune``); the card then scores both. BatchNorm statistics are first re-estimated for each subnet on
    the training split, for a front's point with the search's seed and calibration batches (so the exported
    model scores the front's accuracy); with
    ``settings.evaluate``, an arch not taken from a front is scored on the validation split. ``source``:
    where the model card says the run lives (default: ``run_dir``)."""
    out = Path(settings.out)
    if out.exists() and not settings.force:  # before any work; osf.export checks again
        raise FileExistsError(f"'{out}' already exists; pass --force (export.force: true) to replace it")
    trained = load_trained(run_dir)
    ema = trained.run.train.get("ema")
    weights = f" (moving average of the weights, decay {ema})" if ema is not None else ""
    source = f"{trained.run.model}, trained {trained.step} steps{weights} on {trained.run.data} " + (
        source or f"(osf run directory {run_dir})")
    tune = Path(run_dir) / FINETUNE_DIR if settings.finetune_epochs else None
    if settings.arch is not None:
        arch = parse_arch(settings.arch, trained.supernet.space)
        return _export_arch(trained, _loaders_of(trained), arch, {}, out, settings, source, progress, tune=tune)
    front = front if front is not None else _saved_front(run_dir, trained.step, _metric(trained))
    if not settings.budgets:
        point = front.best(**settings.pick)
        return _export_arch(trained, _loaders_of(trained), point.arch, _front_metrics(point, trained), out, settings, source,
                            progress, front, tune=tune)
    (metric, values), = settings.budgets.items()
    picks = {budget_dir(metric, v): (v, front.best(**settings.pick, **{metric: v})) for v in values}  # all fit
    rows, loaders_ = [], _loaders_of(trained)
    # each subnet is fine-tuned from the trained weights, not from the subnet fine-tuned before it
    inherited = {k: v.clone() for k, v in trained.supernet.state_dict().items()} if tune is not None else None
    with staged_directory(out, settings.force) as tmp:
        for name, (value, point) in picks.items():
            if inherited is not None:
                trained.supernet.load_state_dict(inherited)
            _export_arch(trained, loaders_, point.arch, _front_metrics(point, trained), tmp / name,
                         replace(settings, force=False), source, progress, front, tune=tune)
            card = json.loads((tmp / name / "card.json").read_text())
            rows.append({"budget": {metric: value}, "dir": name, "params": card["params"], "flops": card["flops"],
                         "flops_share": round(card["flops"] / card["full_model"]["flops"], 4), **card["metrics"]})
        index = {"format": "osf-exports", "version": 1, "source": source, "pick": settings.pick, "exports": rows}
        if tune is not None:
            index["finetune_epochs"] = settings.finetune_epochs
        (tmp / EXPORTS_INDEX).write_text(json.dumps(index, indent=1) + "\n")
        (tmp / "exports.md").write_text(exports_markdown(index))
    return out


def budget_dir(metric: str, value: float | str) -> str:
    """The directory of a budget's export: ``flops-25pct``, ``params-2e+06``."""
    text = value if isinstance(value, str) else f"{value:g}"
    return f"{metric}-{text.replace('%', 'pct')}"


def exports_markdown(index: dict[str, Any]) -> str:
    """``exports.md``: one row per budget (its directory, size and the scores its model card holds)."""
    rows = index["exports"]
    scores = [k for k in rows[0] if k not in INDEX_FIELDS] if rows else []
    lines = [f"# Subnets of {index['source']}", "",
             "One subnet per budget, each the most accurate point of the search's front within it"
             + (f" and within {index['pick']}" if index["pick"] else "") + "; each directory holds `model.pt2`, "
             "`model.onnx`, `weights.safetensors` and a `model_card.md` that says how to load it."
             + (f" Each was then fine-tuned alone for {_epochs(index['finetune_epochs'])} from its inherited weights "
                "(`..._inherited`: its score before; its model card says how)."
                if index.get("finetune_epochs") else ""),
             "",
             "| budget | directory | params | FLOPs | % of the full model's FLOPs | " + " | ".join(scores) + " |",
             "|---|---|---:|---:|---:|" + "---:|" * len(scores)]
    for r in rows:
        budget = ", ".join(f"{k} <= {v}" for k, v in r["budget"].items())
        lines.append(f"| {budget} | [{r['dir']}]({r['dir']}/model_card.md) | {r['params']:,} | {r['flops']:,} | "
                     f"{100 * r['flops_share']:.1f} | " + " | ".join(str(r.get(k, "")) for k in scores) + " |")
    return "\n".join(lines) + "\n"


def _metric(trained: Trained) -> str:
    """The run's validation score (``TrainSettings.metric``; runs recorded before it: accuracy)."""
    return trained.run.train.get("metric", "accuracy")


def _front_metrics(point: Any, trained: Trained) -> dict[str, Any]:
    metrics: dict[str, Any] = {_metric(trained): round(point.accuracy, 4)}
    if point.latency is not None:
        metrics["latency_ms"] = round(point.latency * 1e3, 4)
    return metrics


def _export_arch(trained: Trained, loaders_: tuple[DataLoader, DataLoader], arch: Arch, metrics: dict[str, Any],
                 out: Path, settings: ExportSettings, source: str, progress: bool, front: Front | None = None, *,
                 tune: Path | None = None) -> Path:
    """Export ``arch`` (a point of ``front`` when given, whose ``metrics`` it carries) to ``out``; ``loaders_``:
    the run's training and validation loaders; ``tune``: fine-tune ``arch`` first, in a run directory there
    (the inherited weights' score becomes ``<metric>_inherited``)."""
    metrics = dict(metrics)
    # the statistics the search measured its accuracy with (fronts saved before osf recorded them: default)
    calib_batches = (front.info.get("calib_batches") if front is not None else None) or CALIB_BATCHES
    seed = front.info.get("seed", 0) if front is not None else 0
    train_loader, val_loader = loaders_
    metric = _metric(trained)

    def score() -> float:  # on the validation split; recalibrates BatchNorm statistics for arch first
        return round(evaluate(trained.supernet, arch, val_loader, calib_loader=train_loader,
                              calib_batches=calib_batches, seed=seed, metric=metric), 4)
    inherited = None
    if tune is not None:
        inherited = metrics.pop(metric, None)
        if inherited is None and settings.evaluate:
            inherited = score()
        source += _finetune(trained, train_loader, arch, tune / out.name, settings, progress)
    if settings.evaluate and metric not in metrics:
        metrics[metric] = score()
    elif trained.supernet.batch_norms(arch):  # the exported subnet keeps statistics that fit it
        trained.supernet.recalibrate(arch, train_loader, calib_batches, seed=seed)
    dtype = None if settings.dtype == "float32" else getattr(torch, settings.dtype)
    if dtype is not None and settings.evaluate:  # what the written model scores, rounded to its dtype
        cast = trained.supernet.extract(arch).eval().to(dtype)
        metrics[f"{metric}_{settings.dtype}"] = round(_score_on(val_loader, metric, dtype)(cast), 4)
    if inherited is not None:  # the fine-tuned score first (the exports index's first column), then the inherited
        metrics = {**({metric: metrics.pop(metric)} if metric in metrics else {}), f"{metric}_inherited": inherited,
                   **metrics}
    return export(trained.supernet, arch, out, formats=tuple(settings.formats), metrics=metrics,
                  overwrite=settings.force, source=source, dtype=dtype, progress=progress)


def _finetune(trained: Trained, train_loader: DataLoader, arch: Arch, where: Path, settings: ExportSettings,
              progress: bool) -> str:
    """Train ``arch`` alone on the trained supernet's weights for ``settings.finetune_epochs`` epochs of the
    training split: AdamW at ``finetune_lr`` (default: a tenth of the run's rate) annealed to zero by a cosine,
    the run's weight decay, label smoothing, accumulation, clipping, mixed precision, seed and device, and the
    run's distillation as a frozen teacher (in-place: the max subnet as trained; teacher: the model as given).
    It trains in the run directory ``where-DIGEST`` (the digest covers the arch, the checkpoint and these
    settings), so an export cut short resumes there and one repeated, or another budget picking the same
    subnet, reuses it. Returns what the model card says of it."""
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    run = TrainSettings(**{k: v for k, v in trained.run.train.items() if k in known})
    supernet, space = trained.supernet, trained.supernet.space
    lr = settings.finetune_lr or run.lr / 10
    steps = settings.finetune_epochs * len(train_loader) // run.accumulate
    if steps == 0:
        raise ConfigError(f"export.finetune_epochs {settings.finetune_epochs} of {len(train_loader)} batches make no "
                          f"step of train.accumulate {run.accumulate} batches; fine-tune more epochs")
    home = supernet.device()
    try:
        device = run_device(run.device, "train.device")
    except ConfigError:  # trained on a GPU this machine lacks
        device = torch.device("cpu")
        warnings.warn(f"the run trained on {run.device}, which this machine lacks: fine-tuning on the CPU",
                      stacklevel=2)
    distill, taught = None, ""
    if run.distill == "inplace":  # the max subnet before any fine-tuning, with statistics that fit it alone
        if supernet.batch_norms(space.max()):
            supernet.recalibrate(space.max(), train_loader, CALIB_BATCHES, seed=0)
        teacher, taught = supernet.extract(space.max()), ", distilled from the max subnet"
    elif run.distill == "teacher":
        teacher, taught = supernet.ir.build(), ", distilled from the model as given"
    if run.distill != "none":
        distill = Distill("teacher", teacher=teacher.eval().requires_grad_(False).to(device), weight=run.distill_weight)
    identity = {"arch": arch.to_json(), "checkpoint": trained.checkpoint.name, "epochs": settings.finetune_epochs,
                "lr": lr, "batch_size": run.batch_size}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]
    # a subnet two budgets both pick is fine-tuned once
    where = next(iter(sorted(where.parent.glob(f"*-{digest}"))), where.with_name(f"{where.name}-{digest}"))
    if progress:
        done = [p.name for p in ckpt.checkpoints(where / "checkpoints")][-1:] == [ckpt.name_for(steps)]
        say(f"{'reusing the subnet fine-tuned in' if done else 'fine-tuning'} {where.parent.name}/{where.name}: "
            f"{_epochs(settings.finetune_epochs)} ({steps} steps) at lr {lr:g}")
    supernet.to(device)
    optimizer = adamw(supernet, lr, run)
    try:
        train(supernet, train_loader, optimizer=optimizer,
              scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps),
              loss_fn=functools.partial(_cross_entropy, label_smoothing=run.label_smoothing), steps=steps,
              sampler=ArchSampler(space, {"subnet": arch}), seed=run.seed, clip_grad_norm=run.clip_grad_norm,
              amp=run.amp, distill=distill, accumulate=run.accumulate, run_dir=where,
              checkpoint_every=run.checkpoint_every, keep_checkpoints=1, progress="fine-tune" if progress else False)
    except Exception as e:  # noqa: BLE001 - a failure on a batch, said in one line with its step
        failure = _step_failure(e, run)
        if failure is None:
            raise
        raise failure from e
    finally:
        supernet.to(home).eval()
    return (f"; fine-tuned alone for {_epochs(settings.finetune_epochs)} ({steps} steps, AdamW lr {lr:g} annealed "
            f"to zero{taught}) from its inherited weights")


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def _saved_front(run_dir: str | Path, step: int, metric: str) -> Front:
    path = Path(run_dir) / SEARCH_DIR / "front.json"
    if not path.is_file():
        raise SpecError(f"no search results in {path.parent}; run osf search {run_dir} first, or pass --arch")
    front = Front.load(path)
    searched = front.info.get("step")
    if searched is not None and searched != step:
        raise SpecError(f"{path} was searched at step {searched}, but the newest checkpoint is step {step}, so its "
                        f"picks and accuracies are out of date; run osf search {run_dir} again, or pass --arch")
    scored = front.info.get("metric", "accuracy")  # fronts saved before osf recorded it: accuracy
    if scored != metric:
        raise SpecError(f"{path} was searched by {SCORES[scored]}, but the run now scores {SCORES[metric]} (train.metric "
                        f"{metric}); run osf search {run_dir} again, or pass --arch")
    return front


# ----- run -----

def run_config(config: Config, *, progress: bool = True) -> dict[str, Any]:
    """All stages of a config in order: train (resuming), then search and export when configured."""
    if (config.export is not None and config.export.arch is None and config.search is None
            and not (Path(config.out) / SEARCH_DIR / "front.json").is_file()):
        raise ConfigError("export needs export.arch (max, min, JSON or a file) or a search section to pick from")
    if config.export is not None and Path(config.export.out).exists() and not config.export.force:
        raise FileExistsError(f"'{config.export.out}' already exists; set export.force: true to replace it, or "
                              "choose another export.out")  # before training and searching, not after
    run = train_run(config.model, config.data, config.out, config.space, config.train, image_size=config.image_size,
                    progress=progress)
    done: dict[str, Any] = {"run_dir": config.out, "train": run.result}
    front = None
    if config.search is not None:
        front = search_run(config.out, config.search, progress=progress)
        done["search"] = front
    if config.export is not None:
        done["export"] = export_run(config.out, config.export, front=front, progress=progress)
    return done
