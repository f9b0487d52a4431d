"""The ``osf`` command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..ir import OsfError, load_ir, trace
from . import inspect_cmd
from .models import SpecError, is_saved_ir, resolve


def load_model_ir(spec: str, image_size: int | None = None):
    """An IR for a model spec (tracing it) or a saved IR directory."""
    if is_saved_ir(spec):
        return load_ir(spec)
    m = resolve(spec, image_size=image_size)
    return trace(m.model, m.args, m.kwargs, **m.trace_options)


def cmd_inspect(a: argparse.Namespace) -> int:
    ir = load_model_ir(a.model, a.image_size)
    root = a.module or ""
    ir.node(root)
    if a.dot:
        Path(a.dot).write_text(inspect_cmd.dot(ir, a.level if a.level is not None else root))
        print(f"wrote {a.dot} (dataflow among the children of '{a.level or root or '<root>'}')", file=sys.stderr)
    print(inspect_cmd.to_json(ir, a.depth, root) if a.json else inspect_cmd.table(ir, a.depth, root))
    if a.save:
        ir.save(a.save)
        print(f"saved IR to {a.save}", file=sys.stderr)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="osf", description="Turn any PyTorch model into a once-for-all supernet.")
    sub = p.add_subparsers(dest="command", required=True)
    i = sub.add_parser("inspect", help="capture a model and print its module tree with shapes, params and FLOPs",
                       description="Capture MODEL into osf's hierarchical IR and print the module tree. MODEL is "
                       "torchvision:NAME, timm:NAME, hf:ARCH (bert, roberta, distilbert, gpt2, vit), sam:vit_b, "
                       "sam:tiny, minilm, python:pkg.module:factory, or a directory written by --save / ir.save.")
    i.add_argument("model")
    i.add_argument("--depth", type=int, default=None, help="fold the tree below this nesting level")
    i.add_argument("--module", default=None, help="show only this module's subtree (qualified name)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--dot", metavar="FILE", help="write a Graphviz drawing of one level's dataflow")
    i.add_argument("--level", default=None, help="module whose children --dot draws (default: --module or root)")
    i.add_argument("--image-size", type=int, default=None, help="example image size for vision models")
    i.add_argument("--save", metavar="DIR", help="also save the IR (graph JSON + safetensors) to DIR")
    i.set_defaults(func=cmd_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (OsfError, SpecError, KeyError, FileExistsError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"osf {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
