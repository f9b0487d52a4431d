"""Capture any ``nn.Module`` into an :class:`~osf.ir.graph.IR` with ``torch.export`` (non-strict).

The model is exported in training mode (the graph supernets train) and in eval mode. Ops whose only
difference between modes is a training flag (dropout, batch norm, attention dropout) are bound to their
owner module's ``.training`` at run time; if the two graphs differ in structure (e.g. auxiliary heads
that run only in training), both are kept and the rebuilt model dispatches on ``self.training``.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import functools
import inspect
import io
import itertools
import json
import logging
import math
import random
import re
import sys
import time
import traceback
import warnings
from typing import Any, Callable

import sympy
import torch
import torch.fx
import torch.utils.checkpoint
import torch.utils._pytree as pytree
from torch import nn
from torch.export import Dim
from torch.nn.parameter import is_lazy

from . import conditions, serial
from . import ops as op_rules
from .codegen import RebuiltModel, own_ir, result_count
from .construct import qualname, size_arguments, verify_all
from .errors import FormatError, TraceError
from .graph import (BUFFER, CONST, INPUT, IR, PARAM, Graph, ModuleNode, OpNode, Placeholder, import_class,
                    with_unread_marks)

_IGNORED_TARGETS = {"aten._assert_tensor_metadata.default"}


def trace(model: nn.Module, args: Any = (), kwargs: dict | None = None, *, dynamic_batch: bool = True,
          dynamic_seq: bool = False, dynamic_spatial: bool = False, verify_init: bool = True) -> IR:
    """Capture ``model`` called as ``model(*args, **kwargs)`` into an IR.

    ``dynamic_batch`` keeps dim 0 of every tensor input symbolic (an example batch of 1 is exported
    doubled, as torch.export would fix it to 1; sizes are still reported at batch 1; inputs whose batch
    stays fixed are listed in ``ir.info["fixed_batch"]`` and refused at another batch); ``dynamic_seq``
    also keeps dim 1 of every input with >= 2 dims symbolic (token ids, masks, embeddings);
    ``dynamic_spatial`` dims 2 and up of every floating-point input with >= 3 dims (an image's height and
    width, a video's frames). Each is kept symbolic where the model allows it (``Dim.AUTO``). Every dim
    left static is a constant of the graph (sizes computed from it, such as an upsampling back to the
    input's size, are baked in), so the rebuilt model refuses inputs of another size there.
    ``verify_init=False`` skips constructor-argument verification.

    A model osf rebuilt (an extracted subnet, ``ir.build()``) is not traced again: its own IR is returned,
    holding its current tensors, when it was traced with the same options and its tensors kept their
    shapes (its generated forward never calls its submodules, so a new trace would lose the hierarchy).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"osf.trace expects an nn.Module, got {type(model).__name__}")
    model = _uncompiled(model)
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    kwargs = dict(kwargs or {})
    options = {"dynamic_batch": dynamic_batch, "dynamic_seq": dynamic_seq, "dynamic_spatial": dynamic_spatial}
    own = _own_ir(model, args, kwargs, options)
    if own is not None:
        return own
    _refuse_uncapturable_state(model)
    was_training = model.training
    started = time.perf_counter()
    unrecorded = _Unrecorded(model)
    calls = _CallShapes(model)
    state = _StateChanges(model)
    try:
        with unrecorded.watching(), calls.watching(), state.watching():
            programs, method = _export_both_modes(model, args, kwargs, dynamic_batch, dynamic_seq,
                                                  dynamic_spatial)
    except TraceError as e:
        if unrecorded.grad_calls:
            raise TraceError(f"could not capture {type(model).__name__}: forward calls torch.autograd.grad (at "
                             f"{', '.join(unrecorded.grad_calls)}), which torch.export cannot capture",
                             suggestion="compute gradients of the model's outputs outside the model (e.g. forces "
                             "as -grad(energy) in the loss function), with the model returning what they "
                             "need") from e
        raise
    finally:
        model.train(was_training)
    if state.changed and state.path_depends_on_it(
            programs, lambda: _export_both_modes(model, args, kwargs, dynamic_batch, dynamic_seq, dynamic_spatial)[0]):
        state.warn()
    ir = _to_ir(model, programs, method, verify_init, (args, kwargs), calls)
    ir.info["trace_options"] = options
    if unrecorded.hooked:
        _check_gradients(model, ir, args, kwargs, unrecorded)
    _warn_parameter_hooks(model)
    if unrecorded.functions:
        ir.info["inlined_functions"] = sorted(unrecorded.functions)
    if dynamic_batch:  # inputs whose batch the export could not keep dynamic: other batches are refused
        ir.info["fixed_batch"] = {p.name: p.meta["shape"][0] for p in ir.graph.placeholders
                                  if p.kind == INPUT and isinstance(p.meta, dict) and p.meta.get("shape")
                                  and not (p.meta.get("sym") or [None])[0]}
    ir.info["capture_seconds"] = round(time.perf_counter() - started, 3)
    return ir


def _uncompiled(model: nn.Module) -> nn.Module:
    """The module a ``torch.compile`` wrapper holds (``_orig_mod``), else ``model``: a compiled model runs its
    module's own forward, and tracing the wrapper put ``_orig_mod.`` in front of every name (space keys,
    ``state_dict`` keys of extracted subnets) and named rebuilt models ``OptimizedModule``."""
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")  # imported by torch.compile, never here
    while eval_frame is not None and isinstance(model, eval_frame.OptimizedModule):
        model = model._orig_mod
    return model


def _parallel_wrappers() -> tuple[type, ...]:
    """torch's data-parallel wrappers: their forward scatters inputs or synchronises processes."""
    wrappers: tuple[type, ...] = (nn.DataParallel,)
    if torch.distributed.is_available():
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
        wrappers += (nn.parallel.DistributedDataParallel, FullyShardedDataParallel, FSDPModule)
    return wrappers


def _refuse_uncapturable_state(model: nn.Module) -> None:
    """A data-parallel wrapper runs its model elsewhere; a lazy module not yet called has no shapes to
    capture; a module whose state is a TorchScript object (the packed weights of ``torch.ao`` quantized
    layers, a scripted submodule's attributes) or a quantized tensor has no float weights the IR could cut."""
    for name, module in model.named_modules():
        if isinstance(module, _parallel_wrappers()):
            raise TraceError(f"{type(module).__name__} is a wrapper that runs the model it holds on several devices "
                             "or processes", module=name,
                             suggestion="trace the model it wraps (its .module); osf.train spreads a supernet's "
                             "subnets over processes itself (docs/distributed.md)")
        state = [(k, v) for k, v in vars(module).items() if isinstance(v, torch.ScriptObject)]
        state += [(k, t) for k, t in itertools.chain(module.named_parameters(recurse=False),
                                                     module.named_buffers(recurse=False)) if t.is_quantized]
        lazy = [k for k, t in itertools.chain(module.named_parameters(recurse=False),
                                              module.named_buffers(recurse=False)) if is_lazy(t)]
        if lazy:
            raise TraceError(f"{type(module).__name__}'s {lazy[0]!r} is not initialised yet (a lazy module infers "
                             "its shapes on its first call)", module=name,
                             suggestion="call the model once on an example batch before tracing it, e.g. "
                             "model(*args), as torch's lazy modules require before any use of their weights")
        if isinstance(module, torch.jit.ScriptModule) or state:
            what = ("is a TorchScript module" if isinstance(module, torch.jit.ScriptModule)
                    else f"holds attribute {state[0][0]!r} ({type(state[0][1]).__name__})")
            raise TraceError(f"{type(module).__name__} {what}, which has no float weights to capture and "
                             "prune", module=name,
                             suggestion="build the supernet from the float model (before quantization or "
                             "torch.jit.script) and quantize or script the exported subnet")


# ----------------------------------------------------------------------------------------------
# export

def _dynamic_shapes(model: nn.Module, args: tuple, kwargs: dict, batch: bool, seq: bool,
                    spatial: bool) -> Any:
    if not (batch or seq or spatial):
        return None
    try:
        signature = inspect.signature(model.forward)
        bound = signature.bind(*args, **kwargs).arguments
    except TypeError as e:
        raise TraceError(f"the example inputs do not match {type(model).__name__}.forward: {e}",
                         module="", suggestion="pass args/kwargs exactly as you call the model") from None

    def spec(x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or x.dim() == 0:
            return None
        dims = {}
        if batch:
            dims[0] = Dim.AUTO
        if seq and x.dim() >= 2:
            dims[1] = Dim.AUTO
        if spatial and x.dim() >= 3 and x.is_floating_point():
            dims.update(dict.fromkeys(range(2, x.dim()), Dim.AUTO))
        return dims

    # ``*args`` / ``**kwargs`` take a spec of their own structure even without tensors (``use_cache=False``
    # landing in ``**kwargs``): export refuses None there, which would have fixed every input's sizes
    gathered = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {k: pytree.tree_map(spec, v) if _has_tensor(v) or signature.parameters[k].kind in gathered else None
            for k, v in bound.items()}


def _has_tensor(v: Any) -> bool:
    return any(isinstance(x, torch.Tensor) for x in pytree.tree_leaves(v))


class _StackRecorder:
    """Forward hooks that remember which modules are running, to name the culprit of a failed trace."""

    def __init__(self, model: nn.Module):
        self.stack: list[str] = []
        self.failed_at: list[str] | None = None
        self.finished: list[str] = []  # children of the root that returned before the failure, in order
        self.handles = []
        for name, m in model.named_modules():  # nn.Module's own registration: a rebuilt module warns that
            # a hook on it never runs, which these diagnostics know (they name no module of a rebuilt model)
            self.handles.append(nn.Module.register_forward_pre_hook(m, self._enter(name)))
            self.handles.append(nn.Module.register_forward_hook(m, self._leave(name), always_call=True))

    def _enter(self, name: str):
        def hook(*_):
            self.stack.append(name)
        return hook

    def _leave(self, name: str):
        def hook(*_):
            if self.failed_at is None and sys.exc_info()[0] is not None:
                self.failed_at = list(self.stack)
            elif self.failed_at is None and name and "." not in name and name not in self.finished:
                self.finished.append(name)
            if self.stack and self.stack[-1] == name:
                self.stack.pop()
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@contextlib.contextmanager
def _quiet() -> Any:
    """Python warnings and log records up to WARNING silenced while exporting, and what it writes to
    stderr kept back when it fails: failed attempts are reported as a ``TraceError`` (or osf falls back to
    another), while torch logs each one, prints the partial graph of a failed data-dependent guard (hundreds
    of lines) and warns about dims it specialised, which osf handles itself."""
    before = logging.root.manager.disable
    logging.disable(max(before, logging.WARNING))
    stderr = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(before)
    sys.stderr.write(stderr.getvalue())  # reached only when the export succeeded


class RandomDrawWhileTracing(Exception):
    """``forward`` drew random numbers in Python while it was traced: the graph would replay that draw."""


@contextlib.contextmanager
def _no_random_draws() -> Any:
    """Raise ``RandomDrawWhileTracing`` if the traced code drew from Python's ``random``, NumPy's global
    generator or torch's CPU generator (export runs tensor ops on fake tensors, so a real draw comes from
    Python-level code, e.g. ``if random.random() < p`` for layer drop); the user's generators are left
    as they were either way."""
    numpy = sys.modules.get("numpy")
    saved = (random.getstate(), torch.random.get_rng_state(), numpy.random.get_state() if numpy else None)
    try:
        yield
        drawn = (random.getstate() != saved[0] or not torch.equal(torch.random.get_rng_state(), saved[1])
                 or (numpy is not None and _numpy_state_changed(numpy.random.get_state(), saved[2])))
        if drawn:
            raise RandomDrawWhileTracing("forward drew random numbers in Python while it was traced (random, "
                                         "numpy, or a torch draw used as a Python value)")
    finally:
        random.setstate(saved[0])
        torch.random.set_rng_state(saved[1])
        if numpy is not None:
            numpy.random.set_state(saved[2])


@contextlib.contextmanager
def _identity_conversions_skipped() -> Any:
    """While tracing, ``module.to(dtype)`` / ``.float()`` that leaves every tensor as it is returns the
    module untouched. Models call them in ``forward`` (Switch Transformers' router:
    ``self.classifier = self.classifier.to(self.dtype)``); eagerly a no-op, but under export the
    parameters are fake tensors, which ``nn.Module._apply`` swaps in place, and that fails. A conversion
    that changes a tensor still goes through ``_apply`` (and fails as before)."""
    apply = nn.Module._apply

    def _apply(module: nn.Module, fn: Callable, recurse: bool = True) -> nn.Module:
        params = list(module.parameters(recurse))
        tensors = params + list(module.buffers(recurse)) + [t.grad for t in params if t.grad is not None]
        return module if all(fn(t) is t for t in tensors) else apply(module, fn, recurse)

    nn.Module._apply = _apply
    try:
        yield
    finally:
        nn.Module._apply = apply


class _Unrecorded:
    """What ``torch.export`` does not record of a forward it traces, watched for while tracing: a custom
    ``torch.autograd.Function``'s ``backward`` (only its forward ops are recorded: the graph differentiates
    those), gradient hooks registered on tensors (dropped), and ``torch.autograd.grad`` calls (not
    capturable; named when the capture fails); and the modules' backward hooks, which no graph holds."""

    def __init__(self, model: nn.Module) -> None:
        self.functions: dict[str, type] = {}  # every Function subclass outside torch and osf that ran
        self.hooks: dict[str, None] = {}  # where forward called Tensor.register_hook (file:line)
        self.grad_calls: dict[str, None] = {}  # where forward called torch.autograd.grad
        self.module_hooks = [name or "<root>" for name, m in model.named_modules()
                             if m._backward_hooks or m._backward_pre_hooks]  # the IR carries none

    @contextlib.contextmanager
    def watching(self) -> Any:
        """Each Function class's ``forward`` is wrapped, not ``apply``, which models often keep bound
        (``swish = SwishFn.apply``); osf's own Functions compute their forward's derivative.

        torch's reentrant checkpoint (``checkpoint(..., use_reentrant=True)``) runs its function straight:
        its ``torch.no_grad()`` inside the Function, where grad is already off, is recorded as a no-grad
        region that never ends, and every later op of the graph lost its gradient. Its backward recomputes
        the same ops, so their plain gradient is the checkpoint's."""
        functions = [cls for cls in _subclasses(torch.autograd.Function)
                     if cls.__module__.partition(".")[0] not in ("torch", "osf") and "forward" in vars(cls)]
        reentrant = torch.utils.checkpoint.CheckpointFunction
        originals = {(cls, "forward"): vars(cls)["forward"] for cls in functions + [reentrant]}
        originals |= {(torch.Tensor, "register_hook"): torch.Tensor.register_hook,
                      (torch.autograd, "grad"): torch.autograd.grad}

        def recording(cls: type, forward: Callable) -> staticmethod:
            def run(*args: Any, **kwargs: Any) -> Any:
                self.functions.setdefault(qualname(cls), cls)
                return forward(*args, **kwargs)
            return staticmethod(functools.wraps(forward)(run))

        def noted(where: dict[str, None], fn: Callable) -> Callable:
            @functools.wraps(fn)
            def run(*args: Any, **kwargs: Any) -> Any:
                caller = sys._getframe(1)  # torch's own calls (e.g. for module hooks) are not the model's
                if "/torch/" not in caller.f_code.co_filename:
                    where[f"{caller.f_code.co_filename}:{caller.f_lineno}"] = None
                return fn(*args, **kwargs)
            return run

        def checkpointed(ctx: Any, run_function: Callable, preserve_rng_state: bool, *args: Any) -> Any:
            return run_function(*args)

        for cls in functions:
            cls.forward = recording(cls, vars(cls)["forward"].__get__(None, cls))
        reentrant.forward = staticmethod(checkpointed)
        torch.Tensor.register_hook = noted(self.hooks, torch.Tensor.register_hook)
        torch.autograd.grad = noted(self.grad_calls, torch.autograd.grad)
        try:
            yield
        finally:
            for (owner, name), original in originals.items():
                setattr(owner, name, original)

    @property
    def hooked(self) -> bool:
        return bool(self.functions or self.hooks or self.module_hooks)

    def describe(self) -> str:
        parts = [f"forward applies the custom torch.autograd.Function {name} ({_source_file(cls)}), whose "
                 "forward torch.export records as plain ops while its own backward is lost"
                 for name, cls in self.functions.items()]
        if self.hooks:
            parts.append(f"forward registers gradient hooks on tensors (at {', '.join(self.hooks)}), which "
                         "torch.export drops")
        if self.module_hooks:
            parts.append(f"modules {', '.join(repr(m) for m in self.module_hooks)} have backward hooks, which "
                         "the captured graph does not hold")
        return "; ".join(parts)


class _StateChanges:
    """Plain attributes (flags, counters, strings) of the model's modules that its forward sets while torch.export
    traces it. Export puts them back afterwards, so the captured graph follows the path of a call that found
    them as they were, and every call of a rebuilt model, supernet or subnet takes that path, while the
    original may take another on later calls: Hugging Face's RWKV divides its weights in place once in eval
    mode and then sets ``layers_are_rescaled``, so a rebuilt RWKV divided them again at every call. Swin's
    ``shift_size`` set from the input size takes the same path again: no warning."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.changed: dict[tuple[str, str], tuple[Any, Any]] = {}  # (path, attribute) -> (before, after)

    def _plain(self) -> dict[tuple[str, str], Any]:
        return {(path, k): v for path, m in self.model.named_modules() for k, v in vars(m).items()
                if k != "training" and (v is None or type(v) in (bool, int, float, str))}

    @contextlib.contextmanager
    def watching(self) -> Any:
        before: dict[tuple[str, str], Any] = {}

        def started(module: nn.Module, args: tuple) -> None:
            before.clear()
            before.update(self._plain())

        def finished(module: nn.Module, args: tuple, output: Any) -> None:
            for key, v in self._plain().items():
                old = before.get(key, _UNSET)
                if old is _UNSET or type(old) is not type(v) or old != v:
                    self.changed[key] = (self.changed.get(key, (old,))[0], v)
        handles = [nn.Module.register_forward_pre_hook(self.model, started),
                   nn.Module.register_forward_hook(self.model, finished)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def path_depends_on_it(self, programs: dict[str, Any], export_again: Callable[[], dict[str, Any]]) -> bool:
        """Whether exporting again with the attributes as the traced call left them records other ops
        (the attributes and the model's mode are put back after)."""
        modules, training = dict(self.model.named_modules()), self.model.training
        saved = {key: vars(modules[key[0]]).get(key[1], _UNSET) for key in self.changed}
        try:
            for (path, k), (_, after) in self.changed.items():
                vars(modules[path])[k] = after
            again = export_again()
        except Exception:  # noqa: BLE001 - cannot tell: say so
            return True
        finally:
            self.model.train(training)
            for (path, k), value in saved.items():
                if value is _UNSET:
                    vars(modules[path]).pop(k, None)
                else:
                    vars(modules[path])[k] = value

        def ops(ep: Any) -> list[str] | None:  # without the marks of module calls (exported again unwatched)
            return None if ep is None else [str(n.target) for n in ep.graph.nodes
                                            if n.op == "call_function" and str(n.target) != "aten.alias.default"]
        return any(ops(programs.get(mode)) != ops(again.get(mode)) for mode in ("train", "eval"))

    def warn(self) -> None:
        listed = ", ".join(f"{f'{path}.' if path else ''}{k} ({'unset' if old is _UNSET else repr(old)} → {new!r})"
                           for (path, k), (old, new) in list(self.changed.items())[:5])
        warnings.warn(f"the forward of {type(self.model).__name__} sets module attributes while it runs, and "
                      f"takes another path once they are set: {listed}. torch.export puts them back after "
                      "tracing, so the captured graph follows the path of a call that found them as they were, "
                      "and rebuilt models, supernets and subnets take that path at every call, while the "
                      "original takes the other one on later calls (RWKV divides its weights in place once, then "
                      "sets layers_are_rescaled: rebuilt, it divided them at every call). Make the forward not "
                      "depend on such state, or trace a model whose state is what its later calls find",
                      UserWarning, stacklevel=3)


_UNSET = object()


class _CallShapes:
    """How each module is called while the model is exported (hooks, removed after): ``shapes[id(module)]``
    holds ``call``: "unary" when every call passed one tensor positionally, the same constant keywords if
    any (``kwargs``: None, bools, numbers, strings; timm's ``attn(x, attn_mask=None)``), and returned one
    tensor, or tensors in a tuple / list with constants (``returns`` as below); "tensors" when every call
    passed tensors and constants only, positionally or by keyword, in the same places, and returned as a
    unary call may (``signature``: ``args`` and ``kwargs`` entries ``{"input": k}`` for the k-th distinct
    tensor, ``{"const": v}``, ``{"tuple": [...]}`` / ``{"list": [...]}`` of entries, or ``{"dict": [[key,
    entry], ...]}`` / ``{"OrderedDict": ...}`` of entries under constant keys, ``returns`` None
    for a tensor or ``{"type", "items"}`` with items ``{"output": j}`` for its j-th distinct tensor and
    ``{"const": v}``, with ``spec`` and ``paths`` for structures other than a tuple or list (``_returned``):
    torchvision's ``self_attention(x, x, x, need_weights=False)`` returning ``(out,
    None)``, ``nn.MultiheadAttention`` at its default returning ``(out, weights)``, Hugging Face layers given
    a mask); else how a call differed. A module put in place of such a module is called as the model
    called it (``codegen.module_calls``).

    Three kinds of marks sit in the module's scope as ``aten.alias`` ops (generated code assigns them,
    ``codegen._ALIAS``): a call that returns its input itself unchanged (``nn.Identity``, a dropout in eval
    mode; not an in-place ReLU, whose op marks it) returns an alias of it, so its call is found; a
    "tensors" call is given an alias of each distinct tensor it takes, in the order of ``input`` numbers,
    so that which value fills which argument is known (a module's first ops; the same tensor passed twice
    stays one object, as ``query is key`` tests expect); a call returning several tensors returns an alias
    of each, in the order of ``output`` numbers (its last ops), so that which value is which result is
    known. ``_mark_calls`` then tags those aliases with their numbers (``meta["argument"]``,
    ``meta["result"]``: ``OpNode.is_mark``, which the search space sees through)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.shapes: dict[int, dict[str, Any]] = {}
        self.versions: dict[int, int] = {}  # the input's version counter when each module's call began
        self.returned: dict[int, dict | None] = {}  # what a module's first call returned (``_returned``)
        # how many tensors each module given aliases took: all its aliases are tagged (``_mark_calls``),
        # also where a later call refused it, so that the search space sees through every one
        self.arguments: dict[int, int] = {}
        self.results: dict[int, int] = {}  # how many distinct tensors each module returning several returned

    @contextlib.contextmanager
    def watching(self) -> Any:
        def before(module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
            if module is self.model:
                return None
            if len(args) == 1 and isinstance(args[0], torch.Tensor) and all(map(_constant, kwargs.values())):
                seen = self.shapes.setdefault(id(module), {"call": "unary", **({"kwargs": dict(kwargs)} if kwargs
                                                                                else {})})
                if seen["call"] == "unary" and seen.get("kwargs", {}) != kwargs:
                    self.shapes[id(module)] = {"call": "called with other keywords in different calls"}
                elif seen["call"] == "tensors":
                    self.shapes[id(module)] = {"call": "called with other arguments in different calls"}
                self.versions[id(module)] = args[0]._version
                return None
            if not all(map(_passable, [*args, *kwargs.values()])):
                keywords = f" and keyword(s) {', '.join(sorted(kwargs))}" if kwargs else ""
                self.shapes[id(module)] = {"call": f"called with {len(args)} positional argument(s){keywords}, "
                                                   "not all of them tensors or constants"}
                return None
            numbers: dict[int, int] = {}
            aliases: list[torch.Tensor] = []

            def slot(value: Any) -> dict:
                if type(value) in (tuple, list):
                    return {type(value).__name__: [slot(v) for v in value]}
                if type(value) in (dict, collections.OrderedDict):
                    return {type(value).__name__: [[k, slot(v)] for k, v in value.items()]}
                if not isinstance(value, torch.Tensor):
                    return {"const": value}
                if id(value) not in numbers:
                    numbers[id(value)] = len(aliases)
                    aliases.append(torch.ops.aten.alias.default(value))
                return {"input": numbers[id(value)]}
            signature = {"args": [slot(a) for a in args], "kwargs": {k: slot(v) for k, v in kwargs.items()}}
            seen = self.shapes.setdefault(id(module), {"call": "tensors", "signature": signature})
            if seen["call"] != "tensors" or seen["signature"]["args"] != signature["args"] \
                    or seen["signature"]["kwargs"] != signature["kwargs"]:
                if seen["call"] in ("unary", "tensors"):
                    self.shapes[id(module)] = {"call": "called with other arguments in different calls"}
                return None

            self.arguments[id(module)] = len(aliases)

            def marked(value: Any) -> Any:
                if type(value) in (tuple, list):
                    return type(value)(map(marked, value))
                if type(value) in (dict, collections.OrderedDict):
                    return type(value)((k, marked(v)) for k, v in value.items())
                return aliases[numbers[id(value)]] if isinstance(value, torch.Tensor) else value
            return tuple(map(marked, args)), {k: marked(v) for k, v in kwargs.items()}

        def after(module: nn.Module, args: tuple, output: Any) -> Any:
            seen = self.shapes.get(id(module), {})
            how = seen.get("call")
            if how in ("unary", "tensors"):
                returns = _returned(output)
                if isinstance(returns, str):
                    self.shapes[id(module)] = {"call": returns}
                elif self.returned.setdefault(id(module), returns) != returns:
                    self.shapes[id(module)] = {"call": "returns other structures in different calls"}
                elif returns is not None:
                    (seen["signature"] if how == "tensors" else seen)["returns"] = returns
                    count = result_count(returns)
                    if count > 1:
                        self.results[id(module)] = count
                        return _aliased(output)
            if how == "tensors":
                return None
            if isinstance(output, torch.Tensor) and len(args) == 1 and output is args[0] \
                    and self.versions.get(id(module)) == output._version:
                return torch.ops.aten.alias.default(output)
            return None

        handles = []  # through nn.Module's methods: a rebuilt model's containers warn of hooks of users
        for m in self.model.modules():
            handles.append(nn.Module.register_forward_pre_hook(m, before, with_kwargs=True))
            handles.append(nn.Module.register_forward_hook(m, after))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _returned(output: Any) -> dict | None | str:
    """What a call that returned ``output`` returns (``_CallShapes``: a unary call's ``returns``, a "tensors"
    call's ``signature["returns"]``): None for a tensor; the ``type`` and ``items`` of a tuple or list of
    tensors (``{"output": j}``, the j-th distinct one) and constants; for other structures of them that
    ``torch.utils._pytree`` flattens (a model output class, a dict, a namedtuple, nested tuples) their
    leaves as ``items``, the pytree ``spec`` (``serial.spec_to_json``) and each leaf's ``paths`` from the
    structure (``["index", i]``, ``["key", k]``, ``["attr", name]`` steps); else why a module put in could
    not stand for it."""
    if isinstance(output, torch.Tensor):
        return None
    kind = type(output).__name__
    try:
        leaves, spec = pytree.tree_flatten_with_path(output)
        stored = serial.spec_to_json(spec)
        serial.spec_from_json(stored, import_class)
    except Exception:  # noqa: BLE001 - any structure osf cannot store or import again is refused, named
        return f"returns a {kind}"
    if stored is None:  # an object pytree does not open
        return f"returns a {kind}"
    values = [v for _, v in leaves]
    tensors = sum(isinstance(v, torch.Tensor) for v in values)
    if not tensors or not all(isinstance(v, torch.Tensor) or _constant(v) for v in values):
        return f"returns a {kind} of {tensors} tensor(s) and other values"
    numbers: dict[int, int] = {}
    items = [{"output": numbers.setdefault(id(v), len(numbers))} if isinstance(v, torch.Tensor) else {"const": v}
             for v in values]
    if type(output) in (tuple, list) and len(leaves) == len(output) and all(len(p) == 1 for p, _ in leaves):
        # flat: its items are the leaves
        return {"type": kind, "items": items}
    steps = {pytree.SequenceKey: ("index", "idx"), pytree.MappingKey: ("key", "key"),
             pytree.GetAttrKey: ("attr", "name")}
    paths = [[[steps[type(k)][0], getattr(k, steps[type(k)][1])] for k in path] for path, _ in leaves]
    if not all(isinstance(key, (int, str)) for path in paths for _, key in path):
        return f"returns a {kind} with keys other than names and positions"
    return {"type": kind, "spec": stored, "items": items, "paths": paths}


def _aliased(output: Any) -> Any:
    """``output`` (a structure of tensors and constants, ``_returned``) with an alias of each distinct
    tensor, made in the order they first appear (``_CallShapes``: the marks of a call's results)."""
    leaves, spec = pytree.tree_flatten(output)
    aliases: dict[int, torch.Tensor] = {}
    for v in leaves:
        if isinstance(v, torch.Tensor) and id(v) not in aliases:
            aliases[id(v)] = torch.ops.aten.alias.default(v)
    return pytree.tree_unflatten([aliases[id(v)] if isinstance(v, torch.Tensor) else v for v in leaves], spec)


def _forward_parameters(module: nn.Module) -> list | None:
    """The parameters of ``module.forward`` as ``[name, kind, default]`` (``kind``: ``inspect.Parameter``'s,
    as its name; ``default``: ``{"const": v}`` for a constant default, None for none or another object),
    so that a rebuilt module called on its own accepts what the original's forward would (keywords left at
    their defaults, positional arguments by name: ``codegen.bind_call``); None where Python cannot tell."""
    try:
        signature = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None
    return [[p.name, p.kind.name, {"const": p.default} if p.default is not p.empty and _constant(p.default) else None]
            for p in signature.parameters.values()]


def _passable(value: Any) -> bool:
    """An argument a module put in can be given again from the IR: a tensor of the model, a constant, or a
    tuple / list of them (Hugging Face's ``position_embeddings=(cos, sin)``), or a dict / ``OrderedDict`` of
    them under constant keys (torchvision's ``FeaturePyramidNetwork`` takes its backbone's features so)."""
    if type(value) in (tuple, list):
        return all(map(_passable, value))
    if type(value) in (dict, collections.OrderedDict):
        return all(map(_constant, value)) and all(map(_passable, value.values()))
    return isinstance(value, torch.Tensor) or _constant(value)


def _constant(value: Any) -> bool:
    """A keyword argument a module put in can be passed again from the IR (JSON; repr in generated code)."""
    return value is None or type(value) in (bool, int, str) or type(value) is float and math.isfinite(value)


def _source_file(cls: type) -> str:
    try:
        return inspect.getsourcefile(cls) or "?"
    except (TypeError, OSError):  # defined in an interactive session
        return "?"


def _subclasses(cls: type) -> list[type]:
    found, todo = [], [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


def _check_gradients(model: nn.Module, ir: IR, args: tuple, kwargs: dict, unrecorded: _Unrecorded) -> None:
    """Raise a TraceError if the IR's gradients differ from the model's on the example inputs: a custom
    ``torch.autograd.Function`` whose ``backward`` is not the derivative of its ``forward`` (gradient
    reversal, straight-through estimators) or a gradient hook that scales would silently train every
    rebuilt model and subnet with other gradients. Functions that only save memory or time pass; hooks
    that pass change no gradient, and a warning says they will not run. Compared in eval mode, and in
    training mode too when the two modes have different graphs.

    A Function's forward may change in place a tensor its own ops saved (SEW-D's ``XSoftmax``:
    ``softmax(x).masked_fill_(mask, 0)``): inlined, autograd refuses that backward. The IR's in-place
    ops on tensors nothing else aliases or reads afterwards are then made out of place
    (``_out_of_place``; ``ir.info["out_of_place"]`` names them) and the gradients compared again."""
    from .codegen import build

    modes = [False] + ([True] if ir.eval_graph is not None and not ir.info.get("train_error") else [])
    was_training = model.training
    buffers = {k: v.clone() for k, v in model.named_buffers()}  # training mode updates running statistics
    own_hooks = set(_hooked_parameters(model))  # change only their own gradient; warned of
    rebuilt = build(ir, share_weights=True)
    try:
        todo = list(modes)
        while todo:
            training = todo.pop(0)
            model.train(training)
            rebuilt.train(training)
            expected = _gradients(model, args, kwargs)
            try:
                got = _gradients(rebuilt, args, kwargs)
            except RuntimeError as e:
                changed = [] if "out_of_place" in ir.info else _out_of_place(ir)
                if not changed:
                    why = str(e).splitlines()[0].split(". Hint:")[0][:300]
                    raise TraceError(
                        f"the captured graph cannot compute the model's gradients in "
                        f"{'training' if training else 'eval'} mode ({why}): {unrecorded.describe()}",
                        suggestion="keep the Function's forward free of in-place ops on tensors its ops save (out = "
                        "out.masked_fill(mask, 0) instead of out.masked_fill_(mask, 0)), or make it a custom op "
                        "(torch.library.custom_op with register_autograd), which osf keeps as one op with its "
                        "backward") from None
                ir.info["out_of_place"] = changed
                rebuilt = build(ir, share_weights=True)
                todo = list(modes)  # every mode compared again on the changed graphs
                continue
            for name in dict.fromkeys([*expected, *got]):
                a, b = expected.get(name), got.get(name)
                if (a is None and b is None) or name in own_hooks:
                    continue
                a = torch.zeros_like(b) if a is None else a
                b = torch.zeros_like(a) if b is None else b
                if (a - b).norm() > 1e-3 * (a.norm() + b.norm()) + 1e-8:
                    raise TraceError(
                        f"the captured graph computes other gradients than the model (those of {name} "
                        f"differ in {'training' if training else 'eval'} mode): {unrecorded.describe()}",
                        suggestion="express the gradient change with ops in forward (a gradient scale s: "
                        "x.detach() + (x - x.detach()) * s) or as a custom op (torch.library.custom_op with "
                        "register_autograd), which osf keeps as one op with its backward (the dims it touches "
                        "stay at full size)")
    finally:
        model.train(was_training)
        with torch.no_grad():
            for k, v in model.named_buffers():
                if k in buffers and v.shape == buffers[k].shape:
                    v.copy_(buffers[k])
    if unrecorded.hooks or unrecorded.module_hooks:
        warnings.warn(f"{unrecorded.describe()}: rebuilt models, supernets and subnets never call these hooks. "
                      "They change no gradient on the example inputs; what else they do (e.g. keep the gradient) "
                      "will not happen", UserWarning, stacklevel=3)


def _out_of_place(ir: IR) -> list[str]:
    """Make out of place each in-place op of ``ir``'s graphs whose tensor is made by an op that returns
    new memory, is no graph output, and is read by no other op after it nor by any op that returns an
    alias of it: then nothing can see the difference, except autograd, which refuses a backward through
    a tensor changed after an op saved it. Returns the names of the ops changed (none if none qualify)."""
    changed = []
    for graph in ir.graphs:
        producers = graph.producers()
        readers: dict[str, list[int]] = collections.defaultdict(list)
        for i, op in enumerate(graph.ops):
            for ref in dict.fromkeys(op.inputs):
                readers[ref].append(i)
        outputs = set(serial.node_refs(graph.outputs))
        for i, op in enumerate(graph.ops):
            functional = op_rules.functional_form(op.target) if op_rules.is_inplace(op.target) else None
            refs = serial.node_refs(op.args[:1])
            if functional is None or not refs or refs[0] in outputs:
                continue
            source = producers.get(refs[0])
            if (isinstance(source, OpNode) and not source.is_mark and _returns_new_memory(source.target)
                    and all(j < i and _returns_new_memory(graph.ops[j].target) for j in readers[refs[0]] if j != i)):
                op.target = functional
                changed.append(op.name)
    return changed


def _returns_new_memory(target: str) -> bool:
    """Does op ``target`` return only tensors of its own (no alias of an argument, by its schema)?"""
    try:
        schema = getattr(serial.resolve_target(target), "_schema", None)
    except FormatError:
        return False
    return schema is not None and all(r.alias_info is None for r in schema.returns)


def _warn_parameter_hooks(model: nn.Module) -> None:
    """Hooks on the model's own parameters do not follow them into a supernet or rebuilt model (their
    tensors are copies, or new parameters on shared storage)."""
    hooked = _hooked_parameters(model)
    if hooked:
        warnings.warn(f"parameters {', '.join(hooked[:5])}{' ...' if len(hooked) > 5 else ''} of "
                      f"{type(model).__name__} have gradient hooks (Tensor.register_hook / "
                      "register_post_accumulate_grad_hook), which a supernet's or rebuilt model's parameters do "
                      "not have: register them on those", UserWarning, stacklevel=3)


def _hooked_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters with gradient hooks of their own (``register_hook``, post-accumulate)."""
    return [n for n, p in model.named_parameters()
            if p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None)]


def _gradients(fn: nn.Module, args: tuple, kwargs: dict) -> dict[str, torch.Tensor | None]:
    """Gradients of a fixed random projection of ``fn``'s floating outputs w.r.t. its parameters and
    floating inputs, with the random draws of forward seeded. ``backward`` (reentrant checkpoints refuse
    ``autograd.grad``); the parameters' own ``.grad`` are put back."""
    inputs = pytree.tree_map(lambda x: x.detach().clone().requires_grad_() if isinstance(x, torch.Tensor)
                             and x.is_floating_point() else x, (args, kwargs))
    wrt = {f"input {i}": x for i, x in enumerate(pytree.tree_leaves(inputs))
           if isinstance(x, torch.Tensor) and x.requires_grad}
    params = {n: p for n, p in fn.named_parameters() if p.requires_grad}
    kept = {n: p.grad for n, p in params.items()}
    try:
        for p in params.values():
            p.grad = None
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(0)
            outputs = [y for y in pytree.tree_leaves(fn(*inputs[0], **inputs[1]))
                       if isinstance(y, torch.Tensor) and y.requires_grad and y.is_floating_point()]
            if not outputs:
                return {}
            directions = torch.Generator().manual_seed(0)
            sum((y * torch.randn(y.shape, generator=directions, dtype=y.dtype).to(y.device)).sum()
                for y in outputs).backward()
        return {n: t.grad for n, t in (wrt | params).items()}
    finally:
        for n, p in params.items():
            p.grad = kept[n]


@contextlib.contextmanager
def _causal_masks_applied_as_given() -> Any:
    """While tracing, ``nn.TransformerEncoder`` / ``Decoder`` (and ``nn.Transformer``) given a mask but no
    ``is_causal`` hint no longer compare the mask's values with a causal one: that comparison only picks
    a faster kernel, and on traced values it cannot be decided (a TraceError for every such model). The
    mask is applied as given either way, so the outputs are the same."""
    detect = torch.nn.modules.transformer._detect_is_causal_mask
    torch.nn.modules.transformer._detect_is_causal_mask = lambda mask, is_causal=None, size=None: is_causal is True
    try:
        yield
    finally:
        torch.nn.modules.transformer._detect_is_causal_mask = detect


def _numpy_state_changed(now: tuple, before: tuple) -> bool:
    return any((a != b) if not hasattr(a, "shape") else not (a == b).all() for a, b in zip(now, before))


def _export(model: nn.Module, args: tuple, kwargs: dict, dynamic: Any):
    recorder = _StackRecorder(model)
    try:
        try:
            return _export_drawing(model, args, kwargs, dynamic, None), None
        except RandomDrawWhileTracing:
            program = _export_if_draws_unused(model, args, kwargs, dynamic)
            if program is None:
                raise
            return program, None
    except Exception as e:  # noqa: BLE001 - reported below with the module that raised it
        where = (recorder.failed_at or recorder.stack or [""])[-1]
        before = [name for name in recorder.finished if where != name and not where.startswith(name + ".")]
        if _data_dependent(e):
            program = _export_with_constant_buffers(model, args, kwargs, dynamic)
            if program is not None:
                return program, None
        return None, (e, where, before)
    finally:
        recorder.close()


def _data_dependent(exc: BaseException) -> bool:
    """Did the export stop at a branch or a size on a tensor's value (``int(t)``, ``if t.any():``)?"""
    return "data-dependent" in str(exc).lower()


def _export_with_constant_buffers(model: nn.Module, args: tuple, kwargs: dict, dynamic: Any):
    """The program of a ``forward`` whose branches and sizes on tensor values read the model's scalar
    constants, or None. EnCodec and Mimi keep kernel sizes and strides as non-persistent 0-d buffers and
    compute their paddings from them (``int(kernel - stride)``); torch.export sees every buffer as an
    input whose value is unknown while it traces. Exported again with the model's non-persistent buffers of
    at most one element known by value (as torch knows a scalar tensor made inside ``forward``), the values
    computed from them alone are concrete and baked into the graph. Those buffers are no state (not saved,
    set up by the constructor); one the program writes to is exported again as an input, so a value read
    before a write is never baked. Values that depend on an input or a parameter stay unknown: refused as
    before."""
    aliases, tensors, persistent = _tensor_aliases(model)  # by every path, as torch.export names them
    names = {path for path, canonical in aliases.items()
             if path not in persistent and tensors[canonical].numel() <= 1}
    for _ in range(2):
        if not names:
            return None
        try:
            with _buffers_known_by_value(names):
                program = _export_drawing(model, *_fresh_copies(args, kwargs), dynamic, None)
        except Exception:  # noqa: BLE001 - the first failure is the one reported
            return None
        written = names & (set(program.graph_signature.buffers_to_mutate.values()) | _buffers_written(program))
        if not written:
            _warn_fixed_buffers(model, program, names)
            return program
        names -= written
    return None


def _warn_fixed_buffers(model: nn.Module, program: Any, names: set[str]) -> None:
    """Say which buffers known by value the program reads: what forward computed from them is fixed."""
    from torch.export.graph_signature import InputKind
    read = sorted(spec.target for spec in program.graph_signature.input_specs
                  if spec.kind == InputKind.BUFFER and spec.target in names
                  for node in program.graph.find_nodes(op="placeholder", target=spec.arg.name) if node.users)
    if read:
        warnings.warn(f"{type(model).__name__}.forward turns non-persistent scalar buffers into Python values "
                      f"({', '.join(read[:3])}{f' and {len(read) - 3} more' if len(read) > 3 else ''}): what it "
                      "computes from them is fixed in the captured graph at their current values; trace again "
                      "after changing them", UserWarning, stacklevel=2)


def _buffers_written(program: Any) -> set[str]:
    """The buffers that ops of ``program`` write in place, directly or through a view (a buffer known by
    value is not functionalised: its writes stay in-place ops on it, missing from ``buffers_to_mutate``)."""
    from torch.export.graph_signature import InputKind
    buffer_of = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs
                 if spec.kind == InputKind.BUFFER}
    written = set()
    for node in program.graph.nodes:
        schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
        for i, argument in enumerate(schema.arguments if schema is not None else ()):
            if argument.alias_info is None or not argument.alias_info.is_write:
                continue
            base = node.args[i] if i < len(node.args) else node.kwargs.get(argument.name)
            while isinstance(base, torch.fx.Node) and base.op == "call_function" and base.args \
                    and _is_view_op(base.target):
                base = base.args[0]
            if isinstance(base, torch.fx.Node) and base.name in buffer_of:
                written.add(buffer_of[base.name])
    return written


def _is_view_op(target: Any) -> bool:
    """Does ``target`` return a view of its first argument (``select``, ``view``, ``slice``, ...)?"""
    schema = getattr(target, "_schema", None)
    if schema is None or not schema.arguments:
        return False
    alias = schema.arguments[0].alias_info
    return alias is not None and not alias.is_write


@contextlib.contextmanager
def _buffers_known_by_value(names: set[str]) -> Any:
    """torch.export's fake copies of the model's buffers ``names`` carry their real values (fake tensor
    constants: ops on them alone compute real results, and ``item()`` gives a number). Without the hook
    this relies on (torch's private ``_fakify_params_buffers``), nothing changes."""
    import torch.export._trace as export_trace
    original = getattr(export_trace, "_fakify_params_buffers", None)
    if original is None:
        yield
        return

    def fakify(fake_mode: Any, module: nn.Module) -> dict:
        faked = original(fake_mode, module)
        real = dict(module.named_buffers(remove_duplicate=False))
        for name in names:
            fake = faked.get(name)
            if fake is not None and hasattr(fake, "constant") and fake.constant is None:
                fake.constant = real[name].detach().clone()
                fake_mode.fake_tensor_converter.add_constant_storage_mapping(fake)
        return faked
    export_trace._fakify_params_buffers = fakify
    try:
        yield
    finally:
        export_trace._fakify_params_buffers = original


def _export_drawing(model: nn.Module, args: tuple, kwargs: dict, dynamic: Any, at: float | None):
    """``torch.export.export`` refusing random draws in Python (``at`` None) or with Python's and NumPy's
    common draws forced to the point ``at`` of their range (0: the least value, 1: the greatest)."""
    draws = _no_random_draws() if at is None else _forced_draws(at)
    with _quiet(), draws, _identity_conversions_skipped(), _causal_masks_applied_as_given():
        return torch.export.export(model, args, kwargs, strict=False, dynamic_shapes=dynamic)


def _export_if_draws_unused(model: nn.Module, args: tuple, kwargs: dict, dynamic: Any):
    """The program of a ``forward`` that draws in Python without using the draw (MusicGen's layer drop:
    ``p = random.uniform(0, 1)`` drawn at every layer, read only when training; with ``layerdrop=0`` never
    true), or None. Exported with every draw at the least, the middle and the greatest value of its range:
    the draws are unused when all three programs are the same code with the same constants (a draw compared
    with a threshold, or used as a value, changes the code or a constant between them)."""
    try:
        programs = [_export_drawing(model, args, kwargs, dynamic, at) for at in (0.0, 0.5, 1.0)]
    except Exception:  # noqa: BLE001 - the draws were not all forced (or the forced values fail): refused
        return None
    first = programs[0]
    same = all(p.graph_module.code == first.graph_module.code and p.constants.keys() == first.constants.keys()
               and all(_same_constant(p.constants[k], first.constants[k]) for k in first.constants)
               for p in programs[1:])
    return first if same else None


def _same_constant(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))
    return type(a) is type(b)


@contextlib.contextmanager
def _forced_draws(at: float) -> Any:
    """Python's ``random.random/uniform/randint/choice`` and NumPy's ``random.random/rand/uniform`` return
    the point ``at`` (0 to 1) of their range; any other draw still raises ``RandomDrawWhileTracing``
    (``_no_random_draws``)."""
    numpy = sys.modules.get("numpy")
    unit = min(at, math.nextafter(1.0, 0.0))  # random() draws from [0, 1)

    def numpy_value(value: float, size: Any) -> Any:
        return value if size is None or size == () else numpy.full(size, value)

    patches = [(random, "random", lambda: unit), (random, "uniform", lambda a, b: a + (b - a) * at),
               (random, "randint", lambda a, b: a + round((b - a) * at)),
               (random, "choice", lambda seq: seq[round((len(seq) - 1) * at)])]
    if numpy is not None:
        patches += [(numpy.random, "random", lambda size=None: numpy_value(unit, size)),
                    (numpy.random, "rand", lambda *size: numpy_value(unit, size)),
                    (numpy.random, "uniform",
                     lambda low=0.0, high=1.0, size=None: numpy_value(low + (high - low) * at, size))]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, fn in patches:
            setattr(owner, name, fn)
        with _no_random_draws():
            yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def _export_both_modes(model, args, kwargs, batch, seq, spatial):
    """Export in train and eval mode. If only training mode fails (e.g. a detector that needs targets
    when training), the eval graph is kept and the failure recorded as a TraceError.

    torch.export fixes a dim whose example size is 1, so an example batch of 1 (``torch.randn(1, 3, 224,
    224)``) would give a graph for batch 1 only (a ViT's class-token ``expand`` fails at any other). Such
    an example is exported doubled, and the graph kept when its batch stays symbolic and it gives the
    model's outputs on the user's example; the IR reports sizes at batch 1 (``example_batch``)."""
    dynamic = _dynamic_shapes(model, args, kwargs, batch, seq, spatial)
    # where the model cannot keep every asked-for dim symbolic: the batch alone, then static shapes
    fallbacks = ([(_dynamic_shapes(model, args, kwargs, True, False, False), "torch.export (dynamic batch only)")]
                 if batch and (seq or spatial) else []) + [(None, "torch.export (static shapes)")]
    leaves = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor) and x.dim() > 0]
    if dynamic is not None and batch and leaves and all(x.shape[0] == 1 for x in leaves):
        with torch.no_grad():
            twice = pytree.tree_map(lambda x: torch.cat([x, x]) if isinstance(x, torch.Tensor) and x.dim() > 0
                                    else x, (args, kwargs))
        try:
            programs, method = _export_modes(model, *twice, dynamic, fallbacks)
        except TraceError:
            programs, method = {}, "failed"
        if method == "torch.export" and _batch_symbolic(programs["eval"]) \
                and _same_outputs(model, programs["eval"], args, kwargs):
            if "train_error" not in programs:
                return {**programs, "example_batch": 1}, method
            plain = _export_modes(model, args, kwargs, dynamic, fallbacks)  # training may fail only doubled
            return plain if "train_error" not in plain[0] else ({**programs, "example_batch": 1}, method)
    return _export_modes(model, args, kwargs, dynamic, fallbacks)


def _batched_inputs(ep) -> list:
    """The (fake) values of the program's tensor inputs that have a dim 0."""
    return [v for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs
            for v in [n.meta.get("val")] if isinstance(v, torch.Tensor) and v.dim() > 0]


def _batch_symbolic(ep) -> bool:
    """Is dim 0 of every tensor input of the program symbolic?"""
    return all(isinstance(v.shape[0], torch.SymInt) for v in _batched_inputs(ep))


def _same_outputs(model: nn.Module, ep, args: tuple, kwargs: dict) -> bool:
    """Does the exported eval program give the model's own outputs on these inputs (same random draws)?"""
    model.eval()
    outputs = []
    for fn in (model, ep.module()):
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            try:
                outputs.append(pytree.tree_leaves(fn(*args, **kwargs)))
            except Exception:  # noqa: BLE001 - a program that cannot run these inputs is not kept
                return False
    expected, got = outputs
    return len(expected) == len(got) and all(
        a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
        if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) else type(a) is type(b) and a == b
        for a, b in zip(expected, got))


def _export_modes(model, args, kwargs, dynamic, fallbacks: list[tuple[Any, str]]):
    """Both modes exported with the ``dynamic`` dims, else with each of ``fallbacks`` (their dims, how the
    method is then named) in turn, else through torch.fx."""
    programs: dict[str, Any] = {}
    method = "torch.export"
    failures: dict[str, TraceError] = {}
    for mode in ("train", "eval"):
        model.train(mode == "train")
        ep, failure = _export(model, args, kwargs, dynamic)
        static_failure = None
        for fewer, named in fallbacks if dynamic is not None else ():  # dims the model cannot keep symbolic
            if ep is not None:
                break
            ep, static_failure = _export(model, *_fresh_copies(args, kwargs), fewer)
            method = named if ep is not None else method
        if ep is None:
            ep = _export_via_fx(model, args, kwargs, dynamic)
            method = "torch.fx + torch.export" if ep is not None else method
        if ep is None:
            failures[mode] = _trace_error(model, *failure, static=static_failure)
        programs[mode] = ep
    if programs["eval"] is None:
        _refuse_failing_example(model, args, kwargs)
        raise failures["eval"]
    if programs["train"] is None:
        programs["train_error"] = f"training mode could not be captured with these inputs: {failures['train']}"
    return programs, method


def _refuse_failing_example(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """After a failed capture, a ``TraceError`` saying so where the model itself fails on the example in plain
    PyTorch (eval mode, no gradients, random state kept): nothing is wrong with capturing it then, its inputs
    are (a vision model built for larger images)."""
    model.eval()
    try:
        fresh_args, fresh_kwargs = _fresh_copies(args, kwargs)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model(*fresh_args, **fresh_kwargs)
    except Exception as e:  # noqa: BLE001 - any failure of the model itself is reported as such
        shapes = [list(t.shape) for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        raise TraceError(f"{type(model).__name__} fails on the example inputs (tensors shaped {shapes}) in plain "
                         f"PyTorch, before any capture ({type(e).__name__}: {_first_line(e)})",
                         suggestion="trace it with inputs it accepts (e.g. images of a size the model supports)") \
            from e


def _fresh_copies(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Copies of the tensors among ``args`` and ``kwargs`` (one per tensor, so inputs given twice stay
    one). A tensor that a failed export with dynamic shapes was given still has symbolic sizes when
    exported again with static ones (torch 2.14): the static retry would hit the same failure, or keep
    a symbolic batch without its bounds."""
    copies: dict[int, torch.Tensor] = {}

    def fresh(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        if id(v) not in copies:
            copies[id(v)] = v.detach().clone().requires_grad_(v.requires_grad)
        return copies[id(v)]
    return pytree.tree_map(fresh, (args, kwargs))


def _export_via_fx(model, args, kwargs, dynamic):
    """Fallback: symbolic trace (drops Python-level control flow that export could not handle when it
    does not depend on inputs nor on random draws), then export the traced GraphModule."""
    try:
        concrete = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}
        tensor_kwargs = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        with _quiet(), _no_random_draws(), _identity_conversions_skipped(), _causal_masks_applied_as_given():
            gm = torch.fx.symbolic_trace(model, concrete_args=concrete or None)
            gm.train(model.training)
            return torch.export.export(gm, args, tensor_kwargs, strict=False)
    except Exception:  # noqa: BLE001 - the export error is the one reported
        return None


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _traceable_part(model: nn.Module, module: str, before: list[str]) -> str:
    """For a failure inside a child of the root (a detector's box post-processing), the largest child with
    weights that had returned before it, the part to make a supernet of and train inside the model."""
    if not module:
        return ""
    sizes = {name: sum(p.numel() for p in model.get_submodule(name).parameters()) for name in before}
    if not sizes or max(sizes.values()) == 0:
        return ""
    name = max(sizes, key=sizes.get)
    return (f"; or make the supernet of the part that ran before it, osf.Supernet(model.{name}, <its inputs>), "
            f"put it back (model.{name} = supernet) and train it inside the whole model with "
            "osf.train(supernet, ..., model=model) (docs/train.md, 'A supernet inside a larger model')")


def _trace_error(model: nn.Module, exc: BaseException, module: str, before: list[str] | None = None,
                 static: tuple | None = None) -> TraceError:
    """The TraceError of a failed export (``exc`` raised in ``module``, after the root's children
    ``before`` had returned); ``static``: how the retry with static shapes failed, named too where it
    failed otherwise (its sizes concrete, or another cause)."""
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if "/torch/" not in f.filename and "/osf/" not in f.filename]
    frame = user[-1] if user else (frames[-1] if frames else None)
    located = frame is not None and not isinstance(exc, RandomDrawWhileTracing)  # a draw has no failing line
    op = f"{frame.filename}:{frame.lineno}: {frame.line}" if located else None
    msg = _first_line(exc)
    if static is not None and _first_line(static[0]) != msg:
        msg += f"; with static shapes: {type(static[0]).__name__}: {_first_line(static[0])}"
    text = str(exc).lower()
    cls = type(model.get_submodule(module)).__name__ if module else type(model).__name__
    if isinstance(exc, RandomDrawWhileTracing):
        hint = (f"{cls}.forward draws random numbers in Python and uses them (e.g. layer drop as `if "
                "random.random() < p` with p > 0, or a random scale), which a graph would replay as one fixed draw "
                "(a draw forward never uses is fine); keep the randomness in tensor ops (a mask from "
                "torch.rand multiplied in) or only outside forward")
    elif module and isinstance(model.get_submodule(module), nn.RNNBase) and "faketensor" in text:
        hint = (f"a packed sequence (nn.utils.rnn.pack_padded_sequence) reaching {cls} has per-step batch sizes "
                "that depend on the lengths' values, which a graph cannot capture; run it on the padded batch "
                "and take each sequence's last valid step by index (or mask the padding)")
    elif any("/numpy/" in f.filename for f in frames) or ".numpy()" in text:
        hint = (f"{cls}.forward hands tensors to NumPy, which torch.export cannot trace (the tensors are symbolic "
                "there); write that part with torch ops, or keep it out of forward (NumPy-drawn masking in "
                "training, such as SpecAugment: switch it off, or apply it in the data pipeline)")
    elif "cache" in text or "past_key_values" in text:
        hint = "pass use_cache=False (and return_dict=True) in kwargs"
    elif "data-dependent" in text or "guard" in text or "unbacked" in text:
        hint = (f"the forward of {cls} branches on tensor values; make the branch static (compute it from "
                "shapes or config) or express it with torch.cond, or pass inputs that avoid it")
        hint += _traceable_part(model, module, before or [])
    else:
        hint = (f"check that {cls}.forward runs on the example inputs in plain PyTorch; if it uses Python "
                "objects torch.export cannot see through, move them out of forward")
    return TraceError(f"could not capture {type(model).__name__} ({type(exc).__name__}: {msg})",
                      module=module, op=op, suggestion=hint)


# ----------------------------------------------------------------------------------------------
# ExportedProgram -> IR

def _canonical_names(model: nn.Module) -> tuple[dict[int, str], dict[str, str]]:
    """id(module) -> canonical qualified name, and every alias path -> canonical name."""
    ids: dict[int, str] = {}
    for name, m in model.named_modules():
        ids.setdefault(id(m), name)
    paths = {}
    for name, m in model.named_modules(remove_duplicate=False):
        paths[name] = ids[id(m)]
    return ids, paths


def _module_aliases(model: nn.Module, paths: dict[str, str]) -> dict[str, list]:
    """Alias path of a shared module -> [canonical name, position among its parent's children]."""
    out = {}
    for alias, canon in paths.items():
        if alias != canon:
            parent, _, local = alias.rpartition(".")
            out[alias] = [canon, list(model.get_submodule(parent)._modules).index(local)]
    return out


def _owner(node: torch.fx.Node, paths: dict[str, str]) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    for path, _cls in reversed(list(stack.values())):
        path = _normalize_path(path)
        if path in paths:
            return paths[path]
    return ""


def _normalize_path(path: str) -> str:
    if path.startswith("L['self']"):
        path = path[len("L['self']"):].lstrip(".")
        path = path.replace("[", ".").replace("]", "").replace("'", "")
    return path


def _tensor_aliases(model: nn.Module) -> tuple[dict[str, str], dict[str, torch.Tensor], set[str]]:
    """Every parameter/buffer qualified name -> canonical name (tied tensors share one)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    persistent: set[str] = set()
    for mod_name, m in model.named_modules(remove_duplicate=False):
        prefix = f"{mod_name}." if mod_name else ""
        for local, t in list(m._parameters.items()) + list(m._buffers.items()):
            if t is None:
                continue
            qual = prefix + local
            canon = first.setdefault(id(t), qual)
            aliases[qual] = canon
            tensors.setdefault(canon, t)
            if local in m._parameters or local not in m._non_persistent_buffers_set:
                persistent.add(qual)
    return aliases, tensors, persistent


def _scope(node: torch.fx.Node, paths: dict[str, str], scopes: dict[tuple, int]) -> int | None:
    """The index in ``scopes`` of the module calls ``node`` runs in, outermost first: (canonical path, call
    key) per module below the root, the key naming one call (torch.export counts a module's calls,
    ``fc@1``, per path it was reached by)."""
    frames = tuple((paths[p], key.removeprefix("L__self__")) for key, (path, _cls)
                   in (node.meta.get("nn_module_stack") or {}).items()
                   for p in [_normalize_path(path)] if p and p in paths)
    return scopes.setdefault(frames, len(scopes)) if frames else None


def _graph(ep, paths: dict[str, str], aliases: dict[str, str], consts: dict[str, torch.Tensor],
           example_batch: int | None = None, follow: dict[str, tuple[list, dict]] | None = None,
           scopes: dict[tuple, int] | None = None, marks: dict[str, dict[str, int]] | None = None,
           observed: dict | None = None) -> tuple[Graph, list]:
    """The program (its blocks of forward inlined) as an IR graph; ``example_batch``: the size its inputs'
    batch symbols are reported at (when it was exported from an example of another batch); ``follow``: the
    arguments of some ops with the values that follow the model's dtype marked (``_dtype_following``);
    ``scopes``: the table of module-call stacks its ops' ``scope`` index (extended); ``marks``: per kind
    ("argument", "result"), how many tensors each module called on several takes or returning several
    returns (``_mark_calls``); ``observed``: example values of its data-dependent sizes (``_observed_sizes``)."""
    scopes = {} if scopes is None else scopes
    from torch.export.graph_signature import ConstantArgument, InputKind, OutputKind
    sizes = dict(observed or {})
    if example_batch is not None:
        sizes.update({v.shape[0].node.expr: sympy.Integer(example_batch) for v in _batched_inputs(ep)
                      if isinstance(v.shape[0], torch.SymInt) and v.shape[0].node.expr.is_Symbol})
    kind_of = {InputKind.PARAMETER: PARAM, InputKind.BUFFER: BUFFER, InputKind.CONSTANT_TENSOR: CONST,
               InputKind.USER_INPUT: INPUT}
    placeholders: list[Placeholder] = []
    user_leaves: list = []
    by_name = {n.name: n for n in ep.graph.nodes}
    for spec in ep.graph_signature.input_specs:
        arg = spec.arg
        kind = kind_of.get(spec.kind)
        if kind is None:
            raise TraceError(f"unsupported graph input kind {spec.kind} ({arg})", module="",
                             suggestion="remove custom objects or tokens from the forward")
        if kind == INPUT:
            if isinstance(arg, ConstantArgument):  # a non-tensor input (e.g. return_dict=True)
                user_leaves.append({"const": serial.encode_arg(arg.value)})
                continue
            user_leaves.append({"placeholder": arg.name})
            target = None
        elif kind == CONST:
            target = f"_osf_const_{len(consts)}"
            consts[target] = ep.constants[spec.target]
        else:
            target = aliases.get(spec.target, spec.target)
        node = by_name.get(arg.name)
        meta = serial.encode_value_meta(node.meta.get("val"), sizes) if node is not None else None
        placeholders.append(Placeholder(arg.name, kind, target, meta))
    ops: list[OpNode] = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        if isinstance(node.target, torch._ops.HigherOrderOperator):
            raise TraceError(f"higher-order op {node.target.name()} is not supported by the IR",
                             module=_owner(node, paths), op=node.name,
                             suggestion="express the control flow in plain Python on shapes or config instead of "
                             "torch.cond / torch.while_loop / torch.map (torch.no_grad(), autocast and "
                             "checkpointing blocks are fine)")
        target = serial.target_name(node.target)
        if target in _IGNORED_TARGETS:
            continue
        if _foldable(node):
            key = f"_osf_const_{len(consts)}"
            consts[key] = node.target(*node.args, **node.kwargs)
            placeholders.append(Placeholder(node.name, CONST, key,
                                            serial.encode_value_meta(node.meta.get("val"), sizes)))
            continue
        node_args, node_kwargs = (follow or {}).get(node.name, (list(node.args), node.kwargs))
        ops.append(OpNode(node.name, target, serial.encode_arg(node_args),
                          {k: serial.encode_arg(v) for k, v in node_kwargs.items()},
                          _owner(node, paths), serial.encode_value_meta(node.meta.get("val"), sizes),
                          context=serial.encode_arg(node.meta[_CONTEXT]) if _CONTEXT in node.meta else None,
                          scope=_scope(node, paths, scopes)))
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    outputs = [serial.encode_arg(a) for a, spec in zip(out_node.args[0], ep.graph_signature.output_specs)
               if spec.kind == OutputKind.USER_OUTPUT]
    _mark_calls(ops, marks or {}, scopes)
    _drop_unused(ops, outputs)
    return Graph(placeholders, ops, outputs), user_leaves


def _mark_calls(ops: list[OpNode], marks: dict[str, dict[str, int]], scopes: dict[tuple, int]) -> None:
    """Tag the aliases that ``_CallShapes`` gave each call of a module called on several tensors (the first
    ``marks["argument"][path]`` ops of the module's own in that call) with the number of the tensor each
    stands for (``meta["argument"]``), and those it made of the tensors a module returning several returned
    (its last ``marks["result"][path]`` ops) with theirs (``meta["result"]``): ``codegen.module_calls`` finds
    which value fills which argument and which is which result by them, also after dead ops are dropped. A
    call whose first or last ops are not those aliases (a hook of the model's own ran ops) keeps no marks of
    that kind, and is refused there."""
    frames = {index: stack for stack, index in scopes.items()}
    arguments, results = marks.get("argument", {}), marks.get("result", {})
    own: dict[tuple[str, str | None], list[OpNode]] = {}  # each module call's ops of the module's own
    for op in ops:
        if op.scope is not None and (op.owner in arguments or op.owner in results):
            own.setdefault((op.owner, next((key for path, key in frames[op.scope] if path == op.owner), None)),
                           []).append(op)
    for (path, _), members in own.items():
        first, last = arguments.get(path, 0), results.get(path, 0)
        for kind, tagged in (("argument", members[:first]),
                             ("result", members[len(members) - last:] if len(members) >= last else [])):
            if all(op.target == "aten.alias.default" and isinstance(op.meta, dict) for op in tagged):
                for number, op in enumerate(tagged):
                    op.meta = {**op.meta, kind: number}


_FOLDED = {torch.ops.aten.arange.default, torch.ops.aten.arange.start, torch.ops.aten.arange.start_step,
           torch.ops.aten.triu_indices.default, torch.ops.aten.tril_indices.default}
_FOLD_MAX = 1 << 16  # elements


def _foldable(node: torch.fx.Node) -> bool:
    """An integer position tensor (``arange``, ``triu_indices``) of fixed size made from constants only:
    lifted into a constant, so its dims may follow a pruned dim like a buffer's and be cut and permuted
    with it (ALiBi's per-head slopes, from ``arange(1, heads + 1)``, would otherwise fix the heads), and
    an index it holds is read by value (a created op keeps every dim it makes fixed). Floating ones stay
    ops: as buffers, ``module.half()`` would round them, while ``forward`` makes them at their own dtype."""
    if node.target not in _FOLDED:
        return False
    leaves = pytree.tree_leaves((node.args, node.kwargs))
    val = node.meta.get("val")
    return (not any(isinstance(x, (torch.fx.Node, torch.SymInt, torch.SymFloat, torch.SymBool)) for x in leaves)
            and isinstance(val, torch.Tensor) and not val.dtype.is_floating_point and not val.dtype.is_complex
            and val.numel() <= _FOLD_MAX)


def _dtype_following(model: nn.Module, programs: dict, paths: dict[str, str], example: tuple) -> dict[str, dict]:
    """Per mode, the ops whose dtype arguments or ``torch.finfo`` values follow the model's floating-point
    dtype (``x.to(self.dtype)``, a mask filled with ``torch.finfo(dtype).min``), by node name: (args,
    kwargs) with those values marked (``serial.ModelDtype`` / ``ModelFinfo``), so the rebuilt model keeps
    following it after ``.half()`` / ``.double()``. Found by exporting a float64 copy of the model (eval
    mode, the example inputs of the model's dtype cast) and matching its ops to the traced ones by owner
    module, target and order: a value that is the model's dtype there and float64 here follows it; one
    that stays (``attn.float().softmax(-1)``) is a constant. Nothing is marked when the model's
    floating-point tensors do not share one dtype, when no op has such a value (the copy is then never
    made) or when the copy cannot be exported."""
    floats = [t for t in itertools.chain(model.parameters(), model.buffers()) if t.is_floating_point()]
    dtypes = {t.dtype for t in floats}
    if len(dtypes) != 1 or torch.float64 in dtypes:
        return {}
    dtype, = dtypes
    finfo = {float(getattr(torch.finfo(dtype), a)): a for a in serial.FINFO_ATTRS}
    modes = {mode: programs[mode] for mode in ("train", "eval") if programs.get(mode) is not None}
    wanted = {mode: [n for n in ep.graph.nodes if n.op == "call_function"
                     and (_mentions_dtype([n.args, n.kwargs], dtype, finfo)
                          or any(_is_identity_conversion(a) for a in n.all_input_nodes))]
              for mode, ep in modes.items()}
    if not any(wanted.values()):
        return {}
    ep64 = None
    elements = sum(t.numel() for t in floats)
    # without the weights' memory first (a forward that makes CPU tensors fails); a float64 copy only of a
    # model that it cannot make too large
    for device in ("meta", None) if elements <= _TWIN_MAX_ELEMENTS else ("meta",):
        try:
            twin, args, kwargs = _float64_twin(model, example, dtype, device)
        except Exception:  # noqa: BLE001 - a model that cannot be copied keeps its dtypes as traced
            return {}
        with _CallShapes(twin).watching():  # the same marks as the traced graphs, so that ops match by order
            ep64, _ = _export(twin, args, kwargs, None)
        if ep64 is not None:
            break
    if ep64 is None:
        return {}
    _inline_blocks(ep64.graph_module)
    twin_keys = _op_keys(ep64.graph, paths)
    twins = {key: node for node, key in twin_keys.items()}
    follow: dict[str, dict] = {}
    for mode, nodes in wanted.items():
        keys = _op_keys(modes[mode].graph, paths)
        by_key = {key: node for node, key in keys.items()}
        match = {twin: by_key[key] for twin, key in twin_keys.items() if key in by_key}
        for node in nodes:
            twin_node = twins.get(keys[node])
            if twin_node is None:
                continue
            changed: list[bool] = []
            marked = _mark_following([list(node.args), dict(node.kwargs)],
                                     [list(twin_node.args), dict(twin_node.kwargs)], dtype, finfo, match, changed)
            if changed:
                follow.setdefault(mode, {})[node.name] = tuple(marked)
    return follow


_TWIN_MAX_ELEMENTS = 1 << 27  # a float64 copy of at most 1 GiB (a 134M-parameter model)


def _float64_twin(model: nn.Module, example: tuple, dtype: torch.dtype,
                  device: str | None) -> tuple[nn.Module, tuple, dict]:
    """A copy of ``model`` in eval mode and its example inputs, the tensors of ``dtype`` in float64, all on
    ``device`` (None: where they are), its tensors made anew rather than copied first."""
    def convert(t: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(t, dtype=torch.float64 if t.dtype == dtype else t.dtype, device=device) \
            if device is not None else t.detach().to(torch.float64 if t.dtype == dtype else t.dtype)
    memo: dict[int, Any] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) not in memo:
            memo[id(t)] = nn.Parameter(convert(t), t.requires_grad) if isinstance(t, nn.Parameter) else convert(t)
    twin = copy.deepcopy(model, memo).eval()
    args, kwargs = pytree.tree_map(lambda x: convert(x) if isinstance(x, torch.Tensor) else x, example)
    return twin, args, kwargs


def _mentions_dtype(value: Any, dtype: torch.dtype, finfo: dict[float, str]) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_mentions_dtype(v, dtype, finfo) for v in value)
    if isinstance(value, dict):
        return any(_mentions_dtype(v, dtype, finfo) for v in value.values())
    return value == dtype if isinstance(value, torch.dtype) else isinstance(value, float) and value in finfo


def _op_keys(graph: torch.fx.Graph, paths: dict[str, str]) -> dict[torch.fx.Node, tuple]:
    """Each op's (owner module, target, how many such ops of that owner came before it)."""
    seen: dict[tuple, int] = {}
    keys = {}
    for node in graph.nodes:
        if node.op == "call_function":
            base = (_owner(node, paths), str(node.target))
            keys[node] = (*base, seen.get(base, 0))
            seen[base] = seen.get(base, 0) + 1
    return keys


_CONVERSIONS = {torch.ops.aten.to.dtype, torch.ops.aten.to.dtype_layout, torch.ops.aten.to.device,
                torch.ops.aten._to_copy.default, torch.ops.aten.type_as.default}


def _is_identity_conversion(node: torch.fx.Node) -> bool:
    """A conversion (``.float()``, ``.to(dtype)``, ``type_as``) that kept its input's dtype while tracing:
    it returned its input itself, so the graph's later reads of that input read this node."""
    if node.op != "call_function" or node.target not in _CONVERSIONS or not node.args \
            or not isinstance(node.args[0], torch.fx.Node):
        return False
    before, after = node.args[0].meta.get("val"), node.meta.get("val")
    return isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) and before.dtype == after.dtype


def _mark_following(value: Any, twin: Any, dtype: torch.dtype, finfo: dict[float, str],
                    match: dict[torch.fx.Node, torch.fx.Node], changed: list) -> Any:
    """``value`` with the dtypes / finfo values that are float64's where ``twin`` (the float64 copy's
    argument) has them replaced by markers, and reads of a conversion that kept its input's dtype (the
    input itself while tracing) put back to the input where the float64 copy reads the input (Gemma's
    RMSNorm: ``x.float()`` ... ``.type_as(x)``); each change noted in ``changed``; anything else as it is."""
    if isinstance(value, torch.fx.Node):
        source = match.get(twin) if isinstance(twin, torch.fx.Node) else None
        read = value
        while source is not None and read is not source and _is_identity_conversion(read):
            read = read.args[0]  # x.float().float(): each conversion read the one before
        if read is source and value is not source:
            changed.append(True)
            return source
        return value
    if isinstance(value, torch.dtype) and value == dtype and twin == torch.float64:
        changed.append(True)
        return serial.ModelDtype(dtype)
    if isinstance(value, float) and value in finfo and type(twin) is float \
            and twin == float(getattr(torch.finfo(torch.float64), finfo[value])):
        changed.append(True)
        return serial.ModelFinfo(dtype, finfo[value])
    if isinstance(value, (list, tuple)) and isinstance(twin, (list, tuple)) and len(value) == len(twin):
        return type(value)(_mark_following(v, t, dtype, finfo, match, changed) for v, t in zip(value, twin))
    if isinstance(value, dict) and isinstance(twin, dict) and value.keys() == twin.keys():
        return {k: _mark_following(v, twin[k], dtype, finfo, match, changed) for k, v in value.items()}
    return value


_CONTEXT = "osf_context"  # fx node meta: the context managers of an op inlined from a block of forward


def _inline_blocks(gm: torch.fx.GraphModule) -> None:
    """Inline the ``torch.no_grad()`` / ``enable_grad()`` and ``torch.autocast`` blocks of a forward, which
    export wraps in a call of a sub-graph (``wrap_with_set_grad_enabled``, ``wrap_with_autocast``), into
    the graph, nested blocks too: their ops become plain ops of the IR, each remembering the context
    managers it runs under (meta ``_CONTEXT``: ``["grad", enabled]``, ``["autocast", dtype, enabled,
    cache_enabled]``; the generated code enters autocast on the model's device type)."""
    graph = gm.graph
    hop = torch.ops.higher_order
    while True:
        block = next((n for n in graph.nodes if n.op == "call_function"
                      and n.target in (hop.wrap_with_set_grad_enabled, hop.wrap_with_autocast)), None)
        if block is None:
            return
        if block.target is hop.wrap_with_set_grad_enabled:
            enabled, body_ref, *inputs = block.args
            entered = ["grad", bool(enabled)]
        else:
            _device_type, dtype, enabled, cache, body_ref, *inputs = block.args
            entered = ["autocast", dtype, bool(enabled), cache]
        context = [*block.meta.get(_CONTEXT, []), entered]
        body = getattr(gm, body_ref.target)
        env: dict[torch.fx.Node, Any] = dict(zip((n for n in body.graph.nodes if n.op == "placeholder"), inputs))
        results: list = []
        with graph.inserting_before(block):
            for inner in body.graph.nodes:
                if inner.op == "placeholder":
                    continue
                if inner.op == "output":
                    results = list(torch.fx.map_arg(inner.args[0], env.__getitem__))
                    continue
                if inner.op == "get_attr":  # a nested block's sub-graph
                    name = f"{block.name}_{inner.target}"
                    setattr(gm, name, getattr(body, inner.target))
                    env[inner] = graph.get_attr(name)
                    continue
                env[inner] = copied = graph.node_copy(inner, env.__getitem__)
                copied.meta[_CONTEXT] = context
        for user in list(block.users):  # getitem(block, i)
            user.replace_all_uses_with(results[user.args[1]])
            graph.erase_node(user)
        graph.erase_node(block)
        if body_ref.op == "get_attr" and not body_ref.users:
            graph.erase_node(body_ref)


def _drop_unused(ops: list[OpNode], outputs: list) -> None:
    """Remove ops whose results nobody uses and that have no side effect (dead code after dropping
    assertions). The marks of module calls (``_mark_calls``) stay where the value they mark is computed
    anyway (an argument the module does not read: its call can still pass it; a result nobody reads: a
    hook still sees it)."""
    used = set(serial.node_refs(outputs))
    keep = []
    for op in reversed(ops):
        if op.name in used or op_rules.has_side_effect(op.target):
            keep.append(op)
            used.update(op.inputs)
    ops[:] = with_unread_marks(ops, keep)


def _signature(graph: Graph) -> list:
    """Structure of a graph with training flags ignored: equal for train and eval unless the model's
    forward takes other paths per mode."""
    return [(op.target, op.owner) for op in graph.ops
            if not op.mode_gated and op.target not in op_rules.LAYOUT_ONLY]


def _gate_mode_only_ops(train: Graph, eval_: Graph) -> None:
    """Mark in-place buffer updates that run only in training (e.g. ``num_batches_tracked += 1``)."""
    buffers = {p.name for p in train.placeholders if p.kind == BUFFER}
    eval_buffers = {p.name: p.target for p in eval_.placeholders if p.kind == BUFFER}
    mutated_in_eval = {eval_buffers[r] for op in eval_.ops if op_rules.is_inplace(op.target)
                       for r in op.inputs[:1] if r in eval_buffers}
    target_of = {p.name: p.target for p in train.placeholders}
    for op in train.ops:
        if op_rules.is_inplace(op.target) and op.inputs[:1] and op.inputs[0] in buffers \
                and target_of[op.inputs[0]] not in mutated_in_eval:
            op.mode_gated = True


def _own_ir(model: nn.Module, args: tuple, kwargs: dict, options: dict[str, bool]) -> IR | None:
    """The IR of a model osf rebuilt, over its current tensors (``codegen.own_ir``), after one call in eval
    mode with ``args`` (the model refuses inputs its graph does not take); None for any other model, one
    traced with other ``options``, or one whose tensors changed shape or dtype since."""
    if not isinstance(model, RebuiltModel):
        return None
    ir = own_ir(model)
    if ir is None or ir.info.get("trace_options") != options:
        return None
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(*args, **kwargs)
    finally:
        model.train(was_training)
    return ir


def _observed_sizes(ep, example: tuple) -> dict[tuple[str, str, str], int]:
    """The values the program's data-dependent sizes (``nonzero``, ``torch.where(mask)``, ``.item()``:
    unbacked symbols, with no example value in the graph) take on the example, by (node name, target, path in
    its output), from one run of the program (the eval program). Empty where the program has none, updates a
    buffer (the run would change the model's) or does not run."""
    bindings = {n.name: n.meta["unbacked_bindings"] for n in ep.graph.nodes if n.meta.get("unbacked_bindings")}
    if not bindings or ep.graph_signature.buffers_to_mutate:
        return {}
    seen: dict[tuple[str, str, str], int] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node) -> Any:
            out = super().run_node(n)
            for path in (bindings.get(n.name) or {}).values():
                value = pytree.key_get(out, path)
                if isinstance(value, int) or (isinstance(value, torch.Tensor) and value.numel() == 1):
                    seen[n.name, str(n.target), pytree.keystr(path)] = int(value)
            return out

    args, kwargs = example
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            Recorder(ep.module()).run(*pytree.tree_leaves((args, kwargs)))
    except Exception:  # noqa: BLE001 - sizes stay at torch's hint
        return {}
    return seen


def _observed_symbols(ep, observed: dict[tuple[str, str, str], int]) -> dict:
    """``observed`` (``_observed_sizes`` of the eval program) as values of ``ep``'s own unbacked symbols, for
    its nodes of the same name and target: FLOP counts of those parts then count the example's sizes, not
    torch's hint (1)."""
    out = {}
    for n in ep.graph.nodes:
        for symbol, path in (n.meta.get("unbacked_bindings") or {}).items():
            key = (n.name, str(n.target), pytree.keystr(path))
            if key in observed:
                out[symbol] = sympy.Integer(observed[key])
    return out


def _to_ir(model: nn.Module, programs: dict, method: str, verify: bool, example: tuple,
           calls: _CallShapes) -> IR:
    ids, paths = _canonical_names(model)
    aliases, tensors, persistent = _tensor_aliases(model)
    consts: dict[str, torch.Tensor] = {}
    train_error = programs.get("train_error")
    if train_error:  # eval-only capture: the one graph serves eval, training mode raises
        programs["train"] = programs["eval"]
    batch = programs.get("example_batch")
    for mode in ("train", "eval"):  # blocks of forward become plain ops, for the dtype matching and the IR
        _inline_blocks(programs[mode].graph_module)
    follow = _dtype_following(model, programs, paths, example)
    scopes: dict[tuple, int] = {}
    marks = {kind: {ids[key]: count for key, count in counts.items() if key in ids}
             for kind, counts in (("argument", calls.arguments), ("result", calls.results))}
    # not for an example traced doubled: the program's batch starts at 2
    observed = _observed_sizes(programs["eval"], example) if programs.get("example_batch") is None else {}
    train_graph, user_leaves = _graph(programs["train"], paths, aliases, consts, batch, follow.get("train"), scopes,
                                      marks, _observed_symbols(programs["train"], observed))
    eval_graph, _ = _graph(programs["eval"], paths, aliases, consts, batch, follow.get("eval"), scopes, marks,
                           _observed_symbols(programs["eval"], observed))
    _gate_mode_only_ops(train_graph, eval_graph)
    keep_eval = _signature(train_graph) != _signature(eval_graph)
    for g in (train_graph, eval_graph):
        _rename_symbols(g, _symbol_names(train_graph))
    ep = programs["train"]
    read = {p.target for g in (train_graph, eval_graph if keep_eval else None) if g is not None
            for p in g.placeholders if p.kind == CONST}
    for k, t in consts.items():
        if k in read:  # not those of an eval graph that is dropped as a copy of the training one
            tensors[k] = t.detach().clone()
    size_conditions, unchecked = conditions.from_export((programs["train"], programs["eval"]),
                                                        conditions.symbol_at(train_graph))
    if unchecked:
        warnings.warn(f"torch.export assumed {len(unchecked)} condition(s) on the input sizes that osf cannot "
                      f"check (e.g. {unchecked[0]}): a call with sizes that break one may give a wrong output; "
                      "call the model at the traced size, or trace without dynamic dims", stacklevel=3)
    info = {
        "model_class": qualname(type(model)),
        "capture": method,
        "torch": torch.__version__,
        "train_error": train_error,
        "in_spec": serial.spec_to_json(ep.call_spec.in_spec),
        "out_spec": _out_spec(model, ep),
        "eval_out_spec": _out_spec(model, programs["eval"]) if keep_eval else None,
        "user_leaves": user_leaves,
        "signature": _param_names(model),
        "persistent": sorted(persistent),
        "module_aliases": _module_aliases(model, paths),
        "dynamic": sorted({s for p in train_graph.placeholders if p.kind == INPUT and isinstance(p.meta, dict)
                           for s in (p.meta.get("sym") or []) if s}),
        "input_ranges": _input_ranges(programs["train"], programs["eval"]),
        "size_conditions": size_conditions,
        "scopes": [[list(frame) for frame in frames] for frames in scopes],
    }
    modules = _module_nodes(model, ids, aliases, verify, calls.shapes)
    ir = IR(train_graph, modules, tensors, aliases, info, eval_graph if keep_eval else None)
    annotate_io(ir)
    return ir


def _input_ranges(*programs: Any) -> dict[str, dict[str, list]]:
    """Bounds torch.export put on the inputs' symbolic dims (a branch on a size keeps the graph to one side
    of it): ``{input: {dim: [lowest or None, highest or None]}}``, the tightest over ``programs``. Lower
    bounds up to 2 are left out: export starts every symbol at 2, yet the graph serves sizes 0 and 1 too
    (its 0/1 specialisation is avoided by exporting a batch of 1 doubled)."""
    from torch.export.graph_signature import InputKind
    out: dict[str, dict[str, list]] = {}
    for ep in programs:
        ranges = getattr(ep, "range_constraints", None)
        if not ranges:
            continue
        by_name = {n.name: n for n in ep.graph.nodes}
        for spec in ep.graph_signature.input_specs:
            node = by_name.get(getattr(spec.arg, "name", None))
            val = node.meta.get("val") if spec.kind == InputKind.USER_INPUT and node is not None else None
            for d, size in enumerate(val.shape if isinstance(val, torch.Tensor) else ()):
                vr = ranges.get(size.node.expr) if isinstance(size, torch.SymInt) else None
                if vr is None:
                    continue
                low = int(vr.lower) if isinstance(vr.lower, sympy.Integer) and vr.lower > 2 else None
                high = int(vr.upper) if isinstance(vr.upper, sympy.Integer) else None
                if low is None and high is None:
                    continue
                old = out.setdefault(spec.arg.name, {}).get(str(d), [None, None])
                out[spec.arg.name][str(d)] = [max((v for v in (old[0], low) if v is not None), default=None),
                                              min((v for v in (old[1], high) if v is not None), default=None)]
    return out


def _out_spec(model: nn.Module, ep) -> Any:
    try:
        return serial.spec_to_json(ep.call_spec.out_spec)
    except ValueError as e:
        raise TraceError(str(e), module="", suggestion="return tensors, tuples, dicts, namedtuples or "
                         "dataclass-style outputs registered with torch.utils._pytree") from None


def _symbol_names(graph: Graph) -> dict[str, str]:
    """Readable names for the export's shape symbols: batch dims B (B1, …), the others (sequence,
    height, width) S (S1, …)."""
    names: dict[str, str] = {}
    counts = {"B": 0, "S": 0}
    for p in graph.placeholders:
        if p.kind != INPUT or not isinstance(p.meta, dict):
            continue
        for dim, sym in enumerate(p.meta.get("sym") or []):
            if sym and sym.isidentifier() and sym not in names:
                base = "B" if dim == 0 else "S"
                names[sym] = base + (str(counts[base]) if counts[base] else "")
                counts[base] += 1
    return names


def _rename_symbols(graph: Graph, names: dict[str, str]) -> None:
    if not names:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    sub = lambda text: pattern.sub(lambda m: names[m.group(1)], text)  # noqa: E731

    def fix(meta: Any) -> None:
        if isinstance(meta, dict):
            if meta.get("sym"):
                meta["sym"] = [sub(x) if isinstance(x, str) else x for x in meta["sym"]] \
                    if isinstance(meta["sym"], list) else sub(meta["sym"])
            if "symint" in meta:
                meta["symint"] = sub(meta["symint"])
            for m in meta.get("list", []):
                fix(m)

    for node in [*graph.placeholders, *graph.ops]:
        fix(node.meta)


def _param_names(model: nn.Module) -> list[str] | None:
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return None
    return [p.name for p in params if p.kind != inspect.Parameter.VAR_KEYWORD]


def _module_nodes(model: nn.Module, ids: dict[int, str], aliases: dict[str, str],
                  verify: bool, call_shapes: dict[int, dict[str, Any]]) -> dict[str, ModuleNode]:
    """Module nodes with metadata; each parameter names its stored tensor (shared ones name the same);
    ``call`` (and ``kwargs``): how the model calls it (``_CallShapes``), where it does."""
    inits = verify_all(model, ids) if verify else {}
    sizes: dict[str, dict] = {}  # size_arguments by class and arguments
    nodes: dict[str, ModuleNode] = {}
    for name, m in model.named_modules():
        prefix = f"{name}." if name else ""
        params = {k: {"shape": list(p.shape), "dtype": serial.dtype_name(p.dtype),
                      "requires_grad": p.requires_grad, "tensor": aliases[prefix + k]}
                  for k, p in m._parameters.items() if p is not None}
        buffers = {k: {"shape": list(b.shape), "dtype": serial.dtype_name(b.dtype),
                       "persistent": k not in m._non_persistent_buffers_set}
                   for k, b in m._buffers.items() if b is not None}
        init = inits.get(name, {"status": "unrecovered", "reason": "verification skipped"})
        init = {k: v for k, v in init.items() if k != "class"}
        meta = {
            "name": name,
            "class": qualname(type(m)),
            "init": init,
            "params": params,
            "buffers": buffers,
            "num_params": sum(p.numel() for p in m.parameters()),
            "own_params": sum(p.numel() for p in m._parameters.values() if p is not None),
        }
        unset = {kind: [k for k, t in table.items() if t is None]
                 for kind, table in (("params", m._parameters), ("buffers", m._buffers))}
        if any(unset.values()):  # registered as None (Conv2d(bias=False).bias): a rebuilt module has them too
            meta["unset"] = {kind: names for kind, names in unset.items() if names}
        meta.update(call_shapes.get(id(m), {}))
        if meta.get("call") in ("unary", "tensors"):
            parameters = _forward_parameters(m)
            if parameters is not None:
                meta["parameters"] = parameters
        if init.get("status") == "verified" and meta["class"].startswith("torch.nn."):  # rebuilt as instances
            key = meta["class"] + json.dumps(init["args"], sort_keys=True)
            if key not in sizes:
                sizes[key] = size_arguments({"class": meta["class"], **init}, m)
            if sizes[key]:
                meta["sizes"] = sizes[key]
        children = [ids[id(c)] for c in m.children() if ids.get(id(c), "").startswith(name)]
        nodes[name] = ModuleNode(name, meta, [c for c in children if c != name])
    json.dumps({n: v.meta for n, v in nodes.items()})  # fail early if anything is not JSON
    return nodes


def module_ancestors(owner: str) -> list[str]:
    """The root ("") and every module on the path to ``owner``, outermost first."""
    parts = owner.split(".") if owner else []
    return [""] + [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def annotate_io(ir: IR) -> None:
    """Each module's input and output shapes: values whose producer and consumer lie on different sides
    of its boundary (an edge from owner a to owner b crosses the modules containing exactly one of them)."""
    produced = ir.graph.producers()
    owner_of = {op.name: op.owner for op in ir.graph.ops}
    ins: dict[str, dict[str, None]] = {n: {} for n in ir.modules}
    outs: dict[str, dict[str, None]] = {n: {} for n in ir.modules}
    counts: dict[str, int] = dict.fromkeys(ir.modules, 0)

    def cross(ref: str, src: list[str], dst: list[str]) -> None:
        s, d = set(src), set(dst)
        for m in dst:
            if m not in s and m in ins:
                ins[m][ref] = None
        for m in src:
            if m not in d and m in outs:
                outs[m][ref] = None

    for op in ir.graph.ops:
        dst = module_ancestors(op.owner)
        for m in dst:
            if m in counts:
                counts[m] += 1
        for ref in op.inputs:
            p = produced[ref]
            if isinstance(p, Placeholder):
                if p.kind == INPUT:
                    cross(ref, [], dst)
                continue
            cross(ref, module_ancestors(owner_of[ref]), dst)
    for ref in serial.node_refs(ir.graph.outputs):
        if ref in owner_of:
            cross(ref, module_ancestors(owner_of[ref]), [])
    def tensors_only(refs: dict[str, None]) -> list[str]:  # symbolic sizes flowing in are not data
        return [serial.shape_text(produced[r].meta) for r in refs
                if isinstance(produced[r].meta, dict) and "symint" not in produced[r].meta]

    for name, node in ir.modules.items():
        node.meta["inputs"] = tensors_only(ins[name])
        node.meta["outputs"] = tensors_only(outs[name])
        node.meta["num_ops"] = counts[name]
