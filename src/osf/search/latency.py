"""Latency of subnets: measured on the extracted model (``LatencyModel``), or predicted from a table of
per-op timings (``LatencyTable``), with the predictor's error against measurement reported."""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.utils._pytree as pytree

from ..ir.errors import FormatError
from ..ir.graph import BUFFER, CONST, INPUT, IR, PARAM, Graph
from ..ir.inputs import synthetic_inputs
from ..ir.ops import STATS_OPTIONAL, TRAINING_FLAG_ARG, TRAINING_ONLY_PROB
from ..ir.serial import decode_arg, node_refs, resolve_target
from ..space.arch import Arch
from ..space.subnet import subnet_ir
from ..supernet.supernet import Supernet
from .archs import canonical
from .files import read_json, write_json_atomic



class LatencyModel:
    """``measure(arch) -> seconds``: the median of ``runs`` timed forwards (after ``warmup`` untimed ones)
    of ``supernet.extract(arch).eval()`` on ``device`` without gradients, on ``batch_size`` copies of the
    traced input shapes (floats ~ N(0, 1), integers 0, booleans True: override with ``inputs=(args,
    kwargs)``). ``threads`` sets torch's CPU threads while timing (then restores them). Results are
    cached per arch in memory and, with ``cache=path``, in a JSON file (written atomically) that later
    runs reuse; the file keys entries by the model's graph and these settings, so one file can serve
    several settings."""

    def __init__(self, supernet: Supernet, *, device: str | torch.device = "cpu", threads: int | None = None,
                 batch_size: int = 1, warmup: int = 3, runs: int = 10, cache: str | os.PathLike | None = None,
                 inputs: tuple[tuple, dict] | None = None):
        if runs < 1 or warmup < 0 or batch_size < 1:
            raise ValueError(f"LatencyModel needs runs >= 1, warmup >= 0 and batch_size >= 1; got runs={runs}, "
                             f"warmup={warmup}, batch_size={batch_size}")
        self.supernet = supernet
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("LatencyModel(device='cuda'): CUDA is not available here; use device='cpu'")
        self.threads, self.batch_size, self.warmup, self.runs = threads, batch_size, warmup, runs
        self._inputs = inputs
        self.settings = {"graph": graph_fingerprint(supernet.ir), "device": device_name(self.device),
                         "threads": threads or torch.get_num_threads(), "batch_size": batch_size,
                         "warmup": warmup, "runs": runs, "inputs": "user" if inputs is not None else "synthetic",
                         "torch": torch.__version__}
        self._file = _CacheFile(cache, "osf-latency", self.settings)
        self._memory: dict[str, float] = dict(self._file.entries)

    def example_inputs(self) -> tuple[tuple, dict]:
        """The ``(args, kwargs)`` that are timed, on the device."""
        if self._inputs is not None:
            args, kwargs = self._inputs
        else:
            args, kwargs = synthetic_inputs(self.supernet.ir, self.batch_size)
        move = lambda t: t.to(self.device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        return pytree.tree_map(move, tuple(args)), pytree.tree_map(move, dict(kwargs))

    def measure(self, arch: Arch) -> float:
        """Seconds per forward of ``arch`` (cached)."""
        key = canonical(self.supernet.space, arch).key()
        if key in self._memory:
            return self._memory[key]
        model = self.supernet.extract(arch).eval().to(self.device)
        args, kwargs = self.example_inputs()
        with self.threads_set():
            seconds = time_forward(model, args, kwargs, warmup=self.warmup, runs=self.runs, device=self.device)
        self._memory[key] = seconds
        self._file.add(key, seconds)
        return seconds

    __call__ = measure

    @contextmanager
    def threads_set(self) -> Iterator[None]:
        """Run the block with ``threads`` CPU threads (if set), restoring the previous number after."""
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __repr__(self) -> str:
        return (f"LatencyModel({self.settings['device']}, batch {self.batch_size}, {self.runs} runs, "
                f"{len(self._memory)} cached)")


class LatencyTable:
    """Latency predicted as the sum of per-op times. Each op of a subnet's inference graph is timed at its
    shapes and arguments and cached by (op, input shapes and dtypes, arguments); ``predict(arch)`` adds up
    the table and only runs a subnet when it holds ops the table has not seen (``warmup`` + ``runs`` passes
    on the settings of ``latency``, each op timed in place with its real inputs; the median per op is
    kept). ``error()`` compares predictions with ``latency.measure``: the sum leaves out the forward's own
    Python overhead and the overlap of consecutive ops, so check it before relying on it."""

    def __init__(self, latency: LatencyModel, *, cache: str | os.PathLike | None = None):
        self.latency = latency
        self._file = _CacheFile(cache, "osf-latency-table", {k: v for k, v in latency.settings.items() if k != "graph"})
        self.table: dict[str, float] = dict(self._file.entries)

    def predict(self, arch: Arch) -> float:
        """Predicted seconds per forward of ``arch``."""
        sub = subnet_ir(self.latency.supernet.space, arch, with_tensors=False)
        graph = _inference_graph(sub)
        producers = graph.producers()
        keys = [_op_key(op, producers) for op in graph.ops if not op.mode_gated]
        if any(k not in self.table for k in keys):
            self._time_missing(arch)
        return sum(self.table[k] for k in keys)

    __call__ = predict

    def error(self, archs: int | list[Arch] = 10, *, seed: int = 0) -> dict[str, Any]:
        """Mean and max absolute percentage error of ``predict`` against ``latency.measure`` over ``archs``
        (a list, or that many samples ``space.sample(seed + i)``), with every pair in ``rows``."""
        space = self.latency.supernet.space
        if isinstance(archs, int):
            archs = [space.sample(seed + i) for i in range(archs)]
        rows = []
        for arch in archs:
            predicted, measured = self.predict(arch), self.latency.measure(arch)
            rows.append({"arch": arch.to_json(), "predicted_s": predicted, "measured_s": measured,
                         "ape": abs(predicted - measured) / measured})
        if not rows:
            raise ValueError("LatencyTable.error needs at least one arch")
        return {"mape": statistics.fmean(r["ape"] for r in rows), "max_ape": max(r["ape"] for r in rows),
                "archs": len(rows), "rows": rows}

    def _time_missing(self, arch: Arch) -> None:
        """Run the subnet op by op (``warmup`` + ``runs`` passes, each op fed its real inputs, so caches and
        memory behave as in a forward) and record the median time of every op not yet in the table."""
        lat = self.latency
        sub = lat.supernet.subnet_ir(arch)
        graph = _inference_graph(sub)
        producers = graph.producers()
        ops = [op for op in graph.ops if not op.mode_gated]
        keys = [_op_key(op, producers) for op in ops]
        plan = []
        for op in ops:
            args, kwargs = _eval_args(op)
            plan.append((op, resolve_target(op.target), _on_device(args, lat.device),
                         {k: _on_device(v, lat.device) for k, v in kwargs.items()}))
        last_use = {ref: i for i, op in enumerate(ops) for ref in op.inputs}
        keep = set(node_refs(graph.outputs))
        samples: dict[str, list[float]] = {k: [] for k in keys if k not in self.table}
        inputs = lat.example_inputs()
        with lat.threads_set(), torch.no_grad():
            for run in range(lat.warmup + lat.runs):
                env = _bind_inputs(sub, graph, *inputs, lat.device)
                for i, (op, fn, args, kwargs) in enumerate(plan):
                    call_args = decode_arg(args, env)
                    call_kwargs = {k: decode_arg(v, env) for k, v in kwargs.items()}
                    lat._sync()
                    start = time.perf_counter()
                    try:
                        env[op.name] = fn(*call_args, **call_kwargs)
                    except Exception as e:
                        raise RuntimeError(f"LatencyTable: op {op.name} ({op.target} in '{op.owner or '<root>'}') "
                                           f"failed when run alone: {e}; use LatencyModel.measure for this "
                                           "model") from e
                    lat._sync()
                    if run >= lat.warmup and keys[i] in samples:
                        samples[keys[i]].append(time.perf_counter() - start)
                    for ref in dict.fromkeys(op.inputs):
                        if last_use.get(ref) == i and ref not in keep:
                            env.pop(ref, None)
        added = {k: statistics.median(v) for k, v in samples.items()}
        self.table.update(added)
        self._file.add_many(added)

    def __repr__(self) -> str:
        return f"LatencyTable({len(self.table)} op timings, {self.latency!r})"


# ----- inputs -----

def time_forward(model: torch.nn.Module, args: tuple, kwargs: dict, *, warmup: int = 3, runs: int = 10,
                 device: torch.device = torch.device("cpu")) -> float:
    """Median seconds of ``runs`` forwards of ``model`` without gradients, after ``warmup`` untimed ones
    (CUDA is synchronised around each run)."""
    return time_forwards([model], args, kwargs, warmup=warmup, runs=runs, device=device)[0]


def time_forwards(models: list[torch.nn.Module], args: tuple, kwargs: dict, *, warmup: int = 3, runs: int = 10,
                  device: torch.device = torch.device("cpu")) -> list[float]:
    """``time_forward`` of several models on the same inputs, their runs interleaved (one forward of each
    per round): a slower or faster spell of the machine then touches every model alike, so their ratios
    (speed-ups) hold even when the absolute times drift."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    times: list[list[float]] = [[] for _ in models]
    with torch.no_grad():
        for _ in range(warmup):
            for model in models:
                model(*args, **kwargs)
        for _ in range(runs):
            for model, seconds in zip(models, times):
                sync()
                start = time.perf_counter()
                model(*args, **kwargs)
                sync()
                seconds.append(time.perf_counter() - start)
    return [statistics.median(seconds) for seconds in times]


def _bind_inputs(sub: IR, graph: Graph, args: tuple, kwargs: dict, device: torch.device) -> dict[str, Any]:
    """Values of the graph's placeholders: user inputs in order, the subnet's own tensors on ``device``."""
    leaves = pytree.tree_leaves((args, kwargs))
    values = [leaf for leaf, want in zip(leaves, sub.info["user_leaves"]) if "placeholder" in want]
    env: dict[str, Any] = {}
    inputs = iter(values)
    for p in graph.placeholders:
        if p.kind == INPUT:
            env[p.name] = next(inputs)
        elif p.kind in (PARAM, BUFFER):
            env[p.name] = sub.tensors[sub.aliases.get(p.target, p.target)].detach().to(device)
        elif p.kind == CONST:
            env[p.name] = sub.tensors[p.target].to(device)
    return env


# ----- per-op timing -----

def _inference_graph(sub: IR) -> Graph:
    return sub.eval_graph if sub.eval_graph is not None else sub.graph


def _eval_args(op) -> tuple[list, dict]:
    """The op's arguments in eval mode: training flags off, training-only dropout probabilities 0 (what the
    generated forward passes when the owner module is in eval mode)."""
    args, kwargs = list(op.args), dict(op.kwargs)
    flag_at = TRAINING_FLAG_ARG.get(op.target)
    if flag_at is not None and len(args) > flag_at and not (op.target in STATS_OPTIONAL and args[3] is None):
        args[flag_at] = False
    prob = TRAINING_ONLY_PROB.get(op.target)
    if prob is not None:
        idx, name = prob
        if len(args) > idx and args[idx]:
            args[idx] = 0.0
        elif kwargs.get(name):
            kwargs[name] = 0.0
    return args, kwargs


def _op_key(op, producers: dict) -> str:
    """What an op's time depends on: its target, eval-mode arguments, and its inputs' shapes and dtypes."""

    def describe(value: Any) -> Any:
        if isinstance(value, list):
            return [describe(v) for v in value]
        if isinstance(value, dict):
            if set(value) == {"node"}:
                meta = producers[value["node"]].meta
                return {"value": {k: v for k, v in meta.items() if k != "hint"} if isinstance(meta, dict) else meta}
            return {k: describe(v) for k, v in value.items()}
        return value

    args, kwargs = _eval_args(op)
    return json.dumps([op.target, describe(args), describe(kwargs)], sort_keys=True)


def _on_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, list):
        return [_on_device(v, device) for v in value]
    if isinstance(value, dict):
        if set(value) == {"device"}:
            return {"device": str(device)}
        return {k: _on_device(v, device) for k, v in value.items()}
    return value


# ----- identities and the cache file -----

def graph_fingerprint(ir: IR) -> str:
    """Hash of the IR's graphs (ops, arguments, shapes): equal for equal architectures, whatever the weights."""
    data = {"graph": ir.graph.to_dict(), "eval": ir.eval_graph.to_dict() if ir.eval_graph is not None else None}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def device_name(device: torch.device) -> str:
    """What a timing depends on: the GPU's name, or the CPU's architecture, model and core count."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.machine()}:{platform.processor() or 'unknown'}:{os.cpu_count()} cores"


class _CacheFile:
    """A JSON file of ``{settings hash: {"settings": …, "entries": {key: seconds}}}``, rewritten atomically
    after each addition (no file when ``path`` is None)."""

    def __init__(self, path: str | os.PathLike | None, fmt: str, settings: dict):
        self.path = Path(path) if path is not None else None
        self.fmt, self.settings = fmt, settings
        self.id = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.entries: dict[str, float] = {}
        if self.path is not None and self.path.exists():
            data = read_json(self.path)
            if not isinstance(data, dict) or data.get("format") != fmt or not isinstance(data.get("sections"), dict):
                raise FormatError(f"{self.path} is not an {fmt} cache; pass another cache path")
            section = data["sections"].get(self.id) or {"entries": {}}
            try:
                self.entries = {k: float(v) for k, v in section["entries"].items() if math.isfinite(float(v))}
            except (KeyError, TypeError, ValueError, AttributeError):
                raise FormatError(f"{self.path}: the {fmt} cache is damaged; delete it or pass another "
                                  "cache path") from None

    def add(self, key: str, seconds: float) -> None:
        self.add_many({key: seconds})

    def add_many(self, new: dict[str, float]) -> None:
        if self.path is None or not new:
            return
        data = read_json(self.path) if self.path.exists() else {"format": self.fmt, "version": 1, "sections": {}}
        section = data["sections"].setdefault(self.id, {"settings": self.settings, "entries": {}})
        section["entries"].update(new)
        self.entries.update(new)
        write_json_atomic(self.path, data, overwrite=True)
