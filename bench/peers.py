"""One adapter per tool — osf, NVIDIA ModelOpt (AutoNAS) and Torch-Pruning — each run on one model.

Every adapter is ``fn(model, example_args, example_kwargs, **options) -> dict`` and returns the same plain,
JSON-ready fields, so the three tools can be tabulated side by side (``bench/coverage.py``):

- ``converted``: True, or the error text of the tool's conversion (osf: ``Supernet``; ModelOpt:
  ``mtn.convert(model, mode="autonas")``; Torch-Pruning: building ``MetaPruner``'s dependency graph).
- ``max_equal`` / ``max_abs_diff``: the maximal subnet (osf: ``extract(space.max())``; ModelOpt:
  ``mtn.sample(model, max)``) gives the original's eval-mode outputs (``torch.allclose`` on every tensor
  leaf, rtol 1e-4, atol 1e-5 times the leaf's largest magnitude, at least 1). Torch-Pruning has no maximal subnet (pruning is one-shot): None.
- ``min_runs``: the minimal subnet, as a standalone model, runs and its outputs have the original's
  shapes (osf: ``extract(space.min())``; ModelOpt: ``mtn.sample(model, min)`` then ``mtn.export``;
  Torch-Pruning: its documented recipe at ``pruning_ratio=0.5``). ``min_params_ratio``: its parameters
  over the original's.
- ``dims``: elastic dimensions by kind — ``channels``, ``heads`` (whole attention heads), ``embedding``
  (residual-stream width) and ``depth`` (removable units) — classified by the same rules for every tool
  (see ``classify``).
- ``log10_subnets``: log10 of the number of subnets under one convention for all tools (``COMMON``);
  ``log10_native``: the tool's own count of its space where it has one.
- timings: ``convert_seconds``; ``step_ratio`` (osf, ModelOpt): a train step of the converted model set
  to a random arch divided by the same step of that arch exported standalone, measured alternately.

The peers are used through their documented APIs only. Nothing here is copied from them.
"""
from __future__ import annotations

import copy
import math
import random
import statistics
import time
import traceback
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils._pytree import tree_leaves, tree_map

import common

SEED = 0
ATOL, RTOL = 1e-5, 1e-4
RATIOS, MULTIPLE_OF = (0.25, 0.5, 0.75, 1.0), 8  # the common width convention (= osf's defaults)
KINDS = ("channels", "heads", "embedding", "depth")
COMMON = (f"log10 subnets = sum over elastic width dims of log10(number of distinct widths at ratios "
          f"{', '.join(f'{r:g}' for r in RATIOS)} of the dim's full size, rounded to a multiple of {MULTIPLE_OF} "
          "(whole heads: of 1)) + sum over depth dims of log10(number of depth choices the tool offers: 2 for "
          "an osf unit (keep/drop), len(choices) for a ModelOpt `depth` hparam (first-k layers of an "
          "nn.Sequential)). Choices are multiplied as if independent (a width inside a dropped unit still "
          "counts), the same for every tool; osf's own deduplicated count is `log10_native`. A width dim counts as an "
          "elastic dim only when this convention gives it at least two widths (channels: wider than "
          f"{MULTIPLE_OF}).")


# ----------------------------------------------------------------------------------------------
# shared helpers

def describe(exc: BaseException, stage: str) -> str:
    """``stage: Type: first line of the message`` (truncated)."""
    lines = str(exc).strip().splitlines()
    return (f"{stage}: {type(exc).__name__}" + (f": {lines[0]}" if lines else ""))[:300]


def tensors(out: Any) -> list[torch.Tensor]:
    return [x for x in tree_leaves(out) if isinstance(x, torch.Tensor)]


def run(model: nn.Module, args: tuple, kwargs: dict) -> Any:
    with torch.no_grad():
        return model(*args, **kwargs)


def compare(expected: Any, got: Any) -> tuple[bool, float | None, str | None]:
    """(equal, max abs diff, why not) over the tensor leaves of two outputs: ``torch.allclose`` with
    rtol 1e-4 and atol 1e-5 times the leaf's largest magnitude (``common.compare_outputs(scaled=True)``)."""
    why, worst = common.compare_outputs(expected, got, ATOL, RTOL, scaled=True)
    return why is None, worst, why


def record_min(row: dict, expected: Any, small: nn.Module, args: tuple, kwargs: dict, ragged: bool,
               params: int) -> None:
    """``min_runs`` (and ``min_error``, ``min_params_ratio``) of a tool's smallest model into ``row``."""
    why = same_shapes(expected, run(small, args, kwargs), ragged)
    row.update(min_runs=why is None, min_params_ratio=round(n_params(small) / params, 4))
    if why:
        row["min_error"] = why


def equal_in_float64(model: nn.Module, subnet: nn.Module, args: tuple, kwargs: dict) -> str | None:
    """A note when ``subnet`` (osf's maximal subnet, channels sorted by salience) equals ``model`` in float64
    although not in float32: the permuted sums round differently, and a random-weight model can amplify that
    (its float32 and float64 outputs then differ too). None when float64 does not settle it."""
    import copy

    def wide(x: Any) -> Any:
        return x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x
    try:
        args64 = tree_map(wide, args)
        kwargs64 = tree_map(wide, kwargs)
        ref32 = run(model, args, kwargs)
        ref64 = run(copy.deepcopy(model).double(), args64, kwargs64)
        equal, diff, _ = compare(ref64, run(copy.deepcopy(subnet).double(), args64, kwargs64))
        _, drift, _ = compare(ref64, tree_map(wide, ref32))
    except Exception:  # noqa: BLE001 - a model that cannot run in float64 keeps its float32 verdict
        return None
    if not equal:
        return None
    return (f"max subnet equal in float64 (max abs diff {diff:.1e}); in float32 it differs as float32 differs "
            f"from float64 on the original itself (max abs diff {drift:.3g})")


def same_shapes(expected: Any, got: Any, ragged: bool = False) -> str | None:
    """Why ``got``'s tensor leaves do not have ``expected``'s shapes (None when they do). ``ragged``: dim 0
    of a leaf may differ (detections: the number of boxes kept depends on the weights)."""
    a, b = tensors(expected), tensors(got)
    if len(a) != len(b):
        return f"{len(b)} output tensors instead of {len(a)}"
    for i, (x, y) in enumerate(zip(a, b)):
        xs, ys = list(x.shape), list(y.shape)
        if ragged and xs and ys:
            xs, ys = xs[1:], ys[1:]
        if xs != ys or x.dtype != y.dtype:
            return f"output {i}: {y.dtype}{list(y.shape)} instead of {x.dtype}{list(x.shape)}"
    return None


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def width_choices(size: int, step: int) -> int:
    """Number of distinct widths of a dim of ``size`` under the common convention."""
    out = {size}
    for r in RATIOS:
        if r < 1:
            k = max(step, int(round(r * size / step)) * step)
            if k < size:
                out.add(k)
    return len(out)


def layer_pattern(module: str) -> str:
    """``module``'s name with its numeric components replaced by ``#``: the same layer of every repeated
    block has the same pattern (``blocks.3.mlp.fc2`` and ``blocks.4.mlp.fc2`` -> ``blocks.#.mlp.fc2``)."""
    return ".".join("#" if part.isdigit() else part for part in module.split("."))


def is_producer(module: nn.Module | None, dim: int | None = None) -> bool:
    """Does ``module`` *produce* a width (a dense conv / linear / embedding writing it as its output)?
    ``dim`` is the weight dim the width occupies, when known. Depthwise and grouped convs only pass
    their input width through, and norms only scale it, so neither counts."""
    if module is None:
        return False
    if isinstance(module, nn.modules.conv._ConvNd):
        out_dim = 1 if isinstance(module, nn.modules.conv._ConvTransposeNd) else 0
        return module.groups == 1 and dim in (None, out_dim)
    if isinstance(module, nn.Linear):
        return dim in (None, 0)
    if isinstance(module, nn.Embedding):
        return dim in (None, 1)
    if type(module).__name__ == "Conv1D":  # transformers' GPT-2 projection, weight (in, out)
        return dim in (None, 1)
    return False


def classify(kind: str, producers: Iterable[str]) -> str:
    """The reported kind of a width dim: ``heads`` stays heads; a channel dim written by the same layer of
    two or more repeated blocks (e.g. every block's ``mlp.fc2``: tied across blocks by residual adds) is
    ``embedding`` (residual-stream width); anything else is ``channels``. The same rule for every tool."""
    if kind == "heads":
        return "heads"
    patterns: dict[str, set[str]] = {}
    for m in producers:
        patterns.setdefault(layer_pattern(m), set()).add(m)
    return "embedding" if any(len(ms) >= 2 for ms in patterns.values()) else "channels"


def submodule(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def train_step(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """zero grads, forward, a scalar loss over every float output leaf, backward."""
    for p in model.parameters():
        p.grad = None
    out = model(*args, **kwargs)
    loss = sum(x.float().mean() for x in tensors(out) if x.is_floating_point() and x.requires_grad)
    if isinstance(loss, torch.Tensor):
        loss.backward()


def step_ratio(dynamic: Callable[[], None], standalone: Callable[[], None], repeats: int) -> dict:
    """Two step functions run alternately (after one warm-up each); the median over the pairs of the
    per-pair time ratio (adjacent steps share the machine's load), and the median times."""
    dynamic(), standalone()
    a, b = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        dynamic()
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        standalone()
        b.append(time.perf_counter() - t)
    return {"step_dynamic_ms": round(statistics.median(a) * 1e3, 2),
            "step_standalone_ms": round(statistics.median(b) * 1e3, 2),
            "step_ratio": round(statistics.median(x / y for x, y in zip(a, b)), 3)}


def _row(tool: str, version: str) -> dict:
    return {"tool": tool, "version": version, "converted": False, "max_equal": None, "max_abs_diff": None,
            "min_runs": None, "dims": dict.fromkeys(KINDS, 0), "log10_subnets": None, "log10_native": None,
            "notes": []}


def _version(pkg: str) -> str:
    import importlib.metadata
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# ----------------------------------------------------------------------------------------------
# osf

def osf_adapter(model: nn.Module, args: tuple, kwargs: dict, *, ragged: bool = False, train: bool = True,
                time_steps: bool = True, repeats: int = 3) -> dict:
    """osf: ``Supernet(model, args, kwargs)``; its space at default options; ``extract(max())`` /
    ``extract(min())``; a train step through ``set_arch(arch)`` vs ``extract(arch)`` for a random arch."""
    import osf
    row = _row("osf", _version("osf"))
    expected = run(model.eval(), args, kwargs)
    params = n_params(model)
    started = time.perf_counter()
    try:
        sn = osf.Supernet(model, args, kwargs)
    except Exception as e:  # noqa: BLE001 - the tool's failure is the measurement
        row.update(converted=describe(e, "Supernet"), convert_seconds=round(time.perf_counter() - started, 2),
                   traceback=traceback.format_exc()[-1500:])
        return row
    row.update(converted=True, convert_seconds=round(time.perf_counter() - started, 2),
               capture_seconds=sn.ir.info.get("capture_seconds"))
    space = sn.space
    for g in space.groups:
        kind = g.kind
        if kind == "heads" and not any(_is_linear_out(model, t, d) for t, d in g.members):
            kind = "channels"  # a grouped-conv factor (ResNeXt cardinality) or a flattened conv, not heads
        producers = [t.rpartition(".")[0] for t, d in g.members
                     if t.endswith(".weight") and is_producer(submodule(model, t.rpartition(".")[0]), d)]
        if width_choices(g.size, 1 if g.kind == "heads" else MULTIPLE_OF) > 1:
            row["dims"][classify(kind, producers)] += 1
    row["dims"]["depth"] = len(space.units)
    row["log10_subnets"] = round(sum(math.log10(width_choices(g.size, 1 if g.kind == "heads" else MULTIPLE_OF))
                                     for g in space.groups) + len(space.units) * math.log10(2), 2)
    row["log10_native"] = round(space.log10_size(), 2)
    row["unsupported_ops"] = sorted({u.target for u in space.analysis.unsupported})[:10]
    try:
        big = sn.extract(space.max()).eval()
        row["max_equal"], row["max_abs_diff"], why = compare(expected, run(big, args, kwargs))
        if why:
            row["max_error"] = why
            recheck = equal_in_float64(model, big, args, kwargs)
            if recheck:
                row["max_equal"] = True
                row["notes"].append(recheck)
        del big
    except Exception as e:  # noqa: BLE001
        row.update(max_equal=False, max_error=describe(e, "extract(max)"))
    try:
        record_min(row, expected, sn.extract(space.min()).eval(), args, kwargs, ragged, params)
    except Exception as e:  # noqa: BLE001
        row.update(min_runs=False, min_error=describe(e, "extract(min)"))
    if time_steps:
        try:
            arch = space.sample(SEED)
            sub = sn.extract(arch)
            sub.train(train)
            sn.train(train)

            def dynamic() -> None:
                with sn.set_arch(arch):
                    train_step(sn, args, kwargs)

            row.update(step_ratio(dynamic, lambda: train_step(sub, args, kwargs), repeats))
        except Exception as e:  # noqa: BLE001
            row["step_error"] = describe(e, "train step")
    return row


def _is_linear_out(model: nn.Module, tensor: str, dim: int) -> bool:
    """Is (tensor, dim) the output dim of a linear layer's weight (attention heads factor q/k/v outputs;
    a conv's channels flattened into a classifier's input are not heads)?"""
    mod = submodule(model, tensor.rpartition(".")[0])
    return tensor.endswith(".weight") and ((isinstance(mod, nn.Linear) and dim == 0)
                                           or (type(mod).__name__ == "Conv1D" and dim == 1))


# ----------------------------------------------------------------------------------------------
# NVIDIA ModelOpt AutoNAS

def modelopt_adapter(model: nn.Module, args: tuple, kwargs: dict, *, ragged: bool = False, train: bool = True,
                     time_steps: bool = True, repeats: int = 3) -> dict:
    """ModelOpt: ``mtn.convert(model, mode="autonas")`` (default AutoNAS rules); its search space from
    ``SearchSpace(model).named_hparams()``; ``mtn.sample(model, max|min)``; ``mtn.export``. The train step
    of the converted model runs under ``mtn.no_modelopt_patches()`` so AutoNAS does not resample the arch
    on every training forward (its documented behaviour)."""
    import modelopt.torch.nas as mtn
    from modelopt.torch.nas.search_space import SearchSpace
    row = _row("modelopt", _version("nvidia-modelopt"))
    expected = run(model.eval(), args, kwargs)
    params = n_params(model)
    originals = dict(model.named_modules())  # module types before conversion, for the kind rules
    started = time.perf_counter()
    try:
        cm = mtn.convert(model, mode="autonas")
    except Exception as e:  # noqa: BLE001
        row.update(converted=describe(e, "convert"), convert_seconds=round(time.perf_counter() - started, 2),
                   traceback=traceback.format_exc()[-1500:])
        return row
    row.update(converted=True, convert_seconds=round(time.perf_counter() - started, 2))
    try:
        ss = SearchSpace(cm)
        names: dict[int, list[str]] = {}
        for name, hp in ss.named_hparams():
            names.setdefault(id(hp), []).append(name)
        configurable = list(ss.named_hparams(configurable=True))
        log10 = native = 0.0
        for name, hp in configurable:
            native += math.log10(len(hp.choices))
            attr = name.rpartition(".")[2]
            if attr == "depth":
                row["dims"]["depth"] += 1
                log10 += math.log10(len(hp.choices))
                continue
            if attr == "kernel_size":
                row["dims"].setdefault("kernel", 0)
                row["dims"]["kernel"] += 1
                continue
            kind = "heads" if "head" in attr else "channels"
            if width_choices(int(max(hp.choices)), 1 if kind == "heads" else MULTIPLE_OF) < 2:
                continue
            producers = [n.rpartition(".")[0] for n in names[id(hp)]
                         if n.rpartition(".")[2] in ("out_channels", "out_features")
                         and is_producer(originals.get(n.rpartition(".")[0]))]
            row["dims"][classify(kind, producers)] += 1
            log10 += math.log10(width_choices(int(max(hp.choices)), 1 if kind == "heads" else MULTIPLE_OF))
        row.update(log10_subnets=round(log10, 2), log10_native=round(native, 2), hparams=len(configurable))
        if not configurable:
            row["notes"].append("no configurable hparams")
    except Exception as e:  # noqa: BLE001
        row["space_error"] = describe(e, "search space")
    try:
        mtn.sample(cm, max)
        cm.eval()
        row["max_equal"], row["max_abs_diff"], why = compare(expected, run(cm, args, kwargs))
        if why:
            row["max_error"] = why
    except Exception as e:  # noqa: BLE001
        row.update(max_equal=False, max_error=describe(e, "sample(max)"))
    if time_steps:
        try:
            mtn.sample(cm, random.Random(SEED).choice)
            sub = mtn.export(copy.deepcopy(cm))
            with mtn.no_modelopt_patches():
                cm.train(train)
                sub.train(train)
                row.update(step_ratio(lambda: train_step(cm, args, kwargs), lambda: train_step(sub, args, kwargs),
                                      repeats))
                cm.eval()
            del sub
        except Exception as e:  # noqa: BLE001
            row["step_error"] = describe(e, "train step")
    try:
        mtn.sample(cm, min)
        cm.eval()
        record_min(row, expected, mtn.export(cm).eval(), args, kwargs, ragged, params)
    except Exception as e:  # noqa: BLE001
        row.update(min_runs=False, min_error=describe(e, "sample(min)/export"))
    return row


# ----------------------------------------------------------------------------------------------
# Torch-Pruning

# What a Torch-Pruning user hand-supplies for attention (its README / examples): ``num_heads`` for the
# q/k/v projections of every attention module, and after ``pruner.step()`` the module's head attributes
# re-set from the pruned widths. These are the names this adapter knows; a model whose attention uses
# other names gets nothing supplied and is measured as such.
_HEAD_COUNT = ("num_heads", "num_attention_heads", "n_heads", "n_head")
_HEAD_SIZE = ("head_dim", "attention_head_size", "head_size", "key_value_proj_dim")
_ALL_HEADS = ("attn_dim", "all_head_size", "inner_dim")
_QKV = (("qkv",), ("query", "key", "value"), ("q_lin", "k_lin", "v_lin"), ("q_proj", "k_proj", "v_proj"),
        ("q", "k", "v"))


def _attention_modules(model: nn.Module) -> list[tuple[nn.Module, str, list[nn.Linear]]]:
    """(module, head-count attribute, q/k/v linears) of every attention module with known names."""
    found = []
    for mod in model.modules():
        attr = next((a for a in _HEAD_COUNT if isinstance(getattr(mod, a, None), int)), None)
        if attr is None:
            continue
        for names in _QKV:
            lins = [getattr(mod, n, None) for n in names]
            if all(isinstance(x, nn.Linear) for x in lins):
                found.append((mod, attr, lins))
                break
    return found


def output_layers(model: nn.Module, args: tuple, kwargs: dict) -> list[nn.Module]:
    """The parametrised modules that write the model's outputs (the final classifier, a segmentation or
    detection head, a final norm), found generically: walk the autograd graph back from every float
    output until the first op with a parameter input. Torch-Pruning's docs ask users to list these in
    ``ignored_layers`` so the output width is kept."""
    owner = {id(p): mod for mod in model.modules() for p in mod.parameters(recurse=False)}
    with torch.enable_grad():
        out = model(*args, **kwargs)
    found: dict[int, nn.Module] = {}
    seen: set = set()
    stack = [x.grad_fn for x in tensors(out) if x.is_floating_point() and x.grad_fn is not None]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        nexts = [f for f, _ in fn.next_functions if f is not None]
        leaves = [owner[id(f.variable)] for f in _param_inputs(fn) if id(f.variable) in owner]
        if leaves:
            for m in leaves:
                found[id(m)] = m
            continue
        stack.extend(nexts)
    return list(found.values())


def _param_inputs(fn) -> list:
    """AccumulateGrad nodes feeding ``fn`` directly or through a view / transpose of the weight."""
    out = []
    for f, _ in fn.next_functions:
        while f is not None and not hasattr(f, "variable") and type(f).__name__.startswith(
                ("TBackward", "ViewBackward", "PermuteBackward", "TransposeBackward", "ExpandBackward",
                 "UnsqueezeBackward", "ReshapeAlias", "UnsafeViewBackward", "ToCopyBackward")) \
                and len(f.next_functions) == 1:
            f = f.next_functions[0][0]
        if f is not None and hasattr(f, "variable"):
            out.append(f)
    return out


def torch_pruning_adapter(model: nn.Module, args: tuple, kwargs: dict, *, ragged: bool = False,
                          pruning_ratio: float = 0.5, **_: Any) -> dict:
    """Torch-Pruning's documented recipe: ``MetaPruner(model, example_inputs,
    importance=MagnitudeImportance(p=2), pruning_ratio=0.5, ignored_layers=<output layers>,
    num_heads=<hand-supplied>)``, ``pruner.step()``, then the hand patch of the attention attributes.
    Its groups (``pruner.DG.get_all_groups``) are its elastic channel dims; it has no depth."""
    import torch_pruning as tp
    row = _row("torch-pruning", _version("torch-pruning"))
    model.eval()
    expected = run(model, args, kwargs)
    params = n_params(model)
    ignored = output_layers(model, args, kwargs)
    attention = _attention_modules(model)
    num_heads = {lin: getattr(mod, attr) for mod, attr, lins in attention for lin in lins}
    row["hand_supplied"] = {"ignored_layers": len(ignored), "attention_modules": len(attention)}
    started = time.perf_counter()
    try:
        pruner = tp.pruner.MetaPruner(
            model, (args, kwargs), importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=pruning_ratio,
            ignored_layers=ignored, num_heads=num_heads,
            forward_fn=lambda m, inputs: m(*inputs[0], **inputs[1]))
        groups = list(pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                               root_module_types=pruner.root_module_types))
    except Exception as e:  # noqa: BLE001
        row.update(converted=describe(e, "MetaPruner"), convert_seconds=round(time.perf_counter() - started, 2),
                   traceback=traceback.format_exc()[-1500:])
        return row
    row.update(converted=True, convert_seconds=round(time.perf_counter() - started, 2))
    log10 = 0.0
    for group in groups:
        if width_choices(len(group[0].idxs), MULTIPLE_OF) < 2:
            continue  # too narrow to offer a second width under the common convention
        producers = [n for n, m in _out_modules(group, pruner.DG) if is_producer(m)]
        row["dims"][classify("channels", producers)] += 1
        log10 += math.log10(width_choices(len(group[0].idxs), MULTIPLE_OF))
    row.update(log10_subnets=round(log10, 2), groups=len(groups))
    row["notes"].append("max subnet: n/a (one-shot pruning)")
    if not groups:
        row["notes"].append("no prunable groups: nothing to prune")
    started = time.perf_counter()
    try:
        pruner.step()
        for mod, attr, lins in attention:  # the hand patch of TP's examples
            heads = pruner.num_heads.get(lins[0], getattr(mod, attr))
            width = lins[0].out_features // (3 if len(lins) == 1 else 1)
            setattr(mod, attr, heads)
            for a in _HEAD_SIZE:
                if isinstance(getattr(mod, a, None), int):
                    setattr(mod, a, width // heads)
            for a in _ALL_HEADS:
                if isinstance(getattr(mod, a, None), int):
                    setattr(mod, a, width)
        row["prune_seconds"] = round(time.perf_counter() - started, 2)
        record_min(row, expected, model.eval(), args, kwargs, ragged, params)
    except Exception as e:  # noqa: BLE001
        row.update(min_runs=False, min_error=describe(e, "prune/run"))
    return row


def _out_modules(group, dg) -> list[tuple[str, nn.Module]]:
    """(name, module) of the group's members whose output channels it prunes."""
    names = {id(m): n for n, m in dg.model.named_modules()} if hasattr(dg, "model") else {}
    out = []
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, nn.Module) and dg.is_out_channel_pruning_fn(dep.handler):
            out.append((names.get(id(m), dep.target.name.split(" ")[0]), m))
    return out


ADAPTERS: dict[str, Callable[..., dict]] = {"osf": osf_adapter, "modelopt": modelopt_adapter,
                                            "torch-pruning": torch_pruning_adapter}
