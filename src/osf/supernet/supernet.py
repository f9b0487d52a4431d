"""``Supernet``: a model traced once, its search space, and any subnet as a standalone model."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..ir.capture import trace
from ..ir.flops import graph_flops
from ..ir.graph import IR, PARAM
from ..space.arch import Arch
from ..space.dims import atoms_in
from ..space.groups import ranking
from ..space.space import SearchSpace
from ..space.subnet import subnet_ir


class Supernet:
    """Wraps ``model`` (traced with ``args`` / ``kwargs``) and its ``SearchSpace`` (``space_options``:
    see ``SearchSpace``). The supernet's shared weights are the IR's tensors."""

    def __init__(self, model: nn.Module | None, args: tuple = (), kwargs: dict[str, Any] | None = None, *,
                 ir: IR | None = None, trace_options: dict[str, Any] | None = None, **space_options: Any):
        if ir is None:
            if model is None:
                raise ValueError("Supernet needs a model (with example args) or a traced ir=")
            ir = trace(model, args, kwargs or {}, **(trace_options or {}))
        self.ir = ir
        self.space = SearchSpace(ir, **space_options)

    def subnet_ir(self, arch: Arch) -> IR:
        """The IR of ``arch``: smaller tensors, rewritten shape arguments, removed units contracted."""
        return subnet_ir(self.space, arch)

    def extract(self, arch: Arch) -> nn.Module:
        """``arch`` as a standalone, physically smaller ``nn.Module`` (its own copy of the kept weights;
        its forward regenerated from the IR). ``extract(space.max())`` computes the original function."""
        return self.subnet_ir(arch).build()

    def cost(self, arch: Arch) -> dict[str, int]:
        """``params`` (exact) and ``flops`` (FlopCounterMode convention) of ``arch``, from the IR alone."""
        sub = subnet_ir(self.space, arch, with_tensors=False)
        graph = sub.eval_graph if sub.eval_graph is not None else sub.graph  # inference cost
        seen, params = set(), 0
        for p in sub.graph.placeholders:
            if p.kind != PARAM:
                continue
            canon = sub.aliases.get(p.target, p.target)
            if canon not in seen:
                seen.add(canon)
                n = 1
                for s in p.meta["shape"]:
                    n *= s
                params += n
        return {"params": params, "flops": sum(graph_flops(graph).values())}

    def sort_by_salience(self) -> None:
        """Permute the shared weights so every group's most salient channels (heads) come first. The
        permuted supernet computes the same function; a width choice then keeps a prefix."""
        scores = self.space.salience()
        select = {g.atom: ranking(scores[g.key]) for g in self.space.groups}
        an = self.space.analysis
        with torch.no_grad():
            for name, exprs in an.tensors.items():
                t = self.ir.tensors[name]
                out = t.detach()
                for d, e in enumerate(exprs):
                    r = an.dims.resolve(e)
                    if not any(a in select for a in atoms_in(r)):
                        continue
                    out = out.index_select(d, an.dims.positions(r, select).to(out.device))
                if out is not t.detach():
                    t.data.copy_(out)

    def __repr__(self) -> str:
        return f"Supernet({self.ir.modules[''].class_path}, {self.space!r})"
