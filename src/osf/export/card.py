"""The model card of an exported subnet: ``card.json`` (machine-readable) and ``model_card.md``."""
from __future__ import annotations

import datetime
import platform
from typing import Any

import torch

from ..ir.codegen import size_span
from ..ir.flops import human
from ..ir.serial import dtype_from_name, dtype_name
from ..space.arch import Arch
from ..supernet.supernet import Supernet
from .inputs import input_signature

FORMAT = "osf-export-1"


def make_card(supernet: Supernet, arch: Arch, *, files: list[str], skipped: dict[str, str],
              metrics: dict[str, Any] | None, source: str | None, osf_version: str,
              dtype: torch.dtype | None = None, pt2_tuples: list[str] | None = None) -> dict[str, Any]:
    """Everything ``card.json`` holds: costs of the subnet and of the full model, the caller's metrics,
    the arch in brief, the inputs, provenance, and what to import before loading the ``.pt2``. ``dtype``:
    the one the subnet was cast to for export (its floating-point inputs take it too); ``pt2_tuples``: the
    namedtuple (and ``torch.return_types``) classes the ``.pt2`` returns as plain tuples."""
    space, ir = supernet.space, supernet.ir
    cost, full = supernet.cost(arch), supernet.cost(space.max())
    units_dropped = space.dropped_units(arch)
    inputs = input_signature(ir)
    if dtype is not None:
        name = dtype_name(dtype)
        for m in inputs:
            m["dtype"] = name if dtype_from_name(m["dtype"]).is_floating_point else m["dtype"]
    example_dims = {s: d for m in inputs for s, d in zip(m["shape"], _traced_shape(ir, m["name"]))
                    if isinstance(s, str)}
    versions = {"osf": osf_version, "torch": torch.__version__, "python": platform.python_version()}
    if "model.onnx" in files:
        import onnx
        versions["onnx"] = onnx.__version__
    return {
        "format": FORMAT,
        "model": {"class": ir.info.get("model_class", ir.modules[""].class_path), "source": source},
        "dtype": dtype_name(dtype) if dtype is not None else _weights_dtype(supernet),
        "params": cost["params"], "flops": cost["flops"],
        "full_model": {"params": full["params"], "flops": full["flops"]},
        "flops_at": example_dims,
        "metrics": dict(metrics or {}),
        "arch": {
            "width": {g.key: {"kept": arch.width.get(g.key, g.size), "of": g.size, "kind": g.kind}
                      for g in space.groups},
            "units_dropped": units_dropped,
            "units": len(space.units),
        },
        "space_options": {k: list(v) if isinstance(v, tuple) else v for k, v in space.options.items()},
        "inputs": inputs,
        "size_conditions": list(ir.info.get("size_conditions") or []),
        "import_before_loading": _output_packages(ir.info.get("eval_out_spec") or ir.info["out_spec"],
                                                  set(pt2_tuples or ())),
        "pt2_tuples": list(pt2_tuples or ()),
        "files": files,
        "skipped": skipped,
        "versions": versions,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _weights_dtype(supernet: Supernet) -> str | None:
    """The dtype of the supernet's floating-point parameters (the first one's)."""
    return next((dtype_name(p.dtype) for p in supernet.parameters() if p.is_floating_point()), None)


def _traced_shape(ir, name: str) -> list[int]:
    return next(p.meta["shape"] for p in ir.graph.placeholders if p.name == name)


def _output_packages(spec: Any, as_tuples: set[str]) -> list[str]:
    """Modules defining the output containers (e.g. ``transformers.modeling_outputs``): ``torch.export.load``
    needs them imported (their classes register with pytree) to rebuild the output structure; not those of
    the classes ``as_tuples`` the ``.pt2`` returns as plain tuples."""
    found: set[str] = set()

    def visit(s: Any) -> None:
        if isinstance(s, dict):
            if "class" in s and s["class"] not in as_tuples:
                found.add(s["class"].rpartition(".")[0])
            for c in s.get("children", []):
                visit(c)
    visit(spec)
    return sorted(found)


def _tuples_note(card: dict[str, Any]) -> str:
    classes = card.get("pt2_tuples") or []
    if not classes:
        return ""
    return (f"; {', '.join(c.rpartition('.')[2] for c in classes)} returned as plain tuples, its fields in "
            "order (a .pt2 file cannot name their classes)")


def _value(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:.4g}"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def markdown(card: dict[str, Any]) -> str:
    """``model_card.md``: the card for people, with how to load the files with plain PyTorch."""
    cls = card["model"]["class"]
    short = cls.rpartition(".")[2]
    full = card["full_model"]
    at = ", ".join(f"{k}={v}" for k, v in card["flops_at"].items())
    lines = [f"# {short} subnet", "",
             f"A subnet of `{cls}` extracted from an osf supernet: a plain PyTorch model, no osf needed to run it"
             + (f"; weights in {card['dtype']}." if card.get("dtype") else "."),
             "", "| | this subnet | full model | ratio |", "|---|---:|---:|---:|",
             f"| params | {card['params']:,} ({human(card['params'])}) | {full['params']:,} | "
             f"{_percent(card['params'], full['params'])} |",
             f"| FLOPs{f' ({at})' if at else ''} | {card['flops']:,} ({human(card['flops'])}) | {full['flops']:,} | "
             f"{_percent(card['flops'], full['flops'])} |"]
    if card["metrics"]:
        lines += ["", "Metrics reported at export:", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {_value(v)} |" for k, v in card["metrics"].items()]
    arch = card["arch"]
    lines += ["", "## Architecture", "", "| width group | kind | kept | of |", "|---|---|---:|---:|"]
    lines += [f"| `{k}` | {w['kind']} | {w['kept']} | {w['of']} |" for k, w in arch["width"].items()]
    dropped = arch["units_dropped"]
    lines += ["", f"Removable units: {arch['units']}; dropped: "
              + (", ".join(f"`{u}`" for u in dropped) if dropped else "none") + ".",
              "", "The full arch (`osf.Arch` JSON) is in `arch.json`.", "", "## Inputs", ""]
    for m in card["inputs"]:
        shape = ", ".join(str(d) for d in m["shape"])
        lines.append(f"- `{m['name']}`: {m['dtype']} [{shape}]")
    dyn = sorted({d for m in card["inputs"] for d in m["shape"] if isinstance(d, str)})
    bounded = [f"`{m['name']}` dim {d} ({m['shape'][int(d)]}): {size_span(lo, hi)}"
               for m in card["inputs"] for d, (lo, hi) in m["bounds"].items()]
    if dyn:
        lines += ["", f"Named dims ({', '.join(dyn)}) are dynamic: "
                  + (f"any size within the bounds the traced graph holds for ({'; '.join(bounded)})."
                     if bounded else "any size works.")]
    conditions = card["size_conditions"]
    if conditions:
        shortest = sorted(conditions, key=len)[:3]
        examples = ", ".join(f"`{c}`" for c in shortest)
        lines += ["", f"The traced graph also relies on {len(conditions)} condition(s) between input sizes "
                  f"(all in `card.json` under `size_conditions`, `cdiv` being ceiling division; e.g. {examples}). "
                  "osf's models and the `.pt2` program refuse sizes that break one (the `.pt2` holds them as "
                  "guards: an `AssertionError`); the ONNX file does not check them, and such a size may give a "
                  "wrong output there."]
    call = ", ".join(f"{m['name']}={m['name']}" if m["keyword"] else m["name"] for m in card["inputs"])
    lines += ["", "## Load it with plain PyTorch", "", "```python", "import torch"]
    lines += [f"import {p}  # defines the output type" for p in card["import_before_loading"]]
    lines += [
              'model = torch.export.load("model.pt2").module()   # inference (eval) mode',
              f"out = model({call})  # called like the original model" + _tuples_note(card), "",
              "# the weights alone (safetensors, the "
              "subnet's state_dict; same names as the original model, smaller shapes):",
              "from safetensors.torch import load_file", 'model.load_state_dict(load_file("weights.safetensors"))',
              "```"]
    if "model.onnx" in card["files"]:
        feeds = ", ".join(f'"{m["name"]}": {m["name"]}.numpy()' for m in card["inputs"])
        lines += ["", "ONNX:", "", "```python", "import onnxruntime",
                  'session = onnxruntime.InferenceSession("model.onnx")', f"outputs = session.run(None, {{{feeds}}})",
                  "```"]
    for fmt, why in card["skipped"].items():
        lines += ["", f"Not written: {fmt} ({why})."]
    v = card["versions"]
    lines += ["", "## Provenance", "", f"- source model: `{cls}`"
              + (f"; {card['model']['source']}" if card["model"]["source"] else ""),
              f"- search space options: `{card['space_options']}`",
              "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
              f"- exported: {card['created']}", ""]
    return "\n".join(lines)
