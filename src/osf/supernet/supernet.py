"""``Supernet``: a model traced once, its search space, any subnet run on the shared weights, and any
subnet as a standalone model."""
from __future__ import annotations

import contextlib
import copy
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn

from ..ir.capture import trace
from ..ir.codegen import Blueprint, build, pin_modules
from ..ir.graph import IR, ModuleNode
from ..ir.io import ir_from_json
from ..space.arch import Arch
from ..space.costs import CostModel
from ..space.groups import ranking
from ..space.space import SearchSpace
from ..space.subnet import (Cuts, cut, cut_plan, cut_tensors, kept_tensor_names, structure_cost, subnet_ir,
                            subnet_structure)
from .batches import BatchFn, explained, seeded, split_batch, to_device
from .program import SharedGrads, SubnetProgram, compile_program
from .template import ExtractionTemplate, ProgramTemplate, TemplateUnsupported


class Supernet(nn.Module):
    """Wraps ``model`` (traced with ``args`` / ``kwargs``) and its ``SearchSpace`` (``space_options``: see
    ``SearchSpace``). The shared weights are this module's parameters (a copy of the model's; the model
    itself is never modified). ``forward`` computes the active arch (``set_arch``; the maximal subnet by
    default) on views of those weights, so gradients of every subnet land in the same tensors.
    Gradients of weights cut to a prefix are added straight into the used region of a reusable full-size
    ``.grad`` buffer (no full-size temporary per subnet); they reach ``.grad`` only, not
    ``torch.autograd.grad``, and a ``.grad`` tensor may be reused once it was set to None — copy it, do not
    keep a reference, across steps.

    A width choice keeps a prefix of each group's channels; ``sort=True`` (default) first permutes the
    weights so that prefix holds the most salient channels (``sort_by_salience``).

    ``copy_ir=False`` saves that copy (one model's worth of memory): the supernet then sorts and trains the
    tensors of ``ir`` (of ``model``, when it traces it) in place, so use it only for what nothing else
    needs, such as an IR just loaded with ``osf.load_ir``."""

    def __init__(self, model: nn.Module | None, args: tuple = (), kwargs: dict[str, Any] | None = None, *,
                 ir: IR | None = None, trace_options: dict[str, Any] | None = None, sort: bool = True,
                 cache_size: int = 64, copy_ir: bool = True, **space_options: Any):
        super().__init__()
        if ir is None:
            if model is None:
                raise ValueError("Supernet needs a model (with example args) or a traced ir=")
            ir = trace(model, args, kwargs or {}, **(trace_options or {}))
        # a traced IR holds the model's own tensors, and sorting and training write into the shared
        # weights in place: they must never be the model's (or a given IR's) unless asked
        self.ir = ir = _own_copy(ir) if copy_ir else ir
        self.space = SearchSpace(ir, **space_options)
        self.net = build(ir, share_weights=True)
        self.net._osf_inner = True  # forward runs its programs, never self.net's forward (hooks on it warn)
        pin_modules(self.net)  # the programs read the containers built here
        if model is not None:
            self.train(model.training)
        self._arch: Arch | None = None
        self._active: SubnetProgram | None = None
        self._max_program: SubnetProgram | None = None
        self._compiled: OrderedDict[tuple, _Compiled] = OrderedDict()
        self._grads = SharedGrads()
        self._cache_size = cache_size
        self._template: ProgramTemplate | None = None
        self._template_error: str | None = None
        self._extraction: ExtractionTemplate | str | None = None  # made at the first extract (str: why not)
        self._costs: CostModel | str | None = None  # made at the first cost (str: why each arch is rewritten)
        self._calibration: tuple[str, list[torch.Tensor]] | None = None  # see calibrated()
        # where each shared tensor lives: the containers never change, their tensors may (e.g. ``.to()``)
        self._homes = {canon: (self.net.get_submodule(mod), local)
                       for canon, (mod, local) in self._tensor_homes().items()}
        if sort:
            self.sort_by_salience()

    # ----- the shared tensors -----
    def _tensor_homes(self) -> dict[str, tuple[str, str]]:
        homes: dict[str, tuple[str, str]] = {}
        for qual, canon in self.ir.aliases.items():
            mod, _, local = qual.rpartition(".")
            homes.setdefault(canon, (mod, local))
        for name in self.ir.tensors:
            homes.setdefault(name, ("", name))
        return homes

    def tensors(self) -> dict[str, torch.Tensor]:
        """The shared tensors by canonical IR name (the live parameters and buffers of this module)."""
        return {canon: _tensor_at(m, local) for canon, (m, local) in self._homes.items()}

    # ----- the active arch -----
    @property
    def arch(self) -> Arch:
        """The active arch (the maximal subnet unless ``set_arch`` chose another)."""
        return self._arch if self._arch is not None else self.space.max()

    def set_arch(self, arch: Arch | None) -> contextlib.AbstractContextManager:
        """Make ``forward`` compute ``arch`` (None: the maximal subnet). Also a context manager that
        restores the previous arch on exit: ``with supernet.set_arch(a): loss = f(supernet(x))``."""
        previous = (self._arch, self._active)
        if arch is not None:
            self.space.validate(arch)
        self._active = self.program(arch) if arch is not None else None  # compile now: errors surface here
        self._arch = arch
        return _restoring(self, previous)

    def program(self, arch: Arch) -> SubnetProgram:
        """The forward of ``arch`` on views of the shared tensors (cached per arch): bound from the
        supernet's ``ProgramTemplate`` (generated once for all archs), or compiled for ``arch`` alone
        where the template cannot express it (``template_status``)."""
        entry = self._entry(arch)
        if entry.program is None:
            template = self._get_template()
            if template is not None:
                try:
                    entry.program = template.bind(arch)
                except TemplateUnsupported:
                    pass
            if entry.program is None:
                an = self.space.analysis
                entry.program = compile_program(self._structure(entry), an.tensors, an.dims,
                                                self.space.kept_indices(arch), self._grads)
        return entry.program

    @property
    def template_status(self) -> str:
        """Whether switching to a new arch binds the shared template ("template") or, when the template
        cannot express this model, compiles the arch ("per arch: <reason>")."""
        self._get_template()
        return "template" if self._template is not None else f"per arch: {self._template_error}"

    @property
    def extraction_status(self) -> str:
        """Whether ``extract`` of a new arch binds the shared extraction template ("template") or, when
        the template cannot express this model, rewrites the arch's IR and generates its code ("per arch:
        <reason>")."""
        self._get_extraction_template()
        return f"per arch: {self._extraction}" if isinstance(self._extraction, str) else "template"

    def _get_template(self) -> ProgramTemplate | None:
        if self._template is None and self._template_error is None:
            try:
                self._template = ProgramTemplate(self.space, self.net, self._homes, self._grads)
            except TemplateUnsupported as e:
                self._template_error = str(e)
        return self._template

    def _get_extraction_template(self) -> ExtractionTemplate | None:
        if self._extraction is None:
            try:
                self._extraction = ExtractionTemplate(self.space)
            except TemplateUnsupported as e:
                self._extraction = str(e)  # extract each arch from its own rewritten IR
        return None if isinstance(self._extraction, str) else self._extraction

    def _entry(self, arch: Arch) -> "_Compiled":
        """The cache entry of ``arch`` (LRU of ``cache_size`` archs): its program over views and, once
        needed, its tensor-less IR and standalone blueprint."""
        self.space.validate(arch)
        key = self._key(arch)
        entry = self._compiled.get(key)
        if entry is None:
            entry = _Compiled(arch)
            self._compiled[key] = entry
            if len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        return entry

    def _structure(self, entry: "_Compiled") -> IR:
        if entry.structure is None:
            entry.structure = subnet_structure(self.space, entry.arch)
        return entry.structure

    def __deepcopy__(self, memo: dict) -> "Supernet":
        """A copy with its own weights and no generated code: the programs read the modules of the
        supernet that bound them, so the copy binds its own (on its first forward of each arch)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            if key not in _GENERATED:
                new.__dict__[key] = copy.deepcopy(value, memo)
        new._compiled, new._template, new._template_error, new._max_program = OrderedDict(), None, None, None
        new._extraction = new._costs = None
        new._grads = SharedGrads()
        pin_modules(new.net)
        new._active = new.program(new._arch) if new._arch is not None else None
        return new

    def __reduce_ex__(self, protocol: Any) -> tuple:
        """Pickled (``torch.save(supernet)``, multiprocessing) as its IR (JSON), the shared tensors, the
        space options, the active arch and each module's training flag; unpickling derives the space and
        generates the code again (as ``Supernet(None, ir=...)`` does), without the gradient buffers."""
        flags = {name: m.training for name, m in self.named_modules()}
        arch = self._arch.to_json() if self._arch is not None else None
        return _unpickle, (self.ir.to_json(), self.tensors(), dict(self.space.options), self._cache_size, arch,
                           flags)

    def release_grad_buffers(self) -> None:
        """Free the full-size gradient buffers kept between steps for prefix-cut weights (e.g. before
        inference or export); training allocates them again when needed."""
        self._grads.release()

    @torch.compiler.disable  # one graph per arch would recompile at every new arch; see docs/train.md
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        prog = self._active
        if prog is None:  # the maximal subnet; kept here so the cache can never evict it mid-run
            if self._max_program is None:
                self._max_program = self.program(self.space.max())
            prog = self._max_program
        return self.net.run_generated(prog.train_fn, prog.eval_fn, args, kwargs)

    def _key(self, arch: Arch) -> tuple:
        """``arch``'s cache key: every group's width and unit's choice, missing ones at the maximum (cheaper
        than ``Arch.key()``'s JSON on an extraction's hot path)."""
        return (tuple(arch.width.get(g.key, g.size) for g in self.space.groups),
                tuple(arch.depth.get(u.key, True) for u in self.space.units))

    def device(self) -> torch.device:
        """Where the shared weights live."""
        for t in self.tensors().values():
            return t.device
        return torch.device("cpu")

    # ----- BatchNorm -----
    def batch_norms(self, arch: Arch | None = None) -> list[tuple[str, str, float]]:
        """``(running mean, running var, momentum)`` of each batch norm with running statistics that
        ``arch`` (default: the maximal subnet) runs, by canonical tensor name."""
        sub = self._structure(self._entry(arch if arch is not None else self.space.max()))
        names = {p.name: sub.aliases.get(p.target, p.target) for p in sub.graph.placeholders}
        out = []
        for op in sub.graph.ops:
            if op.target != "aten.batch_norm.default" or not isinstance(op.args[3], dict):
                continue
            momentum = op.args[6]
            if not isinstance(momentum, (int, float)) or not 0 < momentum <= 1:
                raise ValueError(f"batch norm '{op.owner}' has momentum {momentum!r}; recalibration needs a "
                                 "number in (0, 1]")
            out.append((names[op.args[3]["node"]], names[op.args[4]["node"]], float(momentum)))
        return out

    def recalibrate(self, arch: Arch, loader: Iterable, batches: int = 50,
                    batch_fn: BatchFn | None = None, *, seed: int | None = None) -> int:
        """Re-estimate the BatchNorm running statistics of ``arch`` as the plain average over ``batches``
        batches of ``loader`` (train-mode forwards without gradients). Statistics are shared: every subnet
        needs its own recalibration before it is evaluated. ``seed``: draw the batches under torch's random
        state and the loader's own generator seeded with it (``batches.seeded``; yours are restored after),
        so a shuffled loader gives the same statistics on every call, as ``osf.search`` does with its seed.
        Returns the number of batches used."""
        norms = self.batch_norms(arch)
        if not norms:
            return 0
        tensors = self.tensors()
        rates = {n: momentum for mean, var, momentum in norms for n in (mean, var)}
        device = self.device()
        was_training = self.training
        used = 0
        draws = seeded(loader, seed, device) if seed is not None else contextlib.nullcontext()
        with draws, torch.no_grad(), self.set_arch(arch):
            for mean, var, _ in norms:
                tensors[mean].zero_()
                tensors[var].fill_(1.0)
            self.train()
            try:
                for batch in itertools.islice(loader, batches):
                    args, kwargs, _ = split_batch(batch, batch_fn)
                    before = {n: tensors[n].clone() for n in rates}
                    with explained(batch, batch_fn):
                        self(*to_device(args, device), **to_device(kwargs, device))
                    used += 1
                    for n, momentum in rates.items():  # turn the moving average into the plain average
                        tensors[n].copy_(before[n] + (tensors[n] - before[n]) / (used * momentum))
            finally:
                self.train(was_training)
        if used == 0:
            raise ValueError("recalibrate: the loader yielded no batch")
        self._calibration = (arch.key(), [t.clone() for t in self._statistics(norms)])
        return used

    def calibrated(self, arch: Arch) -> bool:
        """Whether the BatchNorm running statistics ``arch`` runs still hold what ``recalibrate(arch, ...)``
        left (a train-mode forward, a restored checkpoint or another subnet's recalibration changes them);
        True for an arch without such statistics."""
        norms = self.batch_norms(arch)
        if not norms:
            return True
        if self._calibration is None or self._calibration[0] != arch.key():
            return False
        now = self._statistics(norms)
        return all(torch.equal(saved.to(t.device), t) for saved, t in zip(self._calibration[1], now))

    def _statistics(self, norms: list[tuple[str, str, float]]) -> list[torch.Tensor]:
        tensors = self.tensors()
        return [tensors[n] for mean, var, _ in norms for n in (mean, var)]

    # ----- standalone subnets and costs -----
    def subnet_ir(self, arch: Arch) -> IR:
        """The IR of ``arch`` with its own (cut) copy of the shared tensors."""
        return subnet_ir(self.space, arch, tensors=self.tensors())

    def extract(self, arch: Arch) -> nn.Module:
        """``arch`` as a standalone, physically smaller ``nn.Module`` (its own copy of the kept weights;
        its forward generated from the IR, with the shape arguments of ``arch``), in training mode: call
        ``.eval()`` for inference. It computes what the supernet computes at ``arch``;
        ``extract(space.max())`` is the original function. The forward is the supernet's extraction
        template (generated at its first extraction) bound to ``arch``, or, for a model the template cannot
        express, code generated from the arch's rewritten IR; either is cached per arch, so extracting an
        arch again only copies its weights."""
        entry = self._entry(arch)
        if entry.blueprint is None:
            template = self._get_extraction_template()
            if template is not None:
                try:
                    parts, entry.cuts = template.parts(arch)
                    entry.blueprint = Blueprint(self.ir, parts, template.blueprints)
                except TemplateUnsupported:
                    pass
            if entry.blueprint is None:
                structure = self._structure(entry)
                entry.blueprint = Blueprint(structure)
                entry.cuts = cut_plan(self.space, arch, kept_tensor_names(self.ir.aliases, structure.graphs))
        homes = self._homes
        tensors = cut_tensors(entry.cuts, {name: _tensor_at(*homes[name]) for name in entry.cuts})
        return entry.blueprint.instantiate(tensors, adopt=True)  # already our own copies

    def export(self, arch: Arch, path: str | Path, **options: Any) -> Path:
        """Write ``arch`` as plain PyTorch artifacts (``.pt2``, ONNX, weights, model card) to the directory
        ``path``: the same as ``osf.export(self, arch, path, **options)``, which documents the options."""
        from ..export import export  # the export stage builds on this one; imported when used
        return export(self, arch, path, **options)

    def cost(self, arch: Arch) -> dict[str, int]:
        """``params`` (exact) and ``flops`` (FlopCounterMode convention) of ``arch``, from the IR alone:
        per-op tables at the widths each op depends on (``CostModel``, microseconds per arch), or the
        arch's rewritten IR for a model whose removable units change dims."""
        if self._costs is None:
            try:
                self._costs = CostModel(self.space)
            except NotImplementedError as e:
                self._costs = str(e)
        if not isinstance(self._costs, str):
            return self._costs(arch)
        self.space.validate(arch)
        entry = self._compiled.get(self._key(arch))
        return structure_cost(self._structure(entry) if entry is not None else subnet_structure(self.space, arch))

    def sort_by_salience(self) -> None:
        """Permute the shared weights so every group's most salient channels (heads) come first. The
        permuted supernet computes the same function; a width choice then keeps the most salient prefix.
        (An optimizer's per-weight state is not permuted: sort before training, not during.)"""
        tensors = self.tensors()
        scores = self.space.salience(tensors)
        select = {g.atom: ranking(scores[g.key]) for g in self.space.groups}
        an = self.space.analysis
        cuts = Cuts(an.dims, select)
        with torch.no_grad():
            for name, exprs in an.tensors.items():
                slices = cuts.of(exprs)
                if slices:
                    tensors[name].copy_(cut(tensors[name], slices))

    def __repr__(self) -> str:
        return f"Supernet({self.ir.modules[''].class_path}, {self.space!r})"


_GENERATED = ("_compiled", "_template", "_template_error", "_extraction", "_costs", "_max_program", "_active",
              "_grads")  # not copied


def _own_copy(ir: IR) -> IR:
    """``ir`` over copies of its tensors (graphs and metadata shared, module nodes new: an IR claims its own)."""
    tensors = {k: nn.Parameter(t.detach().clone(), requires_grad=t.requires_grad) if isinstance(t, nn.Parameter)
               else t.detach().clone() for k, t in ir.tensors.items()}
    modules = {n: ModuleNode(n, m.meta, m.children) for n, m in ir.modules.items()}
    return IR(ir.graph, modules, tensors, ir.aliases, ir.info, ir.eval_graph)


def _unpickle(structure: dict, tensors: dict[str, torch.Tensor], options: dict[str, Any], cache_size: int,
              arch: dict | None, flags: dict[str, bool]) -> Supernet:
    ir = ir_from_json(structure, "a pickled supernet")
    ir.tensors = tensors
    supernet = Supernet(None, ir=ir, sort=False, cache_size=cache_size, copy_ir=False,
                        unmatched_globs="warn", **options)  # its space was accepted when it was made
    for name, m in supernet.named_modules():
        m.training = flags.get(name, m.training)
    if arch is not None:
        supernet.set_arch(Arch.from_json(arch))
    return supernet


def _tensor_at(module: nn.Module, local: str) -> torch.Tensor:
    return module._parameters[local] if local in module._parameters else module._buffers[local]


@dataclass
class _Compiled:
    """What the supernet caches per arch."""
    arch: Arch
    structure: IR | None = None  # made when needed (extraction, costs, batch norms, per-arch programs)
    program: SubnetProgram | None = None
    blueprint: Blueprint | None = None  # the standalone model's code, and how to cut its tensors
    cuts: dict | None = None


@contextlib.contextmanager
def _restoring(supernet: Supernet, previous: tuple) -> Iterator[Supernet]:
    try:
        yield supernet
    finally:
        supernet._arch, supernet._active = previous
