"""``trace(dynamic_spatial=True)`` against the default static trace, on CNNs and segmentation models: trace
time, width groups, the bounds and size conditions export put on height and width, and whether the supernet
run at another size (256×288, not square) gives the original model's outputs (``extract(max())``) and
agrees with its subnets (``min()`` and a sampled arch, extracted against ``set_arch``); at a third size
(232×200, not a multiple of 32) the extracted model must give the original's outputs or refuse the size.

    python bench/dynamic_spatial.py           # 15 torchvision / timm models (about 15 minutes on 2 cores)
    python bench/dynamic_spatial.py --quick   # one model

Writes bench/results/dynamic_spatial[-quick].json and the ``dynamic-spatial`` section of
docs/benchmarks.md (--quick: docs/benchmarks-quick.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import osf  # noqa: E402

SEED = 0
TRACED, OTHER, THIRD = (2, 3, 224, 224), (2, 3, 256, 288), (2, 3, 232, 200)
ATOL, RTOL = 1e-3, 1e-3  # the original against the rebuilt maximal subnet (sums in another order)


def _builders() -> dict[str, Callable[[], torch.nn.Module]]:
    import timm
    import torchvision.models as tv
    seg = tv.segmentation
    out: dict[str, Callable[[], torch.nn.Module]] = {
        name: (lambda name=name: tv.get_model(name, weights=None))
        for name in ("resnet50", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "regnet_y_400mf",
                     "shufflenet_v2_x1_0")}
    out["googlenet"] = lambda: tv.googlenet(weights=None, aux_logits=False, init_weights=False)
    out["deeplabv3_mobilenet_v3_large"] = lambda: seg.deeplabv3_mobilenet_v3_large(weights=None,
                                                                                   weights_backbone=None)
    out["lraspp_mobilenet_v3_large"] = lambda: seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    out.update({f"timm:{name}": (lambda name=name: timm.create_model(name))
                for name in ("resnet18d", "efficientnet_b0", "convnext_atto", "regnetx_002", "mobilevit_xxs",
                             "poolformer_s12")})
    return out


QUICK = ("timm:resnet18d",)


def _first(y: Any) -> torch.Tensor:
    return y["out"] if isinstance(y, dict) else y


def measure(name: str, build: Callable[[], torch.nn.Module]) -> dict:
    torch.manual_seed(SEED)
    model = build().eval()
    x, other = torch.randn(TRACED), torch.randn(OTHER)
    row: dict[str, Any] = {"model": name}
    started = time.perf_counter()
    static = osf.Supernet(model, (x,))
    row["static_s"], row["static_groups"] = round(time.perf_counter() - started, 1), len(static.space.groups)
    del static
    started = time.perf_counter()
    sn = osf.Supernet(model, (x,), trace_options={"dynamic_spatial": True}).eval()
    row["dynamic_s"], row["dynamic_groups"] = round(time.perf_counter() - started, 1), len(sn.space.groups)
    row["symbolic"] = [s for s in sn.ir.info["dynamic"] if s != "B"]
    row["bounds"] = sn.ir.info["input_ranges"]
    row["conditions"] = len(sn.ir.info["size_conditions"])
    with torch.no_grad():
        full = sn.extract(sn.space.max()).eval()
        row["third_size"] = _outcome(model, full, torch.randn(THIRD))[0]
        outcome, refusal = _outcome(model, full, other)
        if refusal:  # a condition export assumed: no subnet runs there either
            row["refused"] = refusal
            return row
        row["max_equals_original"] = outcome == "same"
        agree = []
        for arch in (sn.space.min(), sn.space.sample(SEED)):
            with sn.set_arch(arch):
                on_shared = _first(sn(other))
            agree.append(torch.allclose(_first(sn.extract(arch).eval()(other)), on_shared, atol=1e-4, rtol=1e-3))
        row["subnets_agree"] = all(agree)
    return row


def _outcome(model: torch.nn.Module, full: torch.nn.Module, x: torch.Tensor) -> tuple[str, str | None]:
    """``same``: the extracted maximal subnet gives the original's outputs at ``x``'s size; ``refused``: it
    raises ``osf.InputError`` there (with the condition it names); ``WRONG``: a silent mismatch."""
    try:
        got = _first(full(x))
    except osf.InputError as e:
        return "refused", str(e).partition(": ")[2].partition(". ")[0]
    expected = _first(model(x))
    same = expected.shape == got.shape and torch.allclose(expected, got, atol=ATOL, rtol=RTOL)
    return ("same" if same else "WRONG"), None


def _bounds(row: dict) -> str:
    parts = [f"dim {d}: {lo or ''}..{hi or ''}" for bounds in row["bounds"].values() for d, (lo, hi) in bounds.items()]
    return ", ".join(parts) or "none"


def section(env: dict, rows: list[dict]) -> str:
    ok = sum(r.get("max_equals_original") is True and r.get("subnets_agree") is True for r in rows)
    refused = [r["model"] for r in rows if "refused" in r]
    lines = ["<!-- dynamic-spatial:start -->", "## Dynamic height and width (`trace(dynamic_spatial=True)`)", "",
             f"Generated by `{env['command']}` on {env['date']}.", "",
             f"- Machine: {env['platform']} ({env['machine']}), {env['cpus']} CPUs; versions: python {env['python']}, "
             f"torch {env['torch']}, torchvision {env['torchvision']}, timm {env['timm']}, osf {env['osf']}",
             f"- Seed {SEED}; traced at {'×'.join(map(str, TRACED))}, run at {'×'.join(map(str, OTHER))} in eval "
             f"mode. *Trace s*: `osf.Supernet(model, (x,))` (trace + space + supernet), static and with "
             f"`dynamic_spatial`. *Bounds*: what export put on the symbolic dims (`ir.info['input_ranges']`), "
             f"refused outside them. *Max = original*: `extract(max())` at the other size against the original "
             f"model (atol {ATOL}, rtol {RTOL}); *subnets agree*: `min()` and one sampled arch, extracted against "
             f"`set_arch` on the shared weights, at the other size (atol 1e-4, rtol 1e-3). *Conditions*: "
             f"relations between sizes export assumed beyond the bounds (`ir.info['size_conditions']`), checked "
             f"per new size. *At {'×'.join(map(str, THIRD[2:]))}*: `extract(max())` there gives the original's "
             f"outputs (*same*) or refuses the size with `osf.InputError` (*refused*); *WRONG* would be a silent "
             f"mismatch",
             f"- {ok} of {len(rows)} models follow the other size exactly"
             + (f"; {', '.join(refused)} refused it (a condition export assumed, shown in the row)" if refused else ""),
             "",
             "| model | trace s (static / dynamic) | groups (static / dynamic) | symbolic dims | bounds | conditions | "
             f"max = original | subnets agree | at {'×'.join(map(str, THIRD[2:]))} |",
             "|---|---:|---:|---|---|---:|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | – | – | – | – | – | {r['error']} | – | – |")
            continue
        if "refused" in r:
            lines.append(f"| {r['model']} | {r['static_s']} / {r['dynamic_s']} | {r['static_groups']} / "
                         f"{r['dynamic_groups']} | {', '.join(r['symbolic']) or 'none'} | {_bounds(r)} | "
                         f"{r['conditions']} | refused: `{r['refused']}` | – | {r['third_size']} |")
            continue
        lines.append(f"| {r['model']} | {r['static_s']} / {r['dynamic_s']} | {r['static_groups']} / "
                     f"{r['dynamic_groups']} | {', '.join(r['symbolic']) or 'none'} | {_bounds(r)} | "
                     f"{r['conditions']} | {'yes' if r['max_equals_original'] else 'NO'} | "
                     f"{'yes' if r['subnets_agree'] else 'NO'} | {r['third_size']} |")
    lines.append("<!-- dynamic-spatial:end -->")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one model")
    opts = parser.parse_args(argv)
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    builders = _builders()
    names = QUICK if opts.quick else tuple(builders)
    rows = []
    for i, name in enumerate(names, 1):
        try:
            rows.append(measure(name, builders[name]))
        except Exception as e:  # noqa: BLE001 - a failing model is a row of the table, not the end of the run
            rows.append({"model": name, "error": f"{type(e).__name__}: {str(e)[:120]}"})
        print(f"[{i}/{len(names)}] {json.dumps(rows[-1])}", flush=True)
    env = common.environment(command="python bench/dynamic_spatial.py" + (" --quick" if opts.quick else ""),
                             seed=SEED)
    common.publish("dynamic_spatial", "dynamic-spatial", opts.quick, env, rows, section(env, rows))
    return 0 if all("error" not in r and r["third_size"] != "WRONG"
                    and ("refused" in r or (r["max_equals_original"] and r["subnets_agree"])) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
