"""What switching a supernet to archs it has not seen costs over a long run (issue 4: switching must not
rebuild anything expensive), on the IR issue's test models: ``set_arch`` of a new random arch (binding the
supernet's program template), then the resident memory the run adds once its memo tables are full.

    python bench/arch_switch.py            # the 16 test models, 600 random archs each (a few minutes)
    python bench/arch_switch.py --quick    # 3 models, 300 archs

Writes bench/results/arch_switch[-quick].json and the ``arch-switch`` section of docs/train.md
(--quick: docs/benchmarks-quick.md).
"""
from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import common  # noqa: E402
import models  # noqa: E402  (tests/models.py: the test list and its builders)

from osf.space.liveness import WIDTHS_KEPT  # noqa: E402

SEED = 0
QUICK = ("resnet50", "densenet121", "bert")


def resident_mb() -> float:
    """The process's resident memory now (Linux ``/proc/self/statm``), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memo_entries(supernet) -> int:
    """Entries of the program template's memo tables (per op and per tensor, at the widths they depend on)."""
    bound = supernet._get_template()
    if bound is None:
        return 0
    tables = [t for g in bound.graphs.values() for _, t, _ in g.dynamic] + list(bound.tensor_tables.values())
    return sum(len(t.values) for t in tables) + sum(len(m) for m in bound.dim_cuts.memo.values())


def measure(name: str, archs: int) -> dict:
    supernet, *_ = models.supernet(name)
    supernet.set_arch(supernet.space.max())  # generates the template
    seen, times, half = set(), [], None
    for i in range(archs):
        arch = supernet.space.sample(SEED + 10_000 + i)
        key = supernet._key(arch)
        started = time.perf_counter()
        supernet.set_arch(arch)
        elapsed = time.perf_counter() - started
        if key not in seen:  # a new arch (random archs that drop the same units may coincide)
            seen.add(key)
            times.append(elapsed)
        if i == archs // 2:
            gc.collect()
            half = resident_mb()
    gc.collect()
    return {"model": name, "archs": archs, "new_archs": len(times), "template": supernet.template_status,
            "switch_ms_median": statistics.median(times) * 1e3,
            "switch_ms_p95": sorted(times)[int(0.95 * (len(times) - 1))] * 1e3,
            "memo_entries": memo_entries(supernet), "second_half_mb": resident_mb() - half}


def section(env: dict, rows: list[dict]) -> str:
    lines = ["<!-- arch-switch:start -->", "## Switching to new archs over a long run", "",
             f"`{env['command']}` — {env['date']}, {env['cpus']} CPUs, torch {env['torch']}, osf {env['osf']}, "
             f"seed {SEED}. Per model, `set_arch` of {rows[0]['archs'] if rows else 0} random archs in a row, "
             "as a training run samples them: the time of each switch to an arch not seen before (median, "
             "95th percentile; it includes Python's cyclic garbage collections, which the memo tables make "
             "longer), the entries of the template's memo tables at the end (each op and tensor remembers the "
             f"last {WIDTHS_KEPT} combinations of the widths it depends on) and the resident memory the second "
             "half of the run added (a long run's growth once the tables are full; the arch cache holds the "
             "last 64 archs).", "",
             "| model | new archs | template | new-arch switch ms (median) | p95 ms | memo entries | "
             "MB added by the second half |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['new_archs']} | {r['template']} | {r['switch_ms_median']:.2f} | "
                     f"{r['switch_ms_p95']:.2f} | {r['memo_entries']:,} | {r['second_half_mb']:.1f} |")
    return "\n".join(lines + ["<!-- arch-switch:end -->"])


def main(argv: list[str] | None = None) -> int:
    return common.per_model_main(argv, doc=__doc__, script="arch_switch.py", result="arch_switch",
                                 section_name="arch-switch", quick=(QUICK, 300), full=(models.ALL, 600),
                                 measure=measure, section=section, docs=common.ROOT / "docs" / "train.md")


if __name__ == "__main__":
    sys.exit(main())
