"""``osf space``: the search space of a model as text or JSON."""
from __future__ import annotations

from typing import Any

from ..space.space import SearchSpace


def to_json(space: SearchSpace) -> dict[str, Any]:
    """Groups, units, what is fixed and why, exact size and motif count, and the options used."""
    return {
        "model": space.ir.modules[""].class_path,
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in space.options.items()},
        "groups": [{"key": g.key, "kind": g.kind, "size": g.size, "choices": g.choices, "tensor_dims": len(g.members)}
                   for g in space.groups],
        "units": [{"key": u.key, "kind": u.kind, "ops": len(u.ops), "parent": u.parent} for u in space.units],
        "fixed": [{"key": g.key, "size": g.size, "reason": g.reasons[0]} for g in space.all_groups
                  if not g.prunable and g.reasons],
        "unsupported_ops": [{"op": u.op, "target": u.target, "module": u.owner, "reason": u.reason}
                            for u in space.analysis.unsupported],
        "size": space.size(), "log10_size": round(space.log10_size(), 3), "motifs": space.num_motifs(),
    }


def text(space: SearchSpace) -> str:
    """``space.describe()`` followed by the exact size and the number of motifs."""
    return (f"{space.describe()}\n\nsize: {space.size():,} distinct subnets (10^{space.log10_size():.2f}); "
            f"{space.num_motifs():,} motifs")
