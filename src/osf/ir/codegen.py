"""Rebuild an executable ``nn.Module`` from an IR by generating Python source for its forward.

The rebuilt model mirrors the original hierarchy with light containers (one per original module,
named after its class) that hold the parameters and buffers under the original names, so
``state_dict()`` keys are the original's. The forward is generated code calling the captured ATen ops;
training flags read the owner module's ``.training`` live, and device constants follow the inputs.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import inspect
import itertools
import keyword
import linecache
import math
import pickle
import re
import types
import uuid
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

import sympy
import torch
import torch.utils._pytree as pytree
from sympy.parsing.sympy_parser import parse_expr
from torch import nn
from torch.utils.hooks import RemovableHandle

from . import conditions, serial
from . import ops as op_rules
from .construct import qualname
from .errors import FormatError, InputError, ModuleReplacedError
from .graph import BUFFER, CONST, INPUT, IR, PARAM, Graph, OpNode, Placeholder, import_class


class IRContainer(nn.Module):
    """Stands in the rebuilt hierarchy for one original module: holds its parameters, buffers and
    children. Only the root's forward runs (generated from the IR)."""

    osf_class: str = ""

    def extra_repr(self) -> str:
        sizes = self._osf_sizes()
        return f"osf: {self.osf_class}" + (f", {sizes}" if sizes else "")

    def _osf_sizes(self) -> str:
        """The shapes of this module's own parameters and buffers (``weight 100x512, bias 100``): where a
        rebuilt module shows its widths, having no constructor attributes such as ``groups``."""
        tensors = {**self._parameters, **self._buffers}
        return ", ".join(f"{name} {'x'.join(map(str, t.shape))}" for name, t in tensors.items()
                         if t is not None and t.dim() > 0)

    def __getattr__(self, name: str) -> Any:
        # nn.Module's lookup (same order), with an error that says what a rebuilt module holds
        state = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            entries = state.get(table)
            if entries is not None and name in entries:
                return entries[name]
        message = f"'{type(self).__name__}' object has no attribute '{name}'"
        if name.startswith("_") or "_modules" not in state:
            raise AttributeError(message)
        sizes = self._osf_sizes()
        raise AttributeError(
            f"{message}: it stands for a {self.osf_class} in a model rebuilt by osf, which keeps the original "
            "module's submodules, parameters and buffers but not its other attributes (constructor arguments "
            "such as groups or num_heads would be stale once a subnet's widths shrink; those that are a size of "
            "one of its tensors, such as in_features, are read from it); "
            + (f"read sizes from its tensors ({sizes}), e.g. .weight.shape" if sizes
               else "read sizes from the tensors of its submodules"))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module called on its own (by a module of yours put in around it, or a hook's call site):
        the ops of its first call in its model's IR, called as its model called it (tensors where it passed
        tensors, the same constants: ``Blueprint.standalone``), returning what that call returned; a
        torch.nn layer that cannot run so runs its class's forward on its tensors."""
        _, root = self._osf_model()
        fn: Any = Unreplaceable("it is no longer part of the model osf built it in")
        if root is not None and root is not self:
            try:
                path = _path_in(root, self)
                cache = root.__dict__.setdefault("_osf_standalone", {})  # emptied when a module is put in
                if (path, self.training) not in cache:
                    try:
                        cache[path, self.training] = root._osf_blueprint.standalone(root, path, self.training)
                    except Unreplaceable as e:
                        cache[path, self.training] = e
                fn = cache[path, self.training]
            except Unreplaceable as e:
                fn = e
        if isinstance(fn, Unreplaceable):
            original = _torch_layer_class(self.osf_class)
            if original is not None:
                return original.forward(self, *args, **kwargs)
            raise RuntimeError(f"{type(self).__name__} (osf: {self.osf_class}) of a model rebuilt by osf cannot run "
                               f"on its own: {fn}; call the root model, whose generated forward runs every module")
        signature = fn.__osf_signature__
        inputs = bind_call(signature, args, kwargs, fn.__osf_parameters__)
        if inputs is None:
            if signature["args"] == [{"input": 0}] and all("const" in e for e in signature["kwargs"].values()):
                keywords = ", ".join(f"{k}={e['const']!r}" for k, e in signature["kwargs"].items())
                how = "on one tensor" + (f" with {keywords}" if keywords else "")
            else:
                how = (f"as {describe_call(signature)}, where x0, x1, ... are tensors (the same tensor where a "
                       "name repeats)")
            defaults = " (arguments may be given by name, and left out where it passed their default)" \
                if fn.__osf_parameters__ else ""
            raise TypeError(f"{type(self).__name__} (osf: {self.osf_class}) of a model rebuilt by osf runs on its own "
                            f"as its model called it{defaults}: {how}")
        if not all(isinstance(x, torch.Tensor) for x in inputs):  # torch.fx.symbolic_trace's proxies
            return pack_output(signature, fn(self, _device([], root), *inputs), fn.__osf_returns__)
        for x, sizes in zip(inputs, fn.__osf_inputs__):
            if sizes is not None and (x.dim() != len(sizes)
                                      or any(s is not None and s != n for s, n in zip(sizes, x.shape))):
                shown = "(" + ", ".join("any" if s is None else str(s) for s in sizes) + ")"
                raise InputError(f"{type(self).__name__} (osf: {self.osf_class}) of a model rebuilt by osf runs on its "
                                 f"own the ops its model's call ran, on a tensor of shape {shown} as traced; got "
                                 f"{tuple(x.shape)}. Call it on that shape, or trace the model at the sizes you "
                                 "need (or with dynamic_batch / dynamic_seq / dynamic_spatial)")
        return pack_output(signature, fn(self, inputs[0].device, *inputs), fn.__osf_returns__)

    def __getitem__(self, key: int | str) -> nn.Module:
        """A child as the original ``nn.Sequential`` / ``nn.ModuleList`` / ``nn.ModuleDict`` indexed it: by
        name (``blocks["attn"]``) or by its position among the original's children (``features[3]``, also
        where a Sequential's children have names); negative ints count from the end of the children it has.
        A subnet keeps the original's names and positions, without the children its arch dropped."""
        return self._modules[self._osf_child_name(key)]

    def __setitem__(self, key: int | str, module: nn.Module) -> None:
        """Put ``module`` in place of a child named as by ``__getitem__`` (``features[3] = nn.Identity()``)."""
        setattr(self, self._osf_child_name(key), module)

    def _osf_child_name(self, key: int | str) -> str:
        children = self._modules
        if not children:
            raise TypeError(f"'{type(self).__name__}' (osf: {self.osf_class}) object is not subscriptable: it has no "
                            "submodules")
        if isinstance(key, int) and key < 0 and -key <= len(children):
            return list(children)[key]
        name = key
        if isinstance(key, int) and not isinstance(key, bool):
            original = self._osf_original_children()
            name = original[key] if 0 <= key < len(original) else str(key)
        if isinstance(name, str) and name in children:
            return name
        shown = ", ".join(repr(n) for n in list(children)[:12]) + (", ..." if len(children) > 12 else "")
        error = IndexError if isinstance(key, int) else KeyError  # as nn.ModuleList / nn.ModuleDict raise
        raise error(f"{type(self).__name__} (osf: {self.osf_class}) has no submodule {key!r}; its submodules, by "
                    f"their original names: {shown} (a subnet lacks the ones its arch dropped)")

    def _osf_model(self) -> tuple[_ModelLink | None, RebuiltModel | None]:
        """The link this module shares with the other modules of its model, and that model's root (None
        once it is gone)."""
        link = vars(self).get("_osf_link")
        return link, link.root() if link is not None and link.root is not None else None

    def _osf_original_children(self) -> list[str]:
        """The names of the original module's children in order, from its model's IR (a subnet's dropped ones
        included); an empty list once the module is no longer part of that model."""
        _, root = self._osf_model()
        if root is None:
            return []
        try:
            return root._osf_blueprint.child_names(_path_in(root, self) if root is not self else "")
        except Unreplaceable:
            return []

    def __iter__(self) -> Iterator[nn.Module]:
        """The submodules, in order (as iterating an ``nn.Sequential`` / ``nn.ModuleList`` gives them)."""
        return iter(self._modules.values())

    def __len__(self) -> int:
        return len(self._modules)

    def __bool__(self) -> bool:  # a module is true even without submodules (``__len__`` would make it false)
        return True

    def __setattr__(self, name: str, value: Any) -> None:
        children = self.__dict__.get("_modules")
        if children is not None and name in children and children[name] is not value:
            self._osf_check_replacement(name, value)
        nn.Module.__setattr__(self, name, value)  # not super(): a train() sets an attribute on every module

    def __delattr__(self, name: str) -> None:
        if name in self.__dict__.get("_modules", ()):
            self._osf_check_replacement(name, None)
        nn.Module.__delattr__(self, name)

    def add_module(self, name: str, module: nn.Module | None) -> None:
        children = self.__dict__.get("_modules")
        if children is not None and name in children and children[name] is not module:
            self._osf_check_replacement(name, module)
        nn.Module.add_module(self, name, module)

    def _osf_check_replacement(self, name: str, value: Any) -> None:
        """A child may give way to any module where the old one was called on tensors and constants and
        returned one tensor (alone or in a tuple of constants): the root generates its forward again at its
        next call, calling the new module as the old one was called, where its ops ran. Refused
        (``ModuleReplacedError``) where that cannot hold, and in a supernet's rebuilt model."""
        child = self._modules[name]
        original = getattr(child, "osf_class", None) or qualname(type(child))
        state = vars(self)
        link, root = self._osf_model()
        if value is None:
            why = ("removed: the generated forward runs its ops (nn.Identity() in its place passes its input "
                   "through)")
        elif state.get("_osf_pinned", False):
            why = ("replaced: a supernet runs its subnets' code on the modules it was built with; replace it in "
                   "a subnet extracted from the supernet (supernet.extract(arch)), or in the original model "
                   "before building the supernet")
        elif not isinstance(value, nn.Module):
            why = f"replaced by a {qualname(type(value))}: only a module can take its place"
        elif root is None:
            why = "replaced: the model it belongs to no longer exists"
        else:
            try:
                parent = _path_in(root, self) if self is not root else ""
                path = f"{parent}.{name}" if parent else name
                problem = root._osf_blueprint.replacement_problem(path, value)
            except Unreplaceable as e:
                problem = str(e)
            if problem is None:
                if isinstance(child, IRContainer):
                    child.__dict__["_osf_path"] = path  # its place in the IR, wherever it goes now
                link.paths.add(path)
                link.changed(root)
                return
            why = f"replaced by a {qualname(type(value))}: {problem}"
        raise ModuleReplacedError(f"submodule '{name}' (osf: {original}) of this model rebuilt by osf cannot be {why}")

    def _osf_hooked(self, kind: str) -> None:
        """A hook was registered on this module. Where its model can call it on its own (tensors and
        constants in, one tensor out: ``Blueprint.standalone``), the root generates its forward again
        calling it, so its hooks run; elsewhere (a supernet's modules, which its programs run; a module
        called on other objects) a warning says the hook would never be called."""
        state = vars(self)
        link, root = self._osf_model()
        if isinstance(self, RebuiltModel) and not state.get("_osf_inner"):
            return  # the root's own forward: its hooks run
        why = "a supernet runs its programs on its modules, never calling them"
        if root is not None and not state.get("_osf_pinned") and not isinstance(self, RebuiltModel):
            try:
                path = _path_in(root, self)
                root._osf_blueprint.standalone_graphs(root, path)
            except Unreplaceable as e:
                why = str(e)
            else:
                link.called.add(path)
                link.changed(root)
                return
        warnings.warn(f"a {kind} on {type(self).__name__} (osf: {self.osf_class}) will never be called: in a "
                      "model rebuilt by osf the root's generated forward runs the ops of its modules itself, and "
                      f"this one cannot be called on its own ({why}). Hook the root model (a supernet: the "
                      "Supernet itself), or make the original model return the values you need and trace it "
                      "again", UserWarning, stacklevel=3)

    def _osf_unhooked(self) -> None:
        """A hook of this module was removed: with none left, its model runs its ops again instead of calling
        it (a summary tool that hooked every module for one call leaves no module-by-module forward)."""
        if _has_hooks(self):
            return
        link, root = self._osf_model()
        path = vars(self).get("_osf_path")
        if root is not None and path in link.called:
            link.called.discard(path)
            link.changed(root)


def _has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward or backward hooks of its own."""
    return bool(module._forward_pre_hooks or module._forward_hooks or module._backward_pre_hooks
                or module._backward_hooks)


def pin_modules(root: nn.Module) -> None:
    """Mark ``root``'s containers as read through the modules it was built with (an extracted subnet's
    or a supernet's forward holds them): replacing any of them is refused, even by its own class."""
    for module in root.modules():
        if isinstance(module, IRContainer):
            module.__dict__["_osf_pinned"] = True


class _UnhookingHandle(RemovableHandle):
    """The handle of a hook on a rebuilt module: removing the module's last hook stops its model calling it
    as a module (``IRContainer._osf_unhooked``)."""
    _osf_module: weakref.ref

    def remove(self) -> None:
        super().remove()
        module = self._osf_module()
        if module is not None:
            module._osf_unhooked()


def _warning_hook_registration(name: str, kind: str) -> Callable:
    """``nn.Module``'s hook registration ``name``, then ``_osf_hooked`` (the module is called, or a warning
    says the hook could never run)."""
    register = getattr(nn.Module, name)

    def method(self: IRContainer, *args: Any, **kwargs: Any) -> Any:
        handle = register(self, *args, **kwargs)
        self._osf_hooked(kind)
        if type(handle) is RemovableHandle:
            handle.__class__ = _UnhookingHandle
            handle._osf_module = weakref.ref(self)
        return handle
    method.__name__ = method.__qualname__ = name
    return method


for _name, _kind in (("register_forward_pre_hook", "forward pre-hook"), ("register_forward_hook", "forward hook"),
                     ("register_full_backward_pre_hook", "backward pre-hook"),
                     ("register_full_backward_hook", "backward hook")):
    setattr(IRContainer, _name, _warning_hook_registration(_name, _kind))
del _name, _kind


class RebuiltModel(IRContainer):
    """Root of a model rebuilt from an IR."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.run_generated(self._osf_train_fn, self._osf_eval_fn, args, kwargs)

    def run_generated(self, train_fn: Callable, eval_fn: Callable | None, args: tuple, kwargs: dict) -> Any:
        """Bind the inputs as traced and run ``train_fn`` (training mode) or ``eval_fn`` (generated by
        ``compile_graph`` over this model's tensors) on them; returns the model's output structure."""
        if self.training and self._osf_train_error:
            raise InputError(f"{self._osf_train_error}; call .eval() first, or trace with inputs that work "
                             "in training mode (e.g. targets)")
        if args and isinstance(args[0], torch.fx.Proxy) and train_fn is self._osf_train_fn \
                and "_osf_by_modules" not in self.__dict__:  # torch.fx.symbolic_trace
            return self._osf_run_by_modules(args, kwargs)
        if self._osf_link.pending and train_fn is self._osf_train_fn:  # a submodule was replaced since
            self._osf_follow_replacements()
            train_fn, eval_fn = self._osf_train_fn, self._osf_eval_fn
        values = self._osf_bind(args, kwargs)
        if self.training or eval_fn is None:
            fn, spec = train_fn, self._osf_out_spec
        else:
            fn, spec = eval_fn, self._osf_eval_out_spec
        outs = fn(self, _device(values, self), *values)
        return outs[0] if spec.is_leaf() else pytree.tree_unflatten(list(outs), spec)

    def _osf_run_by_modules(self, args: tuple, kwargs: dict) -> Any:
        """The forward under ``torch.fx.symbolic_trace``: every module that can run on its own is called, as
        if each had a hook, so that FX-based tools see the module hierarchy (torchvision's
        ``create_feature_extractor`` finds ``layer3`` by the module path of its nodes); the model then
        runs its ops inline again."""
        link, blueprint = self._osf_link, self._osf_blueprint
        before = set(link.called)
        for path in blueprint.parsed_structure().modules:
            try:
                if not path or vars(self.get_submodule(path)).get("_osf_pinned"):
                    continue
                blueprint.standalone_graphs(self, path)
            except (Unreplaceable, AttributeError):
                continue
            link.called.add(path)
        link.changed(self)
        self.__dict__["_osf_by_modules"] = True
        try:
            return self.run_generated(self._osf_train_fn, self._osf_eval_fn, args, kwargs)
        finally:
            del self.__dict__["_osf_by_modules"]
            link.called = before
            link.changed(self)

    def _osf_follow_replacements(self) -> None:
        """Generate the forward again over this model's own IR, calling each module put in place of one
        of the IR's (``MODULE_CALL``) instead of running that module's ops; tensors are read by attribute."""
        ir = self._osf_blueprint.parsed_structure()
        replaced = called_paths(self, ir)
        try:
            fns = [None if graph is None else compile_graph(ir, with_module_calls(ir, graph, replaced))
                   for graph in (ir.graph, ir.eval_graph)]
        except Unreplaceable as e:  # each was checked alone when put in
            raise ModuleReplacedError(f"the modules put in at {', '.join(replaced)} cannot all be called: "
                                      f"{e}") from None
        self.__dict__["_osf_train_fn"], self.__dict__["_osf_eval_fn"] = fns
        self._osf_link.pending = False

    def __reduce_ex__(self, protocol: Any) -> tuple:
        """Pickled (``torch.save(model)``, multiprocessing) as the IR's structure (JSON), the tensors and
        each module's attributes: its classes are generated, so unpickling regenerates them with osf."""
        return _unpickle, _pickled_state(self)

    def __deepcopy__(self, memo: dict) -> "RebuiltModel":
        """A copy as of any module (its generated code and blueprint shared, not regenerated)."""
        memo[id(self._osf_blueprint)] = self._osf_blueprint
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(self.__dict__, memo))
        new._osf_link.root = weakref.ref(new)
        return new

    def __copy__(self) -> "RebuiltModel":
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def _osf_bind(self, args: tuple, kwargs: dict) -> list:
        leaves: Any = args  # n positional tensors as traced: pytree would find this structure, at a higher cost
        if kwargs or len(args) != self._osf_positional or not all(isinstance(a, torch.Tensor) for a in args):
            leaves, spec = pytree.tree_flatten((args, kwargs))
            if spec != self._osf_in_spec:
                args, kwargs = _rebind(args, kwargs, self._osf_in_spec, self._osf_signature)
                leaves, spec = pytree.tree_flatten((args, kwargs))
                if spec != self._osf_in_spec:
                    raise InputError(f"inputs do not match the traced structure: expected {self._osf_in_spec}, "
                                     f"got {spec}; call the model as it was traced")
        values = []
        # under jit.trace sizes are tensors (comparing them warns), under fx's symbolic trace proxies
        checking = not torch.jit.is_tracing() and "_osf_by_modules" not in self.__dict__
        sizes = self._osf_fixed_sizes if checking else {}
        for leaf, want in zip(leaves, self._osf_user_leaves):
            if "const" in want:
                expected = serial.decode_arg(want["const"], {})
                if isinstance(leaf, torch.Tensor):  # comparing it would be a tensor, or an ambiguous-truth error
                    raise InputError(f"a tensor was given where the model was traced with the non-tensor value "
                                     f"{expected!r}, which the graph holds as a constant; pass that value, or "
                                     "osf.trace again with a tensor there")
                if leaf != expected:
                    raise InputError(f"non-tensor input {leaf!r} differs from the traced value {expected!r}; "
                                     "osf.trace again with the value you need")
            else:
                shape = sizes.get(want["placeholder"])
                if shape is not None:
                    if not isinstance(leaf, torch.Tensor):
                        raise InputError(f"input '{want['placeholder']}' was traced as a tensor with {shape.rank} "
                                         f"dims; got {type(leaf).__name__} {str(leaf)[:40]}: pass a tensor")
                    if (leaf.dim() != shape.rank or tuple([leaf.shape[d] for d in shape.dims]) != shape.sizes
                            or any(not lo <= leaf.shape[d] <= hi for d, lo, hi in shape.bounds)):
                        raise InputError(_size_error(want["placeholder"], leaf, shape,
                                                     want["placeholder"] in self._osf_fixed_batch))
                values.append(leaf)
        if checking and self._osf_equal_sizes and not torch.compiler.is_exporting():  # export checks its own
            _check_equal_sizes(self._osf_equal_sizes, leaves, self._osf_user_leaves)
        if checking and self._osf_size_conditions is not None:
            if torch.compiler.is_exporting():  # sizes are symbolic: the conditions become export's guards
                self._osf_size_conditions.assert_symbolic(leaves)
            else:
                self._osf_size_conditions.check(leaves)
        return values


def _equal_sizes(ir: IR) -> tuple[tuple[str, tuple[tuple[str, int], ...]], ...]:
    """The symbols torch.export gave to several input dims, each with those ``(input, dim)``: export
    unified them because the forward relies on their sizes being equal (a branch on a square image, a
    mask as long as the tokens), so the graph holds only while they are."""
    uses: dict[str, list[tuple[str, int]]] = {}
    for p in ir.graph.placeholders:
        if p.kind == INPUT and isinstance(p.meta, dict):
            for d, sym in enumerate(p.meta.get("sym") or []):
                if sym:
                    uses.setdefault(sym, []).append((p.name, d))
    return tuple((sym, tuple(dims)) for sym, dims in uses.items() if len(dims) > 1)


def _check_equal_sizes(groups: tuple, leaves: list, wants: list) -> None:
    by_name = {want["placeholder"]: leaf for leaf, want in zip(leaves, wants) if "placeholder" in want}
    for sym, dims in groups:
        sizes = [(name, d, by_name[name].shape[d]) for name, d in dims if isinstance(by_name.get(name), torch.Tensor)]
        if any(n != sizes[0][2] for *_, n in sizes[1:]):
            listed = ", ".join(f"'{name}' dim {d}: {n}" for name, d, n in sizes)
            raise InputError(f"input sizes {listed} differ, but the captured graph holds only while they are equal "
                             f"(torch.export gave them one size, {sym}: the forward relies on it, e.g. a branch on "
                             "a square image); call it with equal sizes there, or trace with an example in which "
                             "they differ")


class _InputShape(NamedTuple):
    """What a tensor input's shape must satisfy for the captured graph to hold."""
    rank: int
    dims: tuple[int, ...]  # the dims torch.export left static
    sizes: tuple[int, ...]  # their traced sizes
    bounds: tuple[tuple[int, int, float], ...]  # (dim, lowest, highest) export put on symbolic dims


def _fixed_sizes(ir: IR) -> dict[str, _InputShape]:
    """Per tensor input, what its shape must satisfy (bounds from ``ir.info["input_ranges"]``)."""
    ranges = ir.info.get("input_ranges") or {}
    out = {}
    for p in ir.graph.placeholders:
        if p.kind == INPUT and isinstance(p.meta, dict) and isinstance(p.meta.get("shape"), list):
            shape = p.meta["shape"]
            dims = tuple(d for d, s in enumerate(p.meta.get("sym") or [None] * len(shape)) if not s)
            bounds = tuple((int(d), 0 if lo is None else lo, math.inf if hi is None else hi)
                           for d, (lo, hi) in ranges.get(p.name, {}).items())
            out[p.name] = _InputShape(len(shape), dims, tuple(shape[d] for d in dims), bounds)
    return out


def size_span(lowest: int | None, highest: int | None) -> str:
    """Bounds on a dim's size as words: ``at least 33``, ``at most 512``, ``33 to 512``."""
    if highest is None:
        return f"at least {lowest}"
    return f"at most {highest}" if not lowest else f"{lowest} to {highest}"


def _size_error(name: str, leaf: torch.Tensor, shape: _InputShape, batch_requested: bool) -> str:
    """Why input ``name`` cannot run: another rank, another size in a dim the graph fixed, or a size out of
    the bounds export put on a symbolic dim."""
    if leaf.dim() != shape.rank:
        return (f"input '{name}' has {leaf.dim()} dims {tuple(leaf.shape)}, but the model was traced with "
                f"{shape.rank}; call it with inputs shaped as traced")
    for d, lo, hi in shape.bounds:
        if not lo <= leaf.shape[d] <= hi:
            span = size_span(lo, None if hi == math.inf else hi)
            return (f"input '{name}' has size {leaf.shape[d]} in dim {d}, but the captured graph holds only for "
                    f"sizes {span} there: torch.export kept the dim symbolic within those bounds (the forward "
                    f"branches on it, for instance), so another size could give a silently wrong output; call it "
                    f"within them, or trace with an example of the size you will run")
    d, traced = next((d, n) for d, n in zip(shape.dims, shape.sizes) if leaf.shape[d] != n)
    if d == 0 and batch_requested:
        return (f"input '{name}' has batch {leaf.shape[0]}, but the model was traced with a fixed batch of "
                f"{traced}: torch.export could not keep it dynamic (the forward ties it to that size), so the "
                f"graph holds only for it; call it with batch {traced}, or trace with the batch you will run")
    option = ("dynamic_batch" if d == 0 else "dynamic_seq" if d == 1
              else "dynamic_spatial" if leaf.is_floating_point() and shape.rank >= 3 else None)
    remedy = (f"trace with {option}=True (through osf.Supernet: trace_options={{'{option}': True}}), which keeps "
              "the dim symbolic where the model allows" if option else "trace with an example of the size you "
              "will run")
    return (f"input '{name}' has size {leaf.shape[d]} in dim {d}, but the model was traced at {traced} and "
            f"that dim is a constant of the captured graph: sizes the forward computed from it (an upsampling "
            f"back to the input's size, a reshape, position ids) are baked in, so another size could give a "
            f"silently wrong output. Call it with size {traced} there, or {remedy}; a size the weights fix "
            f"(image channels, features) cannot change")


_MODULE_STATE = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")  # remade on unpickling


def _pickled_state(root: RebuiltModel) -> tuple[dict, dict, dict, dict]:
    """(IR structure, tensors by canonical name, each module's own attributes by path, the modules put in
    since osf built it by path: pickled as they are) of ``root``, after checking that it otherwise still is
    the model osf built: another tensor put in since would be lost."""
    blueprint = root._osf_blueprint
    aliases = blueprint.structure_json()["aliases"]
    modules = dict(root.named_modules(remove_duplicate=False))
    put_in: dict[str, nn.Module] = {}
    for path, m in modules.items():
        inner = next((p for p in put_in if path.startswith(f"{p}.")), None)
        if inner is not None and isinstance(m, IRContainer):
            raise pickle.PicklingError(
                f"cannot pickle this model rebuilt by osf: the module put in at '{inner}' holds '{path}', a module "
                "osf rebuilt, which cannot be pickled on its own; save its state_dict(), or torch.export it")
        if inner is None and not isinstance(m, IRContainer):
            if path not in root._osf_link.paths:
                raise pickle.PicklingError(
                    f"cannot pickle this model rebuilt by osf: module '{path}' is a {qualname(type(m))} put in "
                    "behind __setattr__ (into _modules), which its generated forward does not call; put it in "
                    "with setattr, or save the state_dict()")
            put_in[path] = m

    def outside(name: str) -> bool:  # not a tensor of a module put in (pickled with it)
        return not any(name.startswith(f"{p}.") for p in put_in)
    tensors: dict[str, torch.Tensor] = {}
    held = {n: t for n, t in itertools.chain(root.named_parameters(remove_duplicate=False),
                                             root.named_buffers(remove_duplicate=False)) if outside(n)}
    extra = sorted(n for n in held if n not in aliases and not n.startswith("_osf_const_"))
    missing = sorted(n for n in aliases if n not in held and outside(n))
    if extra or missing:
        raise pickle.PicklingError(
            f"cannot pickle this model rebuilt by osf: its tensors changed after osf built it (added: "
            f"{extra[:5]}, removed: {missing[:5]}); save its state_dict() instead")
    for qual, canon in aliases.items():
        if qual in held and tensors.setdefault(canon, held[qual]) is not held[qual]:
            raise pickle.PicklingError(
                f"cannot pickle this model rebuilt by osf: '{qual}' no longer shares its tensor with the "
                f"others tied to '{canon}'; save its state_dict() instead")
    tensors.update({n: t for n, t in held.items() if n.startswith("_osf_const_")})
    states = {path: {k: v for k, v in vars(m).items() if k not in _MODULE_STATE and not k.startswith("_osf_")}
              for path, m in modules.items() if isinstance(m, IRContainer) and outside(path)}
    return blueprint.structure_json(), tensors, states, put_in


def own_ir(root: RebuiltModel) -> IR | None:
    """The IR ``root`` was built from (a subnet's own, for an extracted model), holding ``root``'s current
    tensors; None when a tensor or module put in since, or a tensor of another shape or dtype, makes the
    IR's record of it wrong."""
    from .io import ir_from_json
    try:
        structure, tensors, _, put_in = _pickled_state(root)
    except pickle.PicklingError:
        return None
    if put_in:
        return None
    ir = ir_from_json(structure, "a model rebuilt by osf")
    for name, node in ir.modules.items():
        prefix = f"{name}." if name else ""
        for local, meta in itertools.chain(node.meta["params"].items(), node.meta["buffers"].items()):
            tensor = tensors[ir.aliases[prefix + local]]
            if list(tensor.shape) != meta["shape"] or serial.dtype_name(tensor.dtype) != meta["dtype"]:
                return None
            if "requires_grad" in meta:
                meta["requires_grad"] = tensor.requires_grad
    ir.tensors = tensors
    return ir


def _unpickle(structure: dict, tensors: dict[str, torch.Tensor], states: dict[str, dict],
              put_in: dict[str, nn.Module] | None = None) -> RebuiltModel:
    """The model ``_pickled_state`` describes, its forward generated again (the modules put in are put
    in again; the tensors they replaced, which only they held, are stood in for by zeros until then)."""
    from .io import ir_from_json
    ir = ir_from_json(structure, "a pickled model")
    for qual, canon in ir.aliases.items():
        if canon not in tensors:
            owner, _, local = qual.rpartition(".")
            meta = ir.modules[owner].meta
            meta = meta["params"].get(local) or meta["buffers"][local]
            tensors[canon] = torch.zeros(meta["shape"], dtype=serial.dtype_from_name(meta["dtype"]))
    root = Blueprint(ir).instantiate(tensors, adopt=True)
    for path, state in states.items():
        vars(root.get_submodule(path) if path else root).update(state)
    for path, module in (put_in or {}).items():
        parent, _, local = path.rpartition(".")
        setattr(root.get_submodule(parent), local, module)
    for module in root.modules():
        if isinstance(module, IRContainer) and module is not root and _has_hooks(module):
            module._osf_hooked("hook")  # its hooks came back with its attributes: called again
    return root


def traced_signature(ir: IR) -> inspect.Signature | None:
    """The original forward's parameter names, for tools that read ``inspect.signature`` (``torch.export``
    names its input guards after them; ``*args, **kwargs`` broke ``ExportedProgram.module()``): the traced
    positional inputs required, every other name defaulting to None (a missing traced input still gets
    ``InputError``); traced keywords the original took through ``**kwargs`` are keyword-only. None when the
    original forward had ``*args``."""
    names = ir.info.get("signature")
    positional, named = serial.spec_children(load_spec(ir.info["in_spec"]))
    n_pos = positional.num_children
    if names is None or len(names) < n_pos:
        return None
    extra = [k for k in (named.context or []) if k not in names]
    if not all(isinstance(n, str) and n.isidentifier() and not keyword.iskeyword(n) for n in names + extra):
        return None
    kind = inspect.Parameter
    return inspect.Signature([kind("self", kind.POSITIONAL_OR_KEYWORD)]
                             + [kind(n, kind.POSITIONAL_OR_KEYWORD) for n in names[:n_pos]]
                             + [kind(n, kind.POSITIONAL_OR_KEYWORD, default=None) for n in names[n_pos:]]
                             + [kind(k, kind.KEYWORD_ONLY, default=None) for k in extra])


def _named_forward(signature: inspect.Signature) -> Callable:
    """The root's ``forward`` with the traced parameter names: spelt out in its code where every input is
    a required positional one (``forward(self, x)``: ``torch.fx.symbolic_trace`` reads the code object and
    makes ``*args`` a single proxy), else ``*args, **kwargs`` with that ``__signature__``."""
    names = list(signature.parameters)[1:]
    if all(p.kind == p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in signature.parameters.values()):
        listed = ", ".join(names)
        namespace: dict[str, Any] = {}
        exec(f"def forward(self, {listed}):\n"
             f"    return self.run_generated(self._osf_train_fn, self._osf_eval_fn, ({listed},), {{}})\n",
             {}, namespace)
        return namespace["forward"]

    def forward(self: RebuiltModel, *args: Any, **kwargs: Any) -> Any:
        return self.run_generated(self._osf_train_fn, self._osf_eval_fn, args, kwargs)
    forward.__signature__ = signature
    return forward


def _device(values: list, model: nn.Module) -> torch.device:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _rebind(args: tuple, kwargs: dict, in_spec: pytree.TreeSpec, names: list[str] | None) -> tuple[tuple, dict]:
    positional, named = serial.spec_children(in_spec)
    n_pos = positional.num_children
    keys = list(named.context or [])
    given = dict(kwargs)
    args = list(args)
    if names is not None:
        if len(args) > max(n_pos, len(names)):  # zip below would drop the surplus silently
            raise InputError(f"the model's forward takes {len(names)} input(s) ({', '.join(names)}); got "
                             f"{len(args)} positional")
        if len(args) > n_pos:
            for name, value in zip(names[n_pos:], args[n_pos:]):
                if name in given:
                    raise InputError(f"input '{name}' given twice")
                given[name] = value
            args = args[:n_pos]
        while len(args) < n_pos and names[len(args)] in given:
            args.append(given.pop(names[len(args)]))
    missing = [k for k in keys if k not in given]
    extra = [k for k, v in given.items() if k not in keys and v is not None]
    if len(args) != n_pos or missing or extra:
        raise InputError(f"the model was traced with {n_pos} positional input(s) and keyword input(s) {keys}; "
                         f"got {len(args)} positional, missing {missing}, unexpected {extra}")
    return tuple(args), {k: given[k] for k in keys}


def _positional_arity(spec: pytree.TreeSpec) -> int | None:
    """``n`` when the traced inputs are ``n`` positional leaves and no keywords (then ``n`` tensors bind
    without flattening), else None."""
    n = spec.num_leaves
    return n if pytree.tree_flatten(((0,) * n, {}))[1] == spec else None


def load_spec(data: Any) -> pytree.TreeSpec:
    """Rebuild a stored pytree spec; a custom output class that cannot be imported is a FormatError."""
    from .graph import import_class

    def resolve(path: str) -> type:
        try:
            return import_class(path)
        except (ImportError, AttributeError) as e:
            raise FormatError(f"the model's inputs/outputs use class '{path}', which cannot be imported ({e}); "
                              "install the package that defines it") from None

    try:
        return serial.spec_from_json(data, resolve)
    except (KeyError, TypeError) as e:
        raise FormatError(f"corrupt input/output structure in the IR: {e}") from None


def _container_class(class_path: str, cache: dict[str, type], base: type = IRContainer,
                     sizes: dict[str, list] | None = None) -> type:
    key = f"{base.__name__}:{class_path}" + (f":{sorted(sizes.items())}" if sizes else "")
    if key not in cache:
        short = class_path.rpartition(".")[2] or "Module"
        namespace: dict[str, Any] = {"osf_class": class_path}
        original = _torch_layer_class(class_path)
        bases = (base,) if original is None else (base, original)
        if original is not None:
            namespace.update(_module_behaviour(base, original))
            for name, (tensor, dim) in (sizes or {}).items():  # capture.size_arguments
                namespace[name] = _size_property(name, tensor, dim)
        cache[key] = type(short if short.isidentifier() else "Module", bases, namespace)
    return cache[key]


def _size_property(name: str, tensor: str, dim: int) -> property:
    """A constructor argument that is a size of the module's tensor (``in_features``), read from it."""
    def size(self: IRContainer) -> int:
        return (self._parameters.get(tensor) if tensor in self._parameters else self._buffers[tensor]).shape[dim]
    return property(size, doc=f"{name}: size {dim} of {tensor} (osf reads it from the tensor)")


def _torch_layer_class(class_path: str) -> type | None:
    """The ``torch.nn`` layer class a rebuilt module also derives from, so that ``isinstance(m, nn.Conv2d)``
    (weight init, freezing BatchNorm, optimizer groups by layer type) finds it instead of silently skipping
    it. Not for containers (``__getitem__``: Sequential, ModuleList, ModuleDict...), whose ``append`` /
    ``insert`` would change children the generated forward never calls, nor for classes outside torch.nn
    (importing user code, subclass hooks)."""
    if not class_path.startswith("torch.nn."):
        return None
    try:
        cls = import_class(class_path)
    except (ImportError, AttributeError):
        return None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)) or cls is nn.Module or hasattr(cls, "__getitem__"):
        return None
    return cls


def _module_behaviour(base: type, original: type) -> dict[str, Any]:
    """``nn.Module``'s own members that ``original`` overrides (``_apply``, ``__setstate__``,
    ``_load_from_state_dict``, ``__init__``, ``_version``...) and ``base`` does not: pinned back on the
    rebuilt class, so that a rebuilt module behaves as every other one (its state is its tensors, not the
    original's attributes); the original's other methods stay, reading attributes it may lack (an
    ``AttributeError`` that says so)."""
    own = {name for klass in base.__mro__ if klass not in (nn.Module, object) for name in vars(klass)}
    overridden = {name for klass in original.__mro__ if klass not in (nn.Module, object) for name in vars(klass)}
    return {name: value for name, value in vars(nn.Module).items()
            if name in overridden and name not in own
            and (not name.startswith("__") or callable(value))}


def _container_maker(cls: type) -> Callable[[], nn.Module]:
    """A fast ``cls()`` that skips ``nn.Module.__init__``: the instance state is taken from one
    constructed instance (empty dicts and sets made fresh), so it follows the torch version."""
    state = vars(cls())
    if not all(isinstance(v, (dict, set, bool, type(None))) for v in state.values()):
        return cls  # an attribute this scheme does not know how to copy
    fixed = {k: v for k, v in state.items() if not isinstance(v, (dict, set))}
    fresh = {f"kind{i}": (k, type(v)) for i, (k, v) in enumerate(state.items()) if isinstance(v, (dict, set))}
    kinds = {name: kind for name, (_, kind) in fresh.items()}
    # unrolled (no loop over the fresh containers): a few hundred ns per module of an extraction
    body = "".join(f"    state[{k!r}] = {name}()\n" for name, (k, _) in fresh.items())
    namespace: dict[str, Any] = {}
    exec(f"def make(new=new, cls=cls, fixed=fixed, {', '.join(f'{k}={k}' for k in kinds)}):\n"
         "    m = new(cls)\n    state = m.__dict__\n    state.update(fixed)\n" + body + "    return m\n",
         {"new": object.__new__, "cls": cls, "fixed": fixed, **kinds}, namespace)
    return namespace["make"]


@dataclass
class SubnetParts:
    """What a subnet of a full IR keeps, for a ``Blueprint`` made without the subnet's own IR: its modules
    (an ancestor-closed set of paths), tensor and module aliases and persistent buffers, its compiled
    forwards (reading the model's tensors through ``reads``, canonical names, from ``root._osf_homes``, and the
    owners of its ops, module paths, from ``root._osf_owners``) and a maker of its tensor-less IR (for
    pickling)."""
    modules: set[str]
    aliases: dict[str, str]
    module_aliases: dict[str, list]
    persistent: list[str]
    train_fn: Callable
    eval_fn: Callable | None
    reads: list[str]
    owners: list[str]
    structure: Callable[[], IR]
    layout: Any = None  # equal for subnets that keep the same modules and tensors (their layout is shared)


_REMEMBERED = 256  # entries of a per-supernet memo keyed by the dropped units (``remember``)


def remember(memo: dict, key: Any, value: Any, limit: int = _REMEMBERED) -> Any:
    """``memo[key] = value``, dropping the oldest entry beyond ``limit`` (archs sampled at random rarely
    share their dropped units, and each entry holds per-model lists); gives ``value``."""
    memo[key] = value
    if len(memo) > limit:
        del memo[next(iter(memo))]
    return value


_NO_TENSOR = (types.SimpleNamespace(none=None), "none")  # a ``root._osf_homes`` entry of a tensor it does not keep


class Blueprint:
    """Everything of a rebuilt model that does not depend on tensor values: container classes, parsed
    input/output structures and the compiled forward functions. Compiled once per IR structure;
    ``instantiate`` then only creates containers and attaches tensors (a subnet extracted again).

    With ``parts``, ``ir`` is the full IR of which ``parts`` describes a subnet (its forwards already
    compiled); ``cache`` then keeps what every subnet of ``ir`` shares (container classes, input/output
    structures) across the blueprints of one supernet, and the layout of each ``parts.layout``."""

    def __init__(self, ir: IR, parts: SubnetParts | None = None, cache: dict | None = None) -> None:
        self.parts = parts
        self.module_aliases = parts.module_aliases if parts is not None else ir.info.get("module_aliases", {})
        # what pickling a model needs (``RebuiltModel.__reduce_ex__``): the IR itself when it holds no
        # tensors (a subnet's structure), else its JSON now, so that the model does not keep them alive
        self._structure: IR | None = None if ir.tensors or parts is not None else ir
        self._json: dict | None = ir.to_json() if ir.tensors and parts is None else None
        self._parsed: IR | None = None
        cache = {} if cache is None else cache
        classes: dict[str, type] = cache.setdefault("classes", {})
        makers: dict[type, Callable[[], nn.Module]] = cache.setdefault("makers", {})
        if "root" not in cache:
            cache["root"] = self._root_parts(ir, classes)
        self.root_class, self._make_root, shared_attributes = cache["root"]
        layouts = cache.setdefault("layouts", {})
        layout = layouts.get(parts.layout) if parts is not None and parts.layout is not None else None
        if layout is None:
            if "tree" not in cache:
                cache["tree"] = self._make_tree(ir, classes, makers)
                cache["unset"] = [(path, {"params": "_parameters", "buffers": "_buffers"}[kind], name)
                                  for path, node in ir.modules.items()
                                  for kind, names in node.meta.get("unset", {}).items() for name in names]
            layout = self._layout(ir, parts, cache["tree"], cache["unset"])
            if parts is not None and parts.layout is not None:
                remember(layouts, parts.layout, layout)
        (self.containers, self.container_paths, self.slots, self._unset, self._home_slots, self._const_reads,
         self._owner_positions) = layout
        self._tree: list = cache["tree"]
        self._child_names: dict[str, list[str]] | None = None
        self._root_attributes = {
            **shared_attributes, "_osf_blueprint": self,
            "_osf_train_fn": compile_graph(ir, ir.graph) if parts is None else parts.train_fn,
            "_osf_eval_fn": (parts.eval_fn if parts is not None
                             else compile_graph(ir, ir.eval_graph) if ir.eval_graph is not None else None)}

    def child_names(self, path: str) -> list[str]:
        """The local names of the children of the original module at ``path``, in the original's order
        (those a subnet dropped included)."""
        if self._child_names is None:
            names: dict[str, list[str]] = {}
            for parent, _, local, _ in self._tree:
                names.setdefault(parent, []).append(local)
            self._child_names = names
        return self._child_names.get(path, [])

    @staticmethod
    def _make_tree(ir: IR, classes: dict[str, type],
                   makers: dict) -> list[tuple[str, str, str, Callable[[], nn.Module]]]:
        """Every container but the root in creation order (parents first): (parent path, path, local name,
        maker)."""
        tree = []
        for _, node in ir.walk(""):
            for child in node.children:
                meta = ir.modules[child].meta
                cls = _container_class(meta["class"], classes, sizes=meta.get("sizes"))
                if cls not in makers:
                    makers[cls] = _container_maker(cls)
                tree.append((node.name, child, child[len(node.name) + 1:] if node.name else child, makers[cls]))
        return tree

    @staticmethod
    def _layout(ir: IR, parts: SubnetParts | None, tree: list, unset: list[tuple[str, str, str]]) -> tuple:
        """(containers, their paths, tensor slots, tensors registered as None (``unset``: (module path,
        table, name) of the whole IR), and with ``parts`` where an instance's forwards read its tensors,
        constants and owner modules)."""
        alive = parts.modules if parts is not None else None
        # containers in creation order as (parent position, local name, maker); position 0 is the root
        position = {"": 0}
        containers: list[tuple[int, str, Callable[[], nn.Module]]] = []
        for parent, child, local, make in tree:
            if alive is None or child in alive:  # ``alive`` holds every ancestor of its modules
                containers.append((position[parent], local, make))
                position[child] = len(position)
        # tensor slots: (container position, or None on an alias path of a shared module, module path,
        # attribute, canonical tensor, is parameter (None: ask the tensor), persistent)
        aliases = parts.aliases if parts is not None else ir.aliases
        persistent = set(parts.persistent if parts is not None else ir.info.get("persistent", []))
        slots = []
        for qual, canon in aliases.items():
            mod_name, _, local = qual.rpartition(".")
            node = ir.modules.get(mod_name) if alive is None or mod_name in alive else None
            slots.append((position.get(mod_name), mod_name, local, canon,
                          local in node.meta["params"] if node is not None else None, qual in persistent))
        unset = [(position[path], table, name) for path, table, name in unset if path in position]
        if parts is None:
            return containers, list(position), slots, unset, None, None, None
        read_index = {canon: j for j, canon in enumerate(parts.reads)}
        first = {}
        for at, mod_name, local, canon, _, _ in slots:
            first.setdefault(canon, (read_index[canon], at, mod_name, local))
        const_reads = [(read_index[c], c) for c in read_index if c.startswith("_osf_const_")]
        return (containers, list(position), slots, unset, list(first.values()), const_reads,
                [position.get(path) for path in parts.owners])

    @staticmethod
    def _root_parts(ir: IR, classes: dict[str, type]) -> tuple[type, Callable[[], nn.Module], dict]:
        """The root's class, its maker and the root attributes that depend only on the IR's inputs and
        outputs (equal in all its subnets)."""
        root_class = _container_class(ir.modules[""].meta["class"], classes, RebuiltModel)
        signature = traced_signature(ir)
        if signature is not None:  # a class of this blueprint's own: give its forward the traced names
            root_class.forward = _named_forward(signature)
        in_spec = load_spec(ir.info["in_spec"])
        attributes = {  # plain values: what nn.Module.__setattr__ would store
            "_osf_in_spec": in_spec, "_osf_out_spec": load_spec(ir.info["out_spec"]),
            "_osf_positional": _positional_arity(in_spec),
            "_osf_eval_out_spec": load_spec(ir.info["eval_out_spec"]) if ir.eval_graph is not None else None,
            "_osf_user_leaves": ir.info["user_leaves"], "_osf_train_error": ir.info.get("train_error"),
            "_osf_fixed_batch": ir.info.get("fixed_batch") or {}, "_osf_fixed_sizes": _fixed_sizes(ir),
            "_osf_equal_sizes": _equal_sizes(ir), "_osf_size_conditions": conditions.of_ir(ir),
            "_osf_signature": ir.info.get("signature")}
        return root_class, _container_maker(root_class), attributes

    def instantiate(self, tensors: dict[str, torch.Tensor], *, share_weights: bool = False,
                    adopt: bool = False) -> RebuiltModel:
        """A model over ``tensors`` (by canonical IR name), copied unless ``share_weights``; ``adopt``: the
        tensors are fresh copies made for this model, inserted as they are (parameters stay the same
        objects). Names come from a verified IR, so children and tensors are inserted directly."""
        root = self._make_root()
        containers = [root]
        for parent, local, make in self.containers:
            m = make()
            containers[parent]._modules[local] = m
            containers.append(m)
        if self.module_aliases:
            _attach_aliases(root, dict(zip(self.container_paths, containers)), self.module_aliases)
        made: dict[str, torch.Tensor] = {}
        for position, mod_name, local, canon, is_param, persistent in self.slots:
            owner = containers[position] if position is not None else root.get_submodule(mod_name)
            tensor = tensors[canon]
            if is_param if is_param is not None else isinstance(tensor, nn.Parameter):
                if canon not in made and adopt and isinstance(tensor, nn.Parameter):
                    made[canon] = tensor
                elif canon not in made:
                    data = tensor.detach() if share_weights else tensor.detach().clone()
                    made[canon] = nn.Parameter(data, requires_grad=tensor.requires_grad)
                owner._parameters[local] = made[canon]
            else:
                if canon not in made:
                    made[canon] = tensor if share_weights or adopt else tensor.clone()
                owner._buffers[local] = made[canon]
                if not persistent:
                    owner._non_persistent_buffers_set.add(local)
        for at, table, name in self._unset:
            containers[at].__dict__[table][name] = None
        for name, t in tensors.items():
            if name.startswith("_osf_const_"):
                root.register_buffer(name, t if share_weights or adopt else t.clone(), persistent=False)
        vars(root).update(self._root_attributes)
        link = _ModelLink(root)
        for m in containers:
            m.__dict__["_osf_link"] = link
        if self.parts is not None:
            # (module, attribute) read at every call, as the generated code of a subnet's own IR reads
            # them (tools such as torch.export swap a module's tensors, even its dicts, for a while); the
            # root as None (the forward reads it as ``self``: holding itself, it would form a cycle)
            homes = [_NO_TENSOR] * len(self.parts.reads)
            for j, position, mod_name, local in self._home_slots:
                owner = containers[position] if position is not None else root.get_submodule(mod_name)
                homes[j] = (None if owner is root else owner, local)
            for j, canon in self._const_reads:
                if canon in root._buffers:
                    homes[j] = (None, canon)
            root._osf_homes = homes
            root._osf_owners = [None if p is None else containers[p] for p in self._owner_positions]
        return root

    def parsed_structure(self) -> IR:
        """The IR this blueprint was made from, without tensors (parsed once; not to be modified)."""
        if self._parsed is None:
            from .io import ir_from_json
            self._parsed = ir_from_json(self.structure_json(), "a model rebuilt by osf")
        return self._parsed

    def standalone_graphs(self, root: RebuiltModel, path: str, modes: tuple[bool, ...] = (True, False)
                          ) -> dict[bool, tuple[Graph, dict[str, str], bool]]:
        """The graphs (by training mode, for ``modes``) of the module at ``path`` of ``root`` run on its own
        (``call_subgraph``), the modules called below it called; ``Unreplaceable`` where it cannot run so."""
        ir = self.parsed_structure()
        inner = called_paths(root, ir, path)
        graphs = {True: ir.graph, False: ir.eval_graph if ir.eval_graph is not None else ir.graph}
        made: dict[int, tuple[Graph, dict[str, str], bool]] = {}  # by graph: one for both modes if they share it
        for training in modes:
            graph = graphs[training]
            if id(graph) not in made:
                made[id(graph)] = call_subgraph(ir, with_module_calls(ir, graph, inner) if inner else graph, path)
        return {training: made[id(graphs[training])] for training in modes}

    def standalone(self, root: RebuiltModel, path: str, training: bool) -> Callable:
        """The compiled forward of the module at ``path`` run on its own, in training mode or not; its
        ``__osf_signature__`` is how its model called it (``call_signature``), its ``__osf_parameters__``
        those of the original's forward (``bind_call``), its ``__osf_inputs__`` the
        shapes of the values its call took, None for the dims traced symbolic, or for a value of unknown
        shape (checked where the model calls it once: other calls may take other shapes, such as a
        bottleneck's shared ReLU)."""
        graph, views, only_call = self.standalone_graphs(root, path, (training,))[training]
        ir = self.parsed_structure()
        fn = compile_graph(ir, graph, views, preamble=["_root = self._osf_link.root()"])
        fn.__osf_signature__ = call_signature(ir.modules[path].meta)
        returns = fn.__osf_signature__["returns"]
        fn.__osf_returns__ = load_spec(returns["spec"]) if returns is not None and "spec" in returns else None
        fn.__osf_parameters__ = ir.modules[path].meta.get("parameters")
        fn.__osf_inputs__ = []
        for p in graph.placeholders if only_call else ():
            meta = p.meta if p.kind == INPUT and isinstance(p.meta, dict) else {}
            if meta.get("shape") is not None:
                symbols = meta.get("sym") or [None] * len(meta["shape"])
                fn.__osf_inputs__.append([None if sym else size for size, sym in zip(meta["shape"], symbols)])
            elif p.kind == INPUT:
                fn.__osf_inputs__.append(None)
        return fn

    def replacement_problem(self, path: str, module: nn.Module) -> str | None:
        """Why ``module`` cannot take the place of the module at ``path`` of this blueprint's models (None
        when it can: ``with_module_calls``)."""
        ir = self.parsed_structure()
        if isinstance(module, IRContainer):
            if module.osf_class != ir.modules[path].meta["class"]:
                return ("a module rebuilt by osf only runs inside its own model; put in a module of your own, or "
                        f"one rebuilt from a {ir.modules[path].meta['class']}")
            return None  # its ops are generated as the IR's, on its tensors
        if path in self.module_aliases or path in {c for c, _ in self.module_aliases.values()}:
            return "it is shared under several names in this model; replace it in the original model"
        try:
            for graph in (ir.graph, ir.eval_graph):
                if graph is not None:
                    module_calls(ir, graph, path)
        except Unreplaceable as e:
            return str(e)
        return None

    def structure_json(self) -> dict:
        """``IR.to_json()`` of the IR this blueprint was made from (no tensors)."""
        if self._json is None:
            if self._structure is None:
                self._structure = self.parts.structure()
            self._json = self._structure.to_json()
        return self._json


def build(ir: IR, *, share_weights: bool = False) -> RebuiltModel:
    """Rebuild ``ir`` as an executable module. ``share_weights=True`` reuses the IR's tensors instead
    of copying them (the rebuilt model then trains the same storage)."""
    return Blueprint(ir).instantiate(ir.tensors, share_weights=share_weights)


def _attach_aliases(root: nn.Module, containers: dict[str, nn.Module], aliases: dict[str, list]) -> None:
    """Register a shared module under each further path it had in the original model, at its
    original position among the parent's children (so ``state_dict`` keys keep their order)."""
    for alias in sorted(aliases, key=lambda a: a.count(".")):
        canon, position = aliases[alias]
        parent_name, _, local = alias.rpartition(".")
        parent = root.get_submodule(parent_name)
        if local in parent._modules:  # deeper aliases arrive with their shared ancestor
            continue
        items = list(parent._modules.items())
        items.insert(position, (local, containers[canon]))
        parent._modules.clear()
        parent._modules.update(items)


def _path_in(root: nn.Module, module: nn.Module) -> str:
    """The path of rebuilt ``module`` in ``root``'s IR: where it was built, remembered on it when first
    found there or when a module took its place (it may since sit inside that one, e.g. a wrapper's);
    ``Unreplaceable`` when it is nowhere in ``root``."""
    path = module.__dict__.get("_osf_path")
    if path is not None:
        return path
    path = next((p for p, m in root.named_modules(remove_duplicate=False) if m is module), None)
    if path is None:
        raise Unreplaceable("it is no longer part of the model osf built it in")
    module.__dict__["_osf_path"] = path
    return path


def called_paths(root: RebuiltModel, ir: IR, under: str = "") -> list[str]:
    """The outermost modules below ``under`` that ``root``'s forward calls instead of running their ops:
    modules put in, and rebuilt modules with hooks (``_ModelLink.called``)."""
    called = root._osf_link.called
    found: list[str] = []
    for path in ir.modules:
        if not path or not path.startswith(f"{under}.") and under or any(path.startswith(f"{r}.") for r in found):
            continue
        parent, _, local = path.rpartition(".")
        try:
            module = root.get_submodule(parent)._modules.get(local) if parent else root._modules.get(local)
        except AttributeError:
            continue
        if module is not None and (not isinstance(module, IRContainer) or path in called):
            found.append(path)
    return found


class _ModelLink:
    """Shared by the containers of one rebuilt model: its root (weakly: the root holds them) and whether a
    submodule was replaced since its forward was generated (the root generates it again at its next call)."""
    __slots__ = ("root", "pending", "paths", "called")

    def __init__(self, root: RebuiltModel | None) -> None:
        self.root = weakref.ref(root) if root is not None else None
        self.pending = False
        self.paths: set[str] = set()  # where modules were put in through setattr
        self.called: set[str] = set()  # rebuilt modules to call as modules (hooked)

    def changed(self, root: RebuiltModel) -> None:
        """A module was put in or hooked: forwards are generated again at the next call."""
        self.pending = True
        root.__dict__.pop("_osf_standalone", None)

    def __deepcopy__(self, memo: dict) -> "_ModelLink":  # the copied root points its copy here
        new = _ModelLink(None)
        new.pending, new.paths, new.called = self.pending, set(self.paths), set(self.called)
        return new


MODULE_CALL = "osf.call_module"  # pseudo-op of ``with_module_calls``: calls the module at its owner path


class Unreplaceable(Exception):
    """Why a module of an IR cannot give way to another module (``module_calls``)."""


@dataclass
class ModuleCall:
    """One call of a module in a graph: its ops (indices), the values it takes (in the order of the
    signature's ``input`` numbers), those it returns (in the order of the signature's ``output`` numbers;
    None for one nobody reads whose ops are gone), the context managers it runs under, the sizes
    it computed for the rest of the model, how the model called it (``call_signature``) and the names of
    the aliases that mark its arguments inside it (none for a module called on one tensor)."""
    ops: list[int]
    inputs: list[str]
    outputs: list[str | None]
    context: list | None
    sizes: list[OpNode]  # sizes it computed that the rest of the model reads, read from the model's inputs
    signature: dict[str, Any]
    markers: list[str]


MAPPINGS = ("dict", "OrderedDict")  # the mappings a module may be called with (``call_signature`` entries)


def call_signature(meta: dict) -> dict[str, Any] | None:
    """How the model called a module (``capture._CallShapes``), as ``{"args": [...], "kwargs": {...},
    "returns": ...}`` with entries ``{"input": k}`` (its k-th distinct tensor), ``{"const": v}``,
    ``{"tuple": [...]}`` / ``{"list": [...]}``, ``{"dict": [[key, entry], ...]}`` / ``{"OrderedDict": ...}``
    (``MAPPINGS``); ``returns`` None for a tensor, else the ``type`` and
    ``items`` of the tuple, list or other structure it returned (``capture._returned``). None where it
    cannot be called as a module."""
    how = meta.get("call")
    if how == "unary":
        return {"args": [{"input": 0}], "kwargs": {k: {"const": v} for k, v in meta.get("kwargs", {}).items()},
                "returns": meta.get("returns")}
    if how == "tensors":
        return {"returns": None, **meta["signature"]}
    return None


def result_number(item: dict[str, Any]) -> int:
    """The number of the tensor an ``{"output": j}`` item of a call's ``returns`` is (IRs of an osf that
    allowed one tensor stored ``True``)."""
    return 0 if item["output"] is True else item["output"]


def result_count(returns: dict[str, Any] | None) -> int:
    """How many distinct tensors a call returns, given its ``returns`` (None: one tensor)."""
    return 1 if returns is None else max(result_number(item) for item in returns["items"] if "output" in item) + 1


def _signature_inputs(signature: dict[str, Any]) -> int:
    """How many distinct tensors a call of ``signature`` takes."""
    def count(entry: dict) -> int:
        (kind, payload), = entry.items()
        if kind in MAPPINGS:
            return max((count(e) for _, e in payload), default=0)
        if kind in ("tuple", "list"):
            return max((count(e) for e in payload), default=0)
        return payload + 1 if kind == "input" else 0
    return max((count(e) for e in [*signature["args"], *signature["kwargs"].values()]), default=0)


def _signature_arguments(signature: dict[str, Any], inputs: list[str]) -> tuple[list, dict]:
    """The arguments of a call of ``signature`` on the values ``inputs``, encoded as op arguments."""
    def encoded(entry: dict) -> Any:
        (kind, payload), = entry.items()
        if kind == "input":
            return {"node": inputs[payload]}
        if kind == "tuple":
            return {"tuple": [encoded(e) for e in payload]}
        if kind == "list":
            return [encoded(e) for e in payload]
        if kind in MAPPINGS:
            return {"mapping": [kind, [k for k, _ in payload], [encoded(e) for _, e in payload]]}
        return payload
    return [encoded(e) for e in signature["args"]], {k: encoded(e) for k, e in signature["kwargs"].items()}


def bind_call(signature: dict[str, Any], args: tuple, kwargs: dict, parameters: list | None = None) -> list | None:
    """The distinct tensors of a call ``(*args, **kwargs)`` of a module that its model called as
    ``signature``, in the order of their numbers; None unless the call passes tensors (or FX proxies) and
    the same constants in the same places, and the same tensor wherever the model passed one tensor twice.
    With its forward's ``parameters`` (``capture._forward_parameters``) arguments may also be given by name
    or by position as that forward takes them, and those the model passed at their default left out (or
    those it left out passed at their default)."""
    values: list = [None] * _signature_inputs(signature)

    def matches(entry: dict, value: Any) -> bool:
        (kind, payload), = entry.items()
        if kind == "input":
            if not isinstance(value, (torch.Tensor, torch.fx.Proxy)):
                return False
            if values[payload] is None:
                values[payload] = value
            return values[payload] is value
        if kind == "const":
            return (value is None) == (payload is None) and value == payload
        if kind in MAPPINGS:
            return (type(value).__name__ == kind and list(value) == [k for k, _ in payload]
                    and all(matches(e, value[k]) for k, e in payload))
        return type(value).__name__ == kind and len(value) == len(payload) and all(map(matches, payload, value))
    if len(args) == len(signature["args"]) and set(kwargs) == set(signature["kwargs"]) \
            and all(map(matches, signature["args"], args)) \
            and all(matches(signature["kwargs"][k], v) for k, v in kwargs.items()):
        return values
    recorded = _by_name(parameters, signature["args"], signature["kwargs"]) if parameters else None
    given = _by_name(parameters, args, kwargs) if parameters else None
    if recorded is None or given is None:
        return None
    values[:] = [None] * len(values)
    for name, _, default in parameters:
        entry, value = recorded.get(name, _ABSENT), given.get(name, _ABSENT)
        if entry is _ABSENT and value is _ABSENT:
            continue
        if entry is _ABSENT:  # the model left it at its default: so may the call, explicitly
            if default is None or not matches(default, value):
                return None
        elif value is _ABSENT:  # left at its default where the model passed that default
            if entry != default:
                return None
        elif not matches(entry, value):
            return None
    return values


_ABSENT = object()


def _by_name(parameters: list, args: Any, kwargs: dict) -> dict[str, Any] | None:
    """``args`` and ``kwargs`` by the name of the forward parameter each fills; None where they do not fit
    (too many positional arguments, an unknown or repeated name, ``*args`` / ``**kwargs`` in the way)."""
    positional = [name for name, kind, _ in parameters if kind in ("POSITIONAL_ONLY", "POSITIONAL_OR_KEYWORD")]
    named = {name for name, kind, _ in parameters if kind in ("POSITIONAL_OR_KEYWORD", "KEYWORD_ONLY")}
    if len(args) > len(positional) or not set(kwargs) <= named:
        return None
    out = dict(zip(positional, args))
    if set(out) & set(kwargs):
        return None
    return {**out, **kwargs}


def describe_call(signature: dict[str, Any]) -> str:
    """A call of ``signature`` as Python (``(x0, x0, x0, need_weights=False)``; ``x<k>`` its tensors)."""
    def shown(entry: dict) -> str:
        (kind, payload), = entry.items()
        if kind == "input":
            return f"x{payload}"
        if kind == "const":
            return repr(payload)
        if kind in MAPPINGS:
            inner = ", ".join(f"{k!r}: {shown(e)}" for k, e in payload)
            return f"{{{inner}}}" if kind == "dict" else f"OrderedDict({{{inner}}})"
        inner = ", ".join(map(shown, payload))
        return f"[{inner}]" if kind == "list" else f"({inner}{',' if len(payload) == 1 else ''})"
    return "(" + ", ".join([*map(shown, signature["args"]),
                            *(f"{k}={shown(e)}" for k, e in signature["kwargs"].items())]) + ")"


def pack_output(signature: dict[str, Any], values: list, spec: pytree.TreeSpec | None = None) -> Any:
    """What a module called as ``signature`` returns, given the tensors it computed (by result number);
    ``spec``: the loaded ``returns["spec"]`` of a structure other than a tuple or list (``load_spec``)."""
    returns = signature.get("returns")
    if returns is None:
        return values[0]
    items = [values[result_number(item)] if "output" in item else item["const"] for item in returns["items"]]
    if spec is not None:
        return pytree.tree_unflatten(items, spec)
    return items if returns["type"] == "list" else tuple(items)


def module_calls(ir: IR, graph: Graph, path: str) -> list[ModuleCall]:
    """The calls of the module at ``path`` in ``graph`` (``OpNode.scope``); ``Unreplaceable`` unless each
    takes the values of the rest of the model its model passed (its own tensors and constants aside) and
    gives back those it returned, and every op of the module runs in one of its calls."""
    scopes = ir.info.get("scopes")
    if scopes is None:
        raise Unreplaceable("this model's IR does not record module calls (traced by an older osf); trace the "
                            "original model again")
    prefix = f"{path}."
    groups: dict[str, list[int]] = {}
    for i, op in enumerate(graph.ops):
        key = next((k for p, k in scopes[op.scope] if p == path), None) if op.scope is not None else None
        if key is not None:
            groups.setdefault(key, []).append(i)
        elif op.owner == path or op.owner.startswith(prefix):
            raise Unreplaceable(f"its submodule '{op.owner}' runs outside a call of it (the model calls its "
                                "submodules itself, as a loop over an nn.ModuleList does): replace those instead")
    if not groups:
        mode = (" in eval mode (a part only training runs)" if graph is ir.eval_graph
                else " (a module it never calls; an nn.Identity in an IR traced before osf marked those: trace "
                      "the model again)")
        raise Unreplaceable(f"the forward runs no op of it{mode}, so nothing marks where a replacement would be "
                            "called")
    how = ir.modules[path].meta.get("call", "not through its __call__, which osf's hooks watch: .forward(), "
                                            "or a capture through torch.fx")
    signature = call_signature(ir.modules[path].meta)
    if signature is None:
        raise Unreplaceable(f"the model calls it other than on tensors and constants, returning tensors ({how}), "
                            "while a module put in its place is called as the model called it")
    count = _signature_inputs(signature) if how == "tensors" else 0
    if how == "tensors" and not count:
        raise Unreplaceable("the model calls it on constants alone, so nothing marks where it is called")
    own = {canon for qual, canon in ir.aliases.items() if qual.startswith(prefix)}
    placeholders = {p.name: p for p in graph.placeholders}
    in_calls = set().union(*groups.values())
    for i, op in enumerate(graph.ops):
        for ref in op.inputs if i not in in_calls else ():
            p = placeholders.get(ref)
            if p is not None and p.kind in (PARAM, BUFFER) and p.target in own:
                _path_outside(ir, p.target, [path])
    by_name = {op.name: op for op in graph.ops}
    sizes = {op.name for op in graph.ops if isinstance(op.meta, dict) and "symint" in op.meta}
    outputs = set(serial.node_refs(graph.outputs))
    readers: dict[str, list[int]] = {}
    for j, op in enumerate(graph.ops):
        for ref in op.inputs:
            readers.setdefault(ref, []).append(j)
    calls = []
    for idxs in groups.values():
        inside = set(idxs)
        produced = {graph.ops[i].name for i in idxs}
        taken: list[str] = []
        for i in idxs:
            for ref in graph.ops[i].inputs:
                p = placeholders.get(ref)
                if ref in produced or ref in taken or ref in sizes or p is not None and (
                        p.kind == CONST or p.kind in (PARAM, BUFFER) and p.target in own):
                    continue  # a size read outside (export reads each once) is no input: the module reads its own
                taken.append(ref)
        given = [graph.ops[i].name for i in idxs if graph.ops[i].name in outputs
                 or any(j not in inside for j in readers.get(graph.ops[i].name, ()))]
        computed = [v for v in given if v in sizes]
        given = [v for v in given if v not in sizes]
        marks = {graph.ops[i].meta["argument"]: graph.ops[i] for i in idxs
                 if graph.ops[i].owner == path and graph.ops[i].marks_argument}
        markers = [marks[k] for k in range(count) if k in marks]
        if len(markers) < count:
            missing = [f"x{k}" for k in range(count) if k not in marks]
            raise Unreplaceable(
                f"its arguments are not all marked where it is called: the model passes it {', '.join(missing)} "
                f"of {describe_call(signature)}, which it never reads and nothing else computes (or the IR was "
                "traced by an older osf: trace the original model again)")
        inputs = [op.inputs[0] for op in markers] if count else taken
        if count and not set(taken) <= set(inputs):
            raise Unreplaceable(f"a call of it reads {len(set(taken) - set(inputs))} value(s) of the rest of the "
                                "model that the model does not pass it as arguments")
        if len(inputs) != 1 and not count:
            raise Unreplaceable(f"a call of it takes {len(inputs)} value(s) from the rest of the model; a module "
                                "can take its place where the model passes it what it takes")
        outputs = _call_outputs(graph, idxs, path, given, result_count(signature["returns"]))
        # from the call's inputs first: read inside an enclosing module's call, the model's inputs would be
        # another value that call takes
        sources = [(v, (placeholders[v] if v in placeholders else by_name[v]).meta) for v in dict.fromkeys(inputs)]
        sources += [(p.name, p.meta) for p in graph.placeholders if p.kind == INPUT]
        resized = [o for v in computed for o in size_ops(by_name[v], sources)]
        contexts = {repr(graph.ops[i].context) for i in idxs}
        if len(contexts) != 1:
            raise Unreplaceable("part of its ops run under a torch.no_grad() or autocast block of its own forward")
        end = max(idxs)
        if any(j < end and j not in inside for v in given for j in readers.get(v, ())):
            raise Unreplaceable("the model reads its output before its call ends")
        calls.append(ModuleCall(sorted(idxs), inputs, outputs, graph.ops[idxs[0]].context, resized, signature,
                                [op.name for op in markers]))
    return calls


def _call_outputs(graph: Graph, idxs: list[int], path: str, given: list[str], count: int) -> list[str | None]:
    """The values a call (ops ``idxs``) of the module at ``path`` returns, by result number: the one it
    gives back to the rest of the model (``given``: the values read outside it), or for a module returning
    ``count`` > 1 tensors the aliases that mark them (``meta["result"]``, each value read outside one of
    them; None for a result nobody reads whose value is not computed either)."""
    if count == 1:
        if len(given) != 1:
            raise Unreplaceable(f"a call of it gives {len(given)} values back to the rest of the model; a module "
                                "can take its place where the model reads what it returns and nothing else")
        return given
    marks = {graph.ops[i].name: graph.ops[i].meta["result"] for i in idxs
             if graph.ops[i].owner == path and isinstance(graph.ops[i].meta, dict) and "result" in graph.ops[i].meta}
    if not given:
        raise Unreplaceable("the model reads nothing it returns (its calls only change tensors in place)")
    if not marks:
        raise Unreplaceable(f"the IR does not mark the {count} tensors it returns (traced by an older osf, or a "
                            "hook of the model's own ran ops after it): trace the original model again")
    unmarked = [i for i in idxs if graph.ops[i].name in given and graph.ops[i].name not in marks]
    if unmarked:
        raise Unreplaceable(f"the model reads {len(unmarked)} value(s) made in a call of it other than the {count} "
                            f"tensors it returns (one by '{graph.ops[unmarked[0]].owner}', taken by a hook of the "
                            "model's own, such as Hugging Face's output recorders), which a module put in would "
                            "not give")
    outputs: list[str | None] = [None] * count
    for v, number in marks.items():
        outputs[number] = v
    return outputs


def _path_outside(ir: IR, tensor: str, paths: list[str]) -> str:
    """A name of ``tensor`` (canonical) outside the modules at ``paths`` (a tied tensor has several), by
    which ops outside their calls go on reading it; ``Unreplaceable`` when it has none."""
    for qual, canon in ir.aliases.items():
        if canon == tensor and not any(qual.startswith(f"{path}.") for path in paths):
            return qual
    raise Unreplaceable(f"the model reads its tensor '{tensor}' outside its calls (a weight used by reference "
                        "elsewhere), which would then be lost")


def size_ops(op: OpNode, sources: list[tuple[str, Any]]) -> list[OpNode]:
    """Ops computing the symbolic size ``op`` gives (``12*B``: export reads each size once, so a module's
    call may read one computed elsewhere) from the dims of tensors ``sources`` (value name, meta with
    ``sym``), the last named as ``op``; ``Unreplaceable`` when a symbol is no dim of theirs."""
    text = op.meta["symint"]
    try:
        expr = parse_expr(
            text, local_dict={n: sympy.Symbol(n, integer=True) for n in re.findall(r"[A-Za-z_]\w*", text)})
    except (SyntaxError, TypeError, sympy.SympifyError):
        raise Unreplaceable(f"it reads a size ({text}) osf cannot compute on its own") from None
    ops: list[OpNode] = []

    def emit(e: Any) -> Any:
        if e.is_Integer:
            return int(e)
        if e.is_Symbol:
            at = next(((name, d) for name, meta in sources if isinstance(meta, dict)
                       for d, s in enumerate(meta.get("sym") or []) if s == str(e)), None)
            if at is None:
                raise Unreplaceable(f"it reads a size computed elsewhere ({text}) with {e} in it, which is no dim "
                                    "of the tensors it can read")
            ops.append(OpNode(f"{op.name}_{len(ops)}", "aten.sym_size.int", [{"node": at[0]}, at[1]], {}, op.owner,
                              {"symint": str(e)}, scope=op.scope))
            return {"node": ops[-1].name}
        if e.is_Add or e.is_Mul:
            total = emit(e.args[0])
            for term in e.args[1:]:
                ops.append(OpNode(f"{op.name}_{len(ops)}", "operator.add" if e.is_Add else "operator.mul",
                                  [total, emit(term)], {}, op.owner, {"symint": str(e)}, scope=op.scope))
                total = {"node": ops[-1].name}
            return total
        raise Unreplaceable(f"it reads a size computed elsewhere ({text}) osf cannot compute on its own")

    last = emit(expr)
    if not ops or last != {"node": ops[-1].name}:  # a constant
        ops.append(OpNode(op.name, "operator.add", [last, 0], {}, op.owner, op.meta, scope=op.scope))
    ops[-1] = dataclasses.replace(ops[-1], name=op.name, meta=op.meta)
    return ops


def with_module_calls(ir: IR, graph: Graph, paths: list[str]) -> Graph:
    """``graph`` with the ops of every call of the modules at ``paths`` replaced by a call of the module
    found there as the model called it (a ``MODULE_CALL`` op, at the call's last op, named as the value it
    gave, or followed by a ``getitem`` from the tuple or list it returns per value of it the graph has);
    tensors and constants no op reads any more are dropped."""
    dropped: set[int] = set()
    calls: dict[int, list[OpNode]] = {}
    for path in paths:
        for call in module_calls(ir, graph, path):
            dropped.update(call.ops)
            producers = {graph.ops[i].name: graph.ops[i] for i in call.ops}
            first = next(v for v in call.outputs if v is not None)
            args, kwargs = _signature_arguments(call.signature, call.inputs)
            returns = call.signature["returns"]
            name = first if returns is None else f"{first}_called"
            new = [*call.sizes, OpNode(name, MODULE_CALL, args, kwargs, path, producers[first].meta,
                                       context=call.context, scope=producers[first].scope)]
            for number, value in enumerate(call.outputs if returns is not None else ()):
                if value is not None:
                    at = next(i for i, item in enumerate(returns["items"])
                              if "output" in item and result_number(item) == number)
                    steps = returns["paths"][at] if "paths" in returns else [["index", at]]
                    read = {"node": name}
                    for k, (kind, key) in enumerate(steps):  # from the structure: items, keys, attributes
                        last = k == len(steps) - 1
                        new.append(OpNode(value if last else f"{value}_{k}",
                                          "builtins.getattr" if kind == "attr" else "operator.getitem", [read, key],
                                          {}, path, producers[value].meta if last else None,
                                          scope=producers[value].scope))
                        read = {"node": new[-1].name}
            calls[call.ops[-1]] = new
    ops = [new for i, op in enumerate(graph.ops) for new in calls.get(i, [] if i in dropped else [op])]
    read = {ref for op in ops for ref in op.inputs} | set(serial.node_refs(graph.outputs))
    kept = [p for p in graph.placeholders if p.kind == INPUT or p.name in read]
    moved = [dataclasses.replace(p, target=_path_outside(ir, p.target, paths))  # read where it stays
             if p.kind in (PARAM, BUFFER) and any(p.target.startswith(f"{path}.") for path in paths) else p
             for p in kept]
    return Graph(moved, ops, graph.outputs)


def call_subgraph(ir: IR, graph: Graph, path: str) -> tuple[Graph, dict[str, str], bool]:
    """The ops of the first call of the module at ``path`` as a graph of their own, for the module run on
    its own (``self`` is the module): the values the call took are its inputs (the aliases that mark them,
    for a call on several), the module's tensors are read by their path below it, the model's constants
    through ``_root``, sizes read before the call from its inputs; with the ``views`` for
    ``compile_graph`` and whether it is the module's only call. A module
    whose calls run different ops (their arguments hold other shapes) is ``Unreplaceable``: the ops of
    one call would not do at another's call site."""
    calls = module_calls(ir, graph, path)
    call = calls[0]
    prefix = f"{path}."
    producers = graph.producers()
    first = _call_ops(graph, call, producers) if len(calls) > 1 else None
    if any(_call_ops(graph, other, producers) != first for other in calls[1:]):
        raise Unreplaceable(f"the model calls it {len(calls)} times with different ops (other shapes in their "
                            "arguments), so the ops of one call cannot run it at every call site")
    names = call.markers or call.inputs
    sources = [(name, producers[name].meta) for name in names]
    marked = dict(zip(call.inputs, call.markers))  # a subnet's op may read an input itself (a unit contracted)

    def read(ref: str) -> str:
        return marked.get(ref, ref)
    ops = [dataclasses.replace(op, owner=op.owner[len(prefix):] if op.owner.startswith(prefix) else "",
                               args=serial.substitute_refs(op.args, read),
                               kwargs=serial.substitute_refs(op.kwargs, read))
           for op in (graph.ops[i] for i in call.ops) if op.name not in call.markers]
    produced = {op.name for op in ops}
    placeholders = [Placeholder(name, INPUT, None, meta) for name, meta in sources]
    sizes: list[OpNode] = []
    views: dict[str, str] = {}
    seen = set(names)
    for ref in [ref for op in ops for ref in op.inputs]:
        if ref in produced or ref in seen:
            continue
        seen.add(ref)
        value = producers[ref]
        if isinstance(value, Placeholder) and value.kind == CONST:
            placeholders.append(value)
            views[value.target] = f"_root.{value.target}"
        elif isinstance(value, Placeholder) and value.kind in (PARAM, BUFFER):
            own = next(q for q, c in ir.aliases.items() if c == value.target and q.startswith(prefix))
            placeholders.append(dataclasses.replace(value, target=own[len(prefix):]))
        else:  # a size read before the call (module_calls let no other value in)
            sizes += [dataclasses.replace(o, owner="", scope=None) for o in size_ops(value, sources)]
    returns = call.signature["returns"] or {}
    unread = [f"item {at}" if "paths" not in returns else
              "".join(f".{key}" if kind == "attr" else f"[{key!r}]" for kind, key in returns["paths"][at])
              for at, item in enumerate(returns.get("items", ()))
              if "output" in item and call.outputs[result_number(item)] is None]
    if unread:
        raise Unreplaceable(f"nothing reads {' and '.join(unread)} of what it returns (such as the attention "
                            "weights nn.MultiheadAttention returns unless need_weights=False, or a value only a "
                            "part a subnet dropped read), so osf kept no op computing it: a module put in its "
                            "place works, a hook or a call of it on its own would need that value")
    return Graph(placeholders, sizes + ops, [{"node": v} for v in call.outputs]), views, len(calls) == 1


def _call_ops(graph: Graph, call: ModuleCall, producers: dict) -> list:
    """The ops of a module's call with their values renamed by position (its inputs ``#in<k>``, the k-th op's
    result ``#k``; tensors and constants by target): equal for two calls that run the same code."""
    names = {**{v: f"#in{k}" for k, v in enumerate(call.inputs)},
             **{graph.ops[i].name: f"#{k}" for k, i in enumerate(call.ops)}}

    def renamed(value: Any) -> Any:
        if isinstance(value, list):
            return [renamed(v) for v in value]
        if isinstance(value, dict):
            if set(value) == {"node"}:
                ref = value["node"]
                return names.get(ref) or getattr(producers.get(ref), "target", None) or ref
            return {k: renamed(v) for k, v in value.items()}
        return value
    return [(op.target, renamed(op.args), renamed(op.kwargs)) for op in (graph.ops[i] for i in call.ops)]


def attr_path(base: str, qual: str) -> str:
    """Python expression reaching attribute ``qual`` (dotted) from variable ``base``."""
    expr = base
    for part in qual.split(".") if qual else []:
        expr = f"{expr}.{part}" if part.isidentifier() and not keyword.iskeyword(part) else \
            f"getattr({expr}, {part!r})"
    return expr


def compile_graph(ir: IR, graph: Graph, views: dict[str, str] | None = None,
                  extra_globals: dict[str, Any] | None = None, preamble: list[str] | None = None,
                  calls: dict[str, str] | None = None, guards: Guards | None = None) -> Callable:
    """Generate and compile ``fn(self, _dev, *user_inputs) -> list`` running ``graph``. ``views`` maps a
    tensor's qualified name to a Python expression in which ``{}`` stands for the tensor where it is read
    (e.g. ``{}.narrow(0, 0, 8)``), so a subnet's graph can run on views of a larger model's tensors;
    ``extra_globals`` are names those expressions use; ``preamble`` lines (statements) run first;
    ``calls`` names, per op, an expression called instead of the op's target (with the same arguments);
    ``guards`` run ops conditionally (``Guards``)."""
    source, globals_ = generate_source(ir, graph, views or {}, preamble or [], calls or {}, guards)
    globals_.update(extra_globals or {})
    namespace: dict[str, Any] = {}
    filename = f"<osf-generated {ir.modules[''].meta['class']} {uuid.uuid4().hex[:8]}>"
    exec(compile(source, filename, "exec"), globals_, namespace)
    fn = namespace["forward"]
    fn.__osf_source__ = source
    _show_in_tracebacks(fn, filename, source)
    return fn


def _show_in_tracebacks(fn: Callable, filename: str, source: str) -> None:
    """Tracebacks (and ``inspect.getsource``) show the generated line that failed, which names the tensors
    it reads (``p_layer1_0_conv1_weight``), for as long as ``fn``'s code lives (templates make functions of
    it with other globals)."""
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    weakref.finalize(fn.__code__, linecache.cache.pop, filename, None)


@dataclass
class Guards:
    """Conditional ops for generated code that serves many variants of a graph: each op runs only
    ``if <condition[op]>``; otherwise the first ``(condition, value)`` of ``instead[op]`` that holds
    assigns that value to the op's result. ``hold`` keeps a value alive until the named op (a value an
    ``instead`` branch may still read). ``owners`` gives an expression per owner module (whose
    ``.training`` the ops read) instead of an attribute path read up front."""
    condition: dict[str, str]
    instead: dict[str, list[tuple[str, str]]]
    hold: dict[str, str]
    owners: dict[str, str]


def generate_source(ir: IR, graph: Graph, views: dict[str, str], preamble: list[str],
                    calls: dict[str, str], guards: Guards | None = None) -> tuple[str, dict]:
    targets: dict[str, str] = {}
    globals_: dict[str, Any] = {"torch": torch, "_OrderedDict": collections.OrderedDict}
    names: dict[str, str] = {}
    prologue: list[str] = []
    modules: dict[str, str] = {"": "self"}

    def module_var(path: str) -> str:
        """A variable holding the submodule at ``path``, each reached once per call from its parent (a
        ``Module.__getattr__`` per step: walking every tensor's path from ``self`` cost a small model's
        forward more than its ops)."""
        if path not in modules:
            parent, _, local = path.rpartition(".")
            parent_var = module_var(parent)
            modules[path] = f"_m{len(modules) - 1}"
            prologue.append(f"    {modules[path]} = {attr_path(parent_var, local)}")
        return modules[path]

    def owner_var(owner: str) -> str:
        if guards is not None and owner in guards.owners:
            return guards.owners[owner]
        return module_var(owner)

    user_inputs = []
    for p in graph.placeholders:
        var = safe_name(p.name)
        names[p.name] = var
        if p.kind == INPUT:
            user_inputs.append(var)
        elif p.kind in (PARAM, BUFFER):
            read = views.get(p.target, "{}")
            if "{}" in read:
                parent, _, local = p.target.rpartition(".")
                read = read.replace("{}", attr_path(module_var(parent), local))
            prologue.append(f"    {var} = {read}")
        elif p.kind == CONST:
            prologue.append(f"    {var} = {views.get(p.target, '{}').replace('{}', 'self.' + p.target)}")
    body: list[str] = []
    followed = next((d for op in graph.ops for d in [serial.model_dtype_used([op.args, list(op.kwargs.values())])]
                     if d), None)
    if followed is not None:  # dtype arguments that follow the model's: the dtype of its first tensor of
        # that dtype when traced that this graph holds (a subnet's template reads None for dropped ones)
        sources = [names[p.name] for p in graph.placeholders if p.kind in (PARAM, BUFFER)
                   and isinstance(p.meta, dict) and p.meta.get("dtype") == followed][:64]
        body.append("    _dt = " + "".join(f"{v}.dtype if {v} is not None else " for v in sources) + f"torch.{followed}")
    last_use: dict[str, int] = {}
    for i, op in enumerate(graph.ops):
        for ref in op.inputs:
            last_use[ref] = i
    if guards is not None:
        at = {op.name: i for i, op in enumerate(graph.ops)}
        for ref, until in guards.hold.items():
            last_use[ref] = max(last_use.get(ref, -1), at[until])
    frees: dict[int, list[str]] = {}  # op index -> values last used there
    for ref, i in last_use.items():
        frees.setdefault(i, []).append(ref)
    outputs = set(serial.node_refs(graph.outputs))
    placeholder_names = {p.name for p in graph.placeholders}
    for i, op in enumerate(graph.ops):
        names[op.name] = safe_name(op.name)
    for i, op in enumerate(graph.ops):
        if op.target not in targets and op.target not in (MODULE_CALL, _ALIAS):
            targets[op.target] = f"_t{len(targets)}"
            globals_[targets[op.target]] = _EAGER_FUNCTIONS.get(op.target) or serial.resolve_target(op.target)
        args = list(op.args)
        kwargs = dict(op.kwargs)
        flag_at = op_rules.TRAINING_FLAG_ARG.get(op.target)
        if flag_at is not None and len(args) > flag_at:
            if not (op.target in op_rules.STATS_OPTIONAL and args[3] is None):
                args[flag_at] = {"expr": f"{owner_var(op.owner)}.training"}
        prob = op_rules.TRAINING_ONLY_PROB.get(op.target)
        if prob is not None:
            idx, kw = prob
            if len(args) > idx and args[idx]:
                args[idx] = {"expr": f"({_render(args[idx], names)} if {owner_var(op.owner)}.training else 0.0)"}
            elif kwargs.get(kw):
                kwargs[kw] = {"expr": f"({_render(kwargs[kw], names)} if {owner_var(op.owner)}.training else 0.0)"}
        fn = module_var(op.owner) if op.target == MODULE_CALL else calls.get(op.name, targets.get(op.target))
        if op.context and op.target != _ALIAS:  # from a torch.no_grad() / autocast block of the model's forward
            globals_["_in_context"] = _in_context
            args, fn = [{"device": None}, op.context, {"expr": fn}, *args], "_in_context"
        if op.target == _ALIAS:  # no op call
            call = _render(args[0], names)
        else:
            call = f"{fn}(" + ", ".join(
                [_render(a, names) for a in args] + [f"{k}={_render(v, names)}" for k, v in kwargs.items()]) + ")"
        line = f"{names[op.name]} = {call}"
        if op.mode_gated:
            line = f"{names[op.name]} = {call} if {owner_var(op.owner)}.training else None"
        if guards is not None and op.name in guards.condition:
            body.append(f"    if {guards.condition[op.name]}: {line}")
            body.extend(f"    elif {cond}: {names[op.name]} = {names[ref]}" for cond, ref in guards.instead.get(op.name, []))
        else:
            body.append(f"    {line}")
        dead = [names[r] for r in frees.get(i, ()) if r not in outputs and r not in placeholder_names]
        if dead:
            body.append("    " + " = ".join(dead) + " = None")
    ret = "    return [" + ", ".join(_render(o, names) for o in graph.outputs) + "]"
    header = "def forward(self, _dev, " + ", ".join(user_inputs) + "):" if user_inputs else "def forward(self, _dev):"
    return "\n".join([header, *(f"    {line}" for line in preamble), *prologue, *body, ret]) + "\n", globals_


# Generated code assigns the value itself where the IR has an ``alias`` (a view of all of it, same storage and
# shape): capture marks with one where a module returned its input (``capture._CallShapes``), and a call of
# the op costs ~1 µs per module for nothing.
_ALIAS = "aten.alias.default"


def _embedding(weight: torch.Tensor, indices: torch.Tensor, padding_idx: int = -1,
               scale_grad_by_freq: bool = False, sparse: bool = False) -> torch.Tensor:
    """``aten.embedding`` as eager code calls it (``F.embedding``, arguments in its order)."""
    return nn.functional.embedding(indices, weight, None if padding_idx == -1 else padding_idx,
                                   scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)


# The public functions eager code calls for these ops (same arguments, same kernels): generated code calls
# them rather than the ATen overload, so that tensor subclasses that stand in for weights and implement
# these functions in ``__torch_function__`` (torchao's quantized weights) work on rebuilt models as on
# the original; the overload would reach them decomposed (``aten.t`` + ``aten.addmm`` for ``linear``).
_EAGER_FUNCTIONS: dict[str, Callable] = {
    "aten.linear.default": nn.functional.linear,
    "aten.conv1d.default": nn.functional.conv1d, "aten.conv1d.padding": nn.functional.conv1d,
    "aten.conv2d.default": nn.functional.conv2d, "aten.conv2d.padding": nn.functional.conv2d,
    "aten.conv3d.default": nn.functional.conv3d, "aten.conv3d.padding": nn.functional.conv3d,
    "aten.conv_transpose1d.default": nn.functional.conv_transpose1d,
    "aten.conv_transpose2d.input": nn.functional.conv_transpose2d,
    "aten.conv_transpose3d.input": nn.functional.conv_transpose3d,
    "aten.embedding.default": _embedding,
}


def _in_context(device: torch.device, context: list, fn: Callable, /, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` under ``context`` (``OpNode.context``); autocast on the model's device type.
    Grad mode through ``no_grad`` / ``enable_grad``: ``set_grad_enabled`` sets the mode when constructed
    too, which torch.export records as a second, empty region that ``torch.export.load`` refuses."""
    with contextlib.ExitStack() as stack:
        for kind, *values in context:
            stack.enter_context((torch.enable_grad() if values[0] else torch.no_grad()) if kind == "grad"
                                else torch.autocast(device.type, *values))
        return fn(*args, **kwargs)


def safe_name(name: str) -> str:
    """The Python variable generated code uses for IR value ``name``."""
    return f"{name}_" if keyword.iskeyword(name) or name in ("self", "torch", "_dev", "_dt") else name


def _render(value: Any, names: dict[str, str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_render(v, names) for v in value) + "]"
    if not isinstance(value, dict):
        return repr(value)
    (kind, payload), = value.items()
    if kind == "node":
        return names[payload]
    if kind == "expr":
        return payload
    if kind == "tuple":
        return "(" + "".join(_render(v, names) + ", " for v in payload) + ")"
    if kind == "float":
        return f"float({payload!r})"
    if kind in ("dtype", "layout", "memory_format"):
        return f"torch.{payload}"
    if kind == "device":
        return "_dev"
    if kind == "model_dtype":
        return "_dt"
    if kind == "model_finfo":
        return f"torch.finfo(_dt).{serial.finfo_attr(payload[1])}"
    if kind == "dict":
        return "{" + ", ".join(f"{k!r}: {_render(v, names)}" for k, v in payload.items()) + "}"
    if kind == "mapping":
        mapping_type, keys, values = payload
        items = ", ".join(f"{k!r}: {_render(v, names)}" for k, v in zip(keys, values))
        return f"{{{items}}}" if mapping_type == "dict" else f"_OrderedDict({{{items}}})"
    if kind == "slice":
        return "slice(" + ", ".join(_render(v, names) for v in payload) + ")"
    raise FormatError(f"unknown argument encoding {kind!r} in the IR")
