"""How long ``Supernet.extract`` takes against a plain copy of the kept weights, on the IR issue's test
models: the supernet's first extraction (which generates its extraction template), the first extraction
of further archs (the template bound to each) and a repeated one (cached per arch, so only the weights
are cut and copied). Target: within 2× of the copy.

    python bench/extraction.py            # the 16 test models, 5 sampled archs each (a few minutes)
    python bench/extraction.py --quick    # 3 models, 2 archs

Writes bench/results/extraction[-quick].json and the ``extraction`` section of docs/space.md (--quick:
docs/benchmarks-quick.md).
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import common  # noqa: E402
import models  # noqa: E402  (tests/models.py: the test list and its builders)

SEED = 0
QUICK = ("resnet18", "vit_b_16", "bert")


def measure(name: str, archs: int) -> dict:
    supernet, *_ = models.supernet(name)
    # the supernet's first extraction also generates its extraction template (once per supernet)
    first = common.extraction_vs_copy(supernet, supernet.space.sample(SEED + archs))
    rows = [common.extraction_vs_copy(supernet, supernet.space.sample(SEED + i)) for i in range(archs)]
    template = supernet.extraction_status == "template"
    return {"model": name, "archs": archs, "template": template,
            "params": sum(t.numel() for t in supernet.tensors().values()),
            "supernet_first_s": first["extract_first_s"], "supernet_first_vs_copy": first["first_vs_copy"],
            **{key: statistics.median(r[key] for r in rows)
               for key in ("extract_first_s", "extract_again_s", "copy_s", "clone_s", "first_vs_copy", "again_vs_copy",
                           "again_vs_clone")}}


def section(env: dict, rows: list[dict]) -> str:
    met = sum(r["again_vs_copy"] <= 2 for r in rows)
    met_first = sum(r["first_vs_copy"] <= 2 for r in rows)
    strict = sum(r["again_vs_clone"] <= 2 for r in rows)
    lines = ["<!-- extraction:start -->", "## Extraction time against a plain weight copy", "",
             f"`{env['command']}` — {env['date']}, {env['cpus']} CPUs, torch {env['torch']}, osf {env['osf']}, "
             f"seed {SEED}. Per model, the supernet's first `extract` (of one more sampled arch), which also "
             "generates the supernet's extraction template (once), then the median over "
             f"{rows[0]['archs'] if rows else 0} other sampled archs of: their first `extract(arch)` (the template "
             "bound to the arch: which ops run, their shape arguments, which modules and tensors the model keeps; "
             "no code generated), a repeated `extract(arch)` (cached per arch: only the weights are cut and "
             "copied), against a plain `state_dict` copy of the extracted model, "
             "`{k: v.clone() for k, v in model.state_dict().items()}` (the issue's baseline), and against the "
             "bare clone of its tensors from a ready list, the least any copy can cost (each timed in blocks of "
             "calls lasting about 2 ms, median of 5 blocks, the three alternating). *Template*: whether the model's "
             "extractions bind the template (else each arch's IR is rewritten and its forward generated).", "",
             f"Target within 2× of the `state_dict` copy: met by the first extraction of an arch on {met_first} of "
             f"{len(rows)} models and by repeated extraction on {met}; repeated extraction within 2× of the bare "
             f"clone on {strict}. Extraction has to create every module and wrap every parameter (a few µs each in "
             "Python), which the bare clone skips: it stays above 2× of it wherever the weights are small for "
             "their number of tensors. A new arch also costs the memoised tables of its widths (the cut of each "
             "tensor and the shape arguments of each op, per combination of the widths they depend on): a "
             "model whose tensors each depend on many groups (DenseNet's concatenations) meets few combinations "
             "twice.", "",
             "| model | shared params | template | supernet's first extract ms (÷ copy) | first extract ms | "
             "again ms | `state_dict` copy ms | bare clone ms | first ÷ copy | again ÷ copy | again ÷ clone |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {'yes' if r['template'] else 'no'} | "
                     f"{r['supernet_first_s'] * 1e3:.1f} ({r['supernet_first_vs_copy']:.1f}×) | "
                     f"{r['extract_first_s'] * 1e3:.1f} | "
                     f"{r['extract_again_s'] * 1e3:.2f} | {r['copy_s'] * 1e3:.2f} | {r['clone_s'] * 1e3:.2f} | "
                     f"{r['first_vs_copy']:.1f}× | {r['again_vs_copy']:.1f}× | {r['again_vs_clone']:.1f}× |")
    return "\n".join(lines + ["<!-- extraction:end -->"])


def main(argv: list[str] | None = None) -> int:
    return common.per_model_main(argv, doc=__doc__, script="extraction.py", result="extraction",
                                 section_name="extraction", quick=(QUICK, 2), full=(models.ALL, 5),
                                 measure=measure, section=section, docs=common.ROOT / "docs" / "space.md")


if __name__ == "__main__":
    sys.exit(main())
