"""``osf.export``: write a subnet as a directory of plain-PyTorch artifacts (``.pt2``, ONNX, safetensors,
arch, model card), atomically."""
from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import operator
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
import torch.utils._pytree as pytree
from safetensors.torch import save_file
from torch.utils._pytree import tree_leaves, tree_map

from ..ir.errors import OsfError, user_stacklevel
from ..ir.graph import INPUT, IR
from ..ir.io import staged_directory
from ..ir.serial import node_refs
from ..progress import progress_bar
from ..space.arch import Arch
from ..space.subnet import subnet_structure
from ..supernet.batches import to_device
from ..supernet.supernet import Supernet
from .card import make_card, markdown
from .inputs import dynamic_shapes, example_inputs, input_names
from .onnx_functions import onnx_functions

FORMATS = ("pt2", "onnx")
log = logging.getLogger(__name__)


class ExportError(OsfError):
    """A subnet that could not be written in a requested format; the message says what to do."""


def _extract_calibrated(supernet: Supernet, arch: Arch, calib_loader: Iterable | None, calib_batches: int,
                        seed: int) -> torch.nn.Module:
    """``supernet.extract(arch).eval()`` with BatchNorm statistics fitted to ``arch`` where ``calib_loader``
    is given (the supernet's buffers restored after), or a warning where they may fit another subnet."""
    norms = supernet.batch_norms(arch)
    if not norms or (calib_loader is None and supernet.calibrated(arch)):
        return supernet.extract(arch).eval()
    if calib_loader is None:
        warnings.warn("the exported subnet keeps the supernet's current BatchNorm statistics, which are shared by "
                      "every subnet and fit none (its accuracy can be far below the front's); pass calib_loader= "
                      "(training batches) to osf.export, or call supernet.recalibrate(arch, loader) just before",
                      stacklevel=user_stacklevel())
        return supernet.extract(arch).eval()
    tensors = supernet.tensors()  # every buffer comes back (running statistics, num_batches_tracked)
    saved = {n: t.detach().clone() for n, t in tensors.items() if not isinstance(t, torch.nn.Parameter)}
    try:
        supernet.recalibrate(arch, calib_loader, calib_batches, seed=seed)
        return supernet.extract(arch).eval()
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                tensors[name].copy_(value)


def export(supernet: Supernet, arch: Arch, path: str | os.PathLike, *, formats: tuple[str, ...] = FORMATS,
           metrics: dict[str, Any] | None = None, overwrite: bool = False, example: Any = None,
           source: str | None = None, dtype: torch.dtype | None = None, progress: bool = False,
           calib_loader: Iterable | None = None, calib_batches: int = 20, seed: int = 0) -> Path:
    """Write ``supernet.extract(arch).eval()`` to the directory ``path``:

    - ``model.pt2``: ``torch.export`` program (``torch.export.load(...).module()`` runs it without osf);
      the dims the IR keeps symbolic (batch, sequence) stay dynamic;
    - ``model.onnx``: when ``onnx`` and ``onnxscript`` are installed (the ``onnx`` extra); else skipped
      with a logged note;
    - ``weights.safetensors`` (the subnet's ``state_dict``), ``arch.json``;
    - ``card.json`` and ``model_card.md``: params, FLOPs, the given ``metrics`` (e.g. accuracy, latency),
      the model class and ``source`` (e.g. the model spec), the arch, versions and how to load it.

    ``example``: inputs to trace with (a tensor or tuple of positional inputs, or a dict of keyword
    inputs); by default made up from the traced shapes. ``dtype``: a floating-point dtype to write the
    subnet in (``torch.float16``, ``torch.bfloat16``): its floating-point tensors are cast, and so are the
    example's floating-point inputs (the programs then take inputs of that dtype; the card says so).
    ``calib_loader``: training batches to re-estimate the BatchNorm statistics of ``arch`` from
    (``calib_batches`` of them drawn with ``seed``, as ``osf.search`` does, so a point of its front is written
    with the statistics its accuracy was measured with); the supernet's own are restored afterwards. Without
    it a BatchNorm subnet keeps the supernet's current statistics, with a warning unless
    ``supernet.recalibrate(arch, ...)`` set them and nothing changed them since.
    Everything is written to a temporary directory beside ``path`` and renamed into place; an existing
    ``path`` raises ``FileExistsError`` unless ``overwrite=True``, which keeps the old one until the new one
    is complete. Returns ``path``."""
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown export format(s) {unknown}; choose from {list(FORMATS)}")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"export dtype must be a floating-point torch.dtype (e.g. torch.float16), got {dtype!r}")
    path = Path(path)
    _refuse_existing(path, overwrite)
    supernet.space.validate(arch)
    try:
        json.dumps(metrics or {})
    except TypeError as e:
        raise ValueError(f"export metrics must be JSON numbers or strings (use float(x) for tensors): {e}") from None
    from .. import __version__  # the package is fully imported by the time export runs
    skipped: dict[str, str] = {}
    as_tuples: list[str] = []
    with staged_directory(path, overwrite) as tmp, progress_bar(total=len(formats) + 2, desc="export", unit="step",
                                                         disable=not progress) as bar:
        bar.set_postfix_str("extract")
        model = _extract_calibrated(supernet, arch, calib_loader, calib_batches, seed)
        args, kwargs = to_device(example_inputs(supernet.ir, example), supernet.device())
        if dtype is not None:
            model = model.to(dtype)
            args, kwargs = tree_map(lambda v: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point()
                                    else v, (args, kwargs))
        bar.update()
        dynamic = dynamic_shapes(supernet.ir)
        for fmt in formats:
            bar.set_postfix_str(fmt)
            if fmt == "pt2":
                as_tuples = _write_pt2(model, args, kwargs, dynamic, tmp / "model.pt2")
            else:
                _write_onnx(model, args, kwargs, dynamic, input_names(supernet.ir), tmp / "model.onnx", skipped,
                            _returns_an_input(subnet_structure(supernet.space, arch)))
            bar.update()
        bar.set_postfix_str("weights, card")
        _write_weights(model, tmp / "weights.safetensors")
        (tmp / "arch.json").write_text(json.dumps(arch.to_json(), indent=1) + "\n")
        files = sorted(p.name for p in tmp.iterdir()) + ["card.json", "model_card.md"]
        card = make_card(supernet, arch, files=files, skipped=skipped, metrics=metrics, source=source,
                         osf_version=__version__, dtype=dtype, pt2_tuples=as_tuples)
        (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n")
        (tmp / "model_card.md").write_text(markdown(card))
        bar.update()
    return path


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"'{path}' already exists; pass overwrite=True (osf export --force) to replace it, "
                              "or choose another path")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings and onnxscript's optimizer log (it reports constant folds it skips)."""
    onnxscript_log = logging.getLogger("onnxscript")
    level = onnxscript_log.level
    onnxscript_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        onnxscript_log.setLevel(level)


def _write_pt2(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: dict | None, file: Path) -> list[str]:
    """Export, save and load back (a program torch.export.load refuses is no file to hand anyone). Returns
    the namedtuple classes whose outputs the program returns as plain tuples (``_namedtuples_as_tuples``)."""
    converted: set[str] = set()
    try:
        with _quiet(), _namedtuples_as_tuples(model, converted):
            program = torch.export.export(model, args, kwargs, dynamic_shapes=dynamic, strict=False)
            torch.export.save(program, file)
            torch.export.load(file)
    except Exception as e:  # noqa: BLE001 - the exporter raises many types; say which format failed
        raise ExportError(f"torch.export failed on this subnet ({_reason(e)}); export without it: "
                          "formats=('onnx',) (osf export --format onnx)") from e
    return sorted(converted)


@contextlib.contextmanager
def _namedtuples_as_tuples(model: torch.nn.Module, converted: set[str]) -> Iterator[None]:
    """``model`` returning plain tuples in place of the namedtuples a ``.pt2`` file cannot name (a class
    torch's pytree has no serialized name for: ``torch.return_types``, and any defined outside torch unless
    registered in the process that loads the file too); their class paths are added to ``converted``. The
    forward is replaced on the instance, so the program's parameter names stay the model's own."""
    forward = model.forward

    @_wrapping(forward)
    def plain(*args: Any, **kwargs: Any) -> Any:
        return _plain_tuples(forward(*args, **kwargs), converted)
    model.forward = plain
    try:
        yield
    finally:
        del model.forward


def _wrapping(forward: Any) -> Any:
    """``functools.wraps(forward)`` with ``forward``'s own signature: a generated forward carries a
    ``__signature__`` with ``self``, which ``wraps`` copies from the function behind the bound method."""
    def decorate(fn: Any) -> Any:
        fn = functools.wraps(forward)(fn)
        fn.__signature__ = inspect.signature(forward)
        return fn
    return decorate


def _plain_tuples(value: Any, converted: set[str]) -> Any:
    """``value`` with each namedtuple (or ``torch.return_types`` struct) of a class without a serialized
    name made a tuple (inside plain tuples, lists and dicts)."""
    if isinstance(value, tuple) and type(value) is not tuple:
        items = tuple(_plain_tuples(v, converted) for v in value)
        node = pytree.SUPPORTED_SERIALIZED_TYPES.get(type(value))
        if node is not None and node.serialized_type_name != pytree.NO_SERIALIZED_TYPE_NAME_FOUND:
            return type(value)(*items)
        converted.add(f"{type(value).__module__}.{type(value).__qualname__}")
        return items
    if type(value) in (tuple, list):
        return type(value)(_plain_tuples(v, converted) for v in value)
    if type(value) is dict:
        return {k: _plain_tuples(v, converted) for k, v in value.items()}
    return value


def _write_onnx(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: dict | None, names: list[str],
                file: Path, skipped: dict[str, str], gives_back_input: bool) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        skipped["onnx"] = f"{e.name} is not installed: pip install 'osf[onnx]'"
        log.warning("osf.export: ONNX skipped (%s)", skipped["onnx"])
        return
    if gives_back_input:  # an output named as an input: an invalid graph
        model = _own_outputs(model)
    if args and isinstance(args[-1], dict):  # torch.onnx takes a trailing dict of args for keywords
        args = (*args, {})
    def write(source: torch.nn.Module, optimize: bool, shapes: dict | None) -> None:
        with _quiet():
            program = torch.onnx.export(source, args, kwargs=kwargs, dynamic_shapes=shapes, input_names=names,
                                        dynamo=True, verbose=False, optimize=optimize,
                                        custom_translation_table=onnx_functions())
        program.save(str(file))

    def attempt(source: torch.nn.Module, shapes: dict | None) -> None:
        try:
            write(source, True, shapes)
        except Exception as e:  # noqa: BLE001 - only an optimizer failure is retried
            if not _optimizer_failed(e):
                raise
            # onnxscript's graph optimizer fails on some symbolic sizes (RAFT's (B+B1+1)//2, the original too)
            write(source, False, shapes)
            why = f"onnxscript's optimizer failed ({_reason(e)}); model.onnx is unoptimised"
            skipped["ONNX graph optimisation"] = why
            log.warning("osf.export: %s", why)

    # the model as it is; with the values it computes from its weights alone folded into constants (ops
    # ONNX has no function for: an orthogonal parametrisation's matrix_exp); at the example's sizes (ONNX
    # cannot express some dynamic sizes: a conv's groups = batch, CondConv)
    plans = [(False, dynamic), (True, dynamic)] + ([(False, None), (True, None)] if dynamic is not None else [])
    folded: torch.nn.Module | None | bool = False  # made when first needed; None: nothing to fold
    failure: Exception | None = None
    for fold, shapes in plans:
        if fold and folded is False:
            folded = _weights_folded(model, args, kwargs, dynamic)
        if fold and folded is None:
            continue
        try:
            attempt(folded if fold else model, shapes)
        except Exception as e:  # noqa: BLE001 - the first failure is the one reported
            failure = failure or e
            continue
        if fold:
            skipped["ONNX weight computations"] = (
                f"the ONNX exporter failed on the model as it is ({_reason(failure)}); model.onnx holds what "
                "forward computes from the weights alone as constants")
            log.warning("osf.export: %s", skipped["ONNX weight computations"])
        if shapes is None and dynamic is not None:
            sizes = "; ".join(f"{name} {list(t.shape)}" for name, t in zip(names, _tensor_leaves(args, kwargs)))
            skipped["ONNX dynamic shapes"] = (
                f"the ONNX exporter failed with dynamic dims ({_reason(failure)}); model.onnx takes the example's "
                f"sizes only ({sizes}), the .pt2 program any")
            log.warning("osf.export: %s", skipped["ONNX dynamic shapes"])
        return
    raise ExportError(f"the ONNX exporter failed on this subnet ({_reason(failure)}); export without it: "
                      "formats=('pt2',) (osf export --format pt2)") from failure


def _weights_folded(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: dict | None) -> Any:
    """``model``'s exported graph with each value its forward computes from weights, buffers and constants
    alone (no input; no random or in-place op) computed once and held as a buffer, or None when there is
    none or the model cannot be exported."""
    try:
        with _quiet():
            module = torch.export.export(model, args, kwargs, dynamic_shapes=dynamic, strict=False).module()
    except Exception:  # noqa: BLE001 - nothing to fold then; the ONNX exporter's failure is reported
        return None
    graph, values = module.graph, {}
    for node in graph.nodes:
        if node.op == "get_attr":
            values[node] = functools.reduce(getattr, node.target.split("."), module)
            continue
        inputs = node.all_input_nodes
        if node.op == "call_function" and inputs and all(n in values for n in inputs) and _pure(node.target):
            call_args, call_kwargs = torch.fx.node.map_arg((node.args, node.kwargs), values.__getitem__)
            with torch.no_grad():
                values[node] = node.target(*call_args, **call_kwargs)
    frontier = [n for n in values if n.op == "call_function" and isinstance(values[n], torch.Tensor)
                and any(user not in values for user in n.users)]
    for i, node in enumerate(frontier):
        module.register_buffer(f"_osf_folded_{i}", values[node].detach().clone())
        with graph.inserting_before(node):
            node.replace_all_uses_with(graph.get_attr(f"_osf_folded_{i}"))
    if not frontier:
        return None
    graph.eliminate_dead_code()
    module.recompile()
    return module


def _pure(target: Any) -> bool:
    """An ATen op that writes no argument and draws no random number, or taking an item of a result."""
    if target is operator.getitem:
        return True
    return (isinstance(target, torch._ops.OpOverload) and not target._schema.is_mutable
            and torch.Tag.nondeterministic_seeded not in target.tags)


def _tensor_leaves(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    return [v for v in tree_leaves((args, kwargs)) if isinstance(v, torch.Tensor)]


def _optimizer_failed(error: BaseException) -> bool:
    """Whether ``error`` came from a pass of the ONNX graph optimizer (``onnx_ir.passes.PassError``)."""
    while error is not None:
        if type(error).__name__ == "PassError" and type(error).__module__.startswith("onnx_ir"):
            return True
        error = error.__cause__
    return False


_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # terminal colour codes in torch.onnx's messages
_CLASS = re.compile(r"<class '(?:\w+\.)*(\w+)'>")  # how torch.onnx's summary names an exception type


def _reason(error: BaseException) -> str:
    """What made an exporter fail: its summary line, or the innermost cause's first line (torch.onnx's own
    first line is a generic header in terminal colours)."""
    def lines(e: BaseException) -> list[str]:
        return [line.strip() for line in _COLOURS.sub("", str(e)).splitlines() if line.strip()]
    text = lines(error)
    if "## Exception summary" in text and text.index("## Exception summary") + 1 < len(text):
        return _CLASS.sub(r"\1", text[text.index("## Exception summary") + 1])[:300]
    while error.__cause__ is not None:
        error = error.__cause__
    first = lines(error)
    return f"{type(error).__name__}: {first[0][:300]}" if first else type(error).__name__


def _tensor_ids(value: Any) -> set[int]:
    return {id(t) for t in tree_leaves(value) if isinstance(t, torch.Tensor)}


def _returns_an_input(structure: IR) -> bool:
    """Whether the subnet of this (tensor-less) IR gives one of its inputs back unchanged in eval mode: read
    from the graph, since made-up inputs may fail a model's checks on values (LLaVA's image tokens)."""
    graph = structure.eval_graph if structure.eval_graph is not None else structure.graph
    inputs = {p.name for p in graph.placeholders if p.kind == INPUT}
    return any(ref in inputs for ref in node_refs(graph.outputs))


def _own_outputs(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` whose outputs that are inputs given back unchanged (a subnet with every block dropped) are
    copies: torch.onnx names such an output as its input, a duplicate definition ONNX Runtime refuses. Its
    forward has ``model``'s signature (``functools.wraps``), which the exporter's ``dynamic_shapes`` name."""
    wrapper = torch.nn.Module()
    wrapper.model = model

    @_wrapping(model.forward)
    def forward(*args: Any, **kwargs: Any) -> Any:
        given = _tensor_ids((args, kwargs))
        return tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) and id(t) in given else t,
                        model(*args, **kwargs))
    wrapper.forward = forward
    return wrapper


def _write_weights(model: torch.nn.Module, file: Path) -> None:
    # clones: safetensors refuses tensors that share storage (tied weights are stored once per name)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()},
              str(file), metadata={"format": "osf-subnet-state-dict"})
