"""``osf inspect``: the module tree with shapes, parameters and FLOPs per module."""
from __future__ import annotations

import json
from typing import Any

from ..ir import IR
from ..ir.codegen import size_span
from ..ir.flops import human, module_flops


def rows(ir: IR, depth: int | None, root: str = "") -> list[dict[str, Any]]:
    flops = module_flops(ir)
    out = []
    for level, node in ir.walk(root):
        if depth is not None and level > depth:
            continue
        m = node.meta
        out.append({"name": node.name, "level": level, "class": m["class"], "inputs": m.get("inputs", []),
                    "outputs": m.get("outputs", []), "params": m["num_params"], "flops": flops[node.name],
                    "init": m["init"]["status"], "children": len(node.children)})
    return out


def table(ir: IR, depth: int | None, root: str = "") -> str:
    data = rows(ir, depth, root)
    lines = []
    header = ("module", "class", "inputs", "outputs", "params", "FLOPs")
    cells = []
    for r in data:
        name = ("  " * r["level"]) + (r["name"].rpartition(".")[2] if r["name"] else "<root>")
        if depth is not None and r["level"] == depth and r["children"]:
            name += " …"
        cells.append((name, r["class"].rpartition(".")[2], " ".join(r["inputs"]) or "-",
                      " ".join(r["outputs"]) or "-", human(r["params"]), human(r["flops"])))
    widths = [min(60, max(len(str(c[i])) for c in [header, *cells])) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(c)[:w].ljust(w) if i < 4 else str(c).rjust(w)  # noqa: E731
                                for i, (c, w) in enumerate(zip(row, widths)))
    lines.append(fmt(header))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(fmt(c) for c in cells)
    info = ir.info
    verified = sum(1 for n in ir.modules.values() if n.meta["init"]["status"] == "verified")
    lines.append("")
    lines.append(f"{ir.modules[root].meta['class']}: {len(ir.modules)} modules, {len(ir.graph.ops)} ops, "
                 f"{ir.modules[root].meta['num_params']:,} params, {human(module_flops(ir)[root])} FLOPs "
                 f"(1 multiply-add = 2 FLOPs, at the traced example shapes{_example_dims(ir)})")
    lines.append(f"captured with {info['capture']} in {info.get('capture_seconds', '?')} s; dynamic dims: "
                 f"{', '.join(info.get('dynamic') or []) or 'none'}; constructor arguments verified for "
                 f"{verified}/{len(ir.modules)} modules"
                 + ("; eval mode runs a different graph than training" if ir.eval_graph is not None else ""))
    limits = _size_limits(ir)
    if limits:
        lines.append(limits)
    return "\n".join(lines)


def _size_limits(ir: IR) -> str:
    """The bounds and conditions the traced graph holds for on its symbolic input sizes, in one line."""
    bounds = [f"'{name}' dim {d}: {size_span(lo, hi)}" for name, dims in (ir.info.get("input_ranges") or {}).items()
              for d, (lo, hi) in dims.items()]
    conditions = sorted(ir.info.get("size_conditions") or [], key=len)
    parts = ([f"bounds {'; '.join(bounds)}"] if bounds else []) + (
        [f"{len(conditions)} size condition(s), e.g. {conditions[0]}"] if conditions else [])
    return ("sizes the graph holds for (other sizes are refused): " + "; ".join(parts)) if parts else ""


def _example_dims(ir: IR) -> str:
    """The example values of the symbolic dims, e.g. ", B=2"."""
    seen: dict[str, int] = {}
    for p in ir.graph.placeholders:
        if p.kind == "input" and isinstance(p.meta, dict):
            for size, sym in zip(p.meta["shape"], p.meta.get("sym") or []):
                if sym and sym.isidentifier():
                    seen.setdefault(sym, size)
    return "".join(f", {k}={v}" for k, v in seen.items())


def to_json(ir: IR, depth: int | None, root: str = "") -> str:
    return json.dumps({"model": ir.info["model_class"], "capture": ir.info["capture"],
                       "dynamic": ir.info.get("dynamic"), "input_ranges": ir.info.get("input_ranges") or {},
                       "size_conditions": ir.info.get("size_conditions") or [], "modules": rows(ir, depth, root),
                       "metadata": {n.name: n.meta for _, n in ir.walk(root)}}, indent=1)


def dot(ir: IR, level: str) -> str:
    """Graphviz source of the dataflow among the children of module ``level``."""
    g = ir.graph_of(level)
    lines = [f'digraph "{level or "<root>"}" {{', "  rankdir=TB; node [shape=box, fontsize=10];"]
    ids = {n: f"n{i}" for i, n in enumerate(g.nodes)}
    for n, attrs in g.nodes(data=True):
        if attrs.get("kind") == "module":
            label = f"{n.rpartition('.')[2]}\\n{attrs['cls'].rpartition('.')[2]}"
            style = ""
        elif attrs.get("kind") == "op":
            label = attrs["target"].removeprefix("aten.").rpartition(".")[0] or attrs["target"]
            style = ", shape=ellipse"
        else:
            label, style = n, ", shape=plaintext"
        lines.append(f'  {ids[n]} [label="{label}"{style}];')
    for a, b, attrs in g.edges(data=True):
        lines.append(f'  {ids[a]} -> {ids[b]} [label="{" ".join(attrs["shapes"][:2])}", fontsize=8];')
    lines.append("}")
    return "\n".join(lines) + "\n"
