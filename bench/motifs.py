"""How much the motif view shrinks each test model's search space: distinct subnets against motifs, for
the full space and for depth alone (every width fixed at its maximum).

    python bench/motifs.py          # the 16 models of the IR issue's test list (a few minutes)

Writes bench/results/motifs.json and the ``motifs`` section of docs/space.md.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import common  # noqa: E402
import models  # noqa: E402  (tests/models.py: the test list and its builders)

import osf  # noqa: E402


def measure(name: str) -> dict:
    supernet, *_ = models.supernet(name)
    space = supernet.space
    depth = osf.SearchSpace(supernet.ir, width_ratios=(1.0,))
    return {"model": name, "groups": len(space.groups), "units": len(space.units),
            "log10_subnets": round(space.log10_size(), 2), "log10_motifs": round(math.log10(space.num_motifs()), 2),
            "depth_subnets": depth.size(), "depth_motifs": depth.num_motifs()}


def section(env: dict, rows: list[dict]) -> str:
    lines = ["<!-- motifs:start -->", "## How much motifs shrink the space (the test models)", "",
             f"`{env['command']}` — {env['date']}, torch {env['torch']}, osf {env['osf']}; default space options "
             "(width ratios 0.25/0.5/0.75/1, multiples of 8). *Depth only*: the same units, every width at its "
             "maximum. Subnets are distinct architectures; motifs count them up to isomorphic sibling units.", "",
             "| model | groups | units | subnets (log10) | motifs (log10) | shrink | depth only: subnets | "
             "depth only: motifs |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        shrink = 10 ** (r["log10_subnets"] - r["log10_motifs"])
        lines.append(f"| {r['model']} | {r['groups']} | {r['units']} | {r['log10_subnets']} | {r['log10_motifs']} | "
                     f"{shrink:,.0f}× | {r['depth_subnets']:,} | {r['depth_motifs']:,} |")
    return "\n".join(lines + ["<!-- motifs:end -->"])


def main() -> None:
    torch.set_num_threads(2)
    rows = []
    for name in models.ALL:
        rows.append(measure(name))
        print(json.dumps(rows[-1]), flush=True)
    env = common.environment(command="python bench/motifs.py")
    common.write_atomic(common.ROOT / "bench" / "results" / "motifs.json",
                        json.dumps({"environment": env, "rows": rows}, indent=1))
    common.update_section(common.ROOT / "docs" / "space.md", "motifs", section(env, rows))


if __name__ == "__main__":
    main()
