"""``osf demo``: every stage on a built-in model and the digits data set (shipped with scikit-learn), in a
few minutes on a laptop CPU: trace a small residual CNN (or ViT) into a supernet, train it, search the
accuracy / FLOPs front, export the best subnets at about 25 %, 50 % and 100 % of the full model's FLOPs,
and measure each exported file's held-out accuracy and CPU latency. Writes a report directory:

    OUT/summary.md     the results table and what each number means
    OUT/summary.json   the same, machine-readable
    OUT/front.png      accuracy against FLOPs, every evaluated subnet, the front highlighted
    OUT/front.json     the searched front (osf.Front)
    OUT/subnets/       one osf export per budget (model.pt2, model.onnx, weights, arch, model card)
    OUT/run/           the training run (osf search / osf export accept it)

The digits are split three ways: training, validation (the search's metric) and a held-out test set
that neither training nor the search sees; the exported models are scored on the latter."""
from __future__ import annotations

import json
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..ir.io import staged_directory
from ..search.front import Front, Point
from ..search.latency import time_forwards
from .builtin import digits
from .config import ExportSettings, SearchSettings, SpaceSettings, TrainSettings
from .pipeline import export_run, say, search_run, train_run

BUDGETS = (25, 50, 100)  # percent of the full model's FLOPs
BATCH = 256              # the second latency column: a batch of this many images
BAND = 0.75              # an export for budget b has between 0.75 b and b of the FLOPs, when the search found one
VALIDATION_SHARE = 0.2   # of the digits training split, for the search


def digits_search_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The demo's data spec (``python:osf.cli.demo:digits_search_split``): the digits training split cut
    into training and validation; the digits test split stays held out."""
    x, y, _, _ = digits()
    cut = int(len(x) * (1 - VALIDATION_SHARE))
    return x[:cut], y[:cut], x[cut:], y[cut:]


@dataclass
class DemoSettings:
    """How much the demo does (the defaults fit in about two minutes on 2 CPU cores)."""
    model: str = "resnet"
    epochs: int = 20
    budget: int = 120
    seed: int = 0
    latency_runs: int = 50


def run_demo(out: str | Path, settings: DemoSettings | None = None, *, force: bool = False,
             progress: bool = True) -> dict[str, Any]:
    """Run the demo into the report directory ``out`` (written beside it and renamed into place when
    complete; an existing ``out`` is replaced only with ``force``). Returns the summary (paths in it are
    relative to ``out``)."""
    out, settings = Path(out), settings or DemoSettings()
    if out.exists() and not force:
        raise FileExistsError(f"'{out}' already exists; pass --force to replace it (the old report stays until "
                              "the new one is complete) or choose another --out")
    start = time.perf_counter()
    with staged_directory(out, overwrite=force) as tmp:
        run_dir = tmp / "run"
        say(f"[1/4] training the supernet of builtin:{settings.model} on digits ({settings.epochs} epochs)")
        trained = train_run(f"builtin:{settings.model}", "python:osf.cli.demo:digits_search_split", run_dir,
                            SpaceSettings(multiple_of=4),
                            TrainSettings(epochs=settings.epochs, seed=settings.seed, checkpoint_every=10_000),
                            progress=progress)
        say(f"[2/4] searching the accuracy / FLOPs front ({settings.budget} subnets, surrogate-assisted evolution)")
        front = search_run(run_dir, SearchSettings(budget=settings.budget, seed=settings.seed,
                                                   out=str(tmp / "search")), progress=progress)
        say(f"[3/4] exporting the best subnets at about {', '.join(f'{b}%' for b in BUDGETS)} of the FLOPs")
        picks = {b: pick(front, b) for b in BUDGETS}
        exports = {b: export_run(run_dir, ExportSettings(out=str(tmp / "subnets" / f"flops-{b}pct"),
                                                         arch=json.dumps(p.arch.to_json())),
                                 source=f"(osf demo, run directory {out / 'run'})", progress=False)
                   for b, p in picks.items()}
        say("[4/4] scoring the exported files on held-out digits and timing them on the CPU")
        _, _, x_test, y_test = digits()
        rows = [row | {"path": str(path.relative_to(tmp))}
                for row, path in zip(_measure(exports, x_test, y_test, settings.latency_runs), exports.values())]
        full = max(rows, key=lambda r: r["flops"])
        for r in rows:
            r["speedup"] = round(full[f"latency_{BATCH}_ms"] / r[f"latency_{BATCH}_ms"], 2)
        shutil.copy2(tmp / "search" / "front.json", tmp / "front.json")
        try:  # the search's plot, with the exported subnets ringed
            front.plot(tmp / "front.png", marked={f"exported {b}%": p for b, p in picks.items()})
        except ImportError:
            say("matplotlib is not installed: no front.png (pip install matplotlib)")
        summary = {
            "model": f"builtin:{settings.model}", "data": "scikit-learn digits (8x8), train / validation / held-out "
            f"test = {len(x_test)} held-out images", "settings": vars(settings), "train": trained.result,
            "front_size": len(front.pareto), "evaluated": len(front.points),
            "full_model": {"params": front.reference.get("params"), "flops": front.reference.get("flops")},
            "subnets": rows, "seconds": round(time.perf_counter() - start, 1),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        (tmp / "summary.md").write_text(markdown(summary))
    return summary


def pick(front: Front, percent: int) -> Point:
    """The most accurate evaluated subnet with ``BAND`` to 100 % of ``percent`` % of the full model's FLOPs
    (the front alone may stop short: on digits a quarter of the model is as accurate as all of it), or
    the front's best within the budget when none was evaluated in that band."""
    limit = front.reference["flops"] * percent / 100
    band = [p for p in front.points if BAND * limit <= p.flops <= limit]
    if not band:
        return front.best(flops=f"{percent}%")
    return max(band, key=lambda p: (p.accuracy, -p.flops))


def _measure(exports: dict[int, Path], x: torch.Tensor, y: torch.Tensor, runs: int) -> list[dict[str, Any]]:
    """Held-out accuracy and CPU latency (batch 1 and ``BATCH``) of each exported ``model.pt2``, loaded with
    plain torch; the models are timed in interleaved rounds, so the speed-ups compare like with like."""
    cards = {b: json.loads((path / "card.json").read_text()) for b, path in exports.items()}
    models = {b: torch.export.load(str(path / "model.pt2")).module() for b, path in exports.items()}
    with torch.no_grad():
        accuracy = {b: float((model(x).argmax(-1) == y).float().mean()) for b, model in models.items()}
    one = time_forwards(list(models.values()), (x[:1],), {}, warmup=5, runs=runs)
    batch = time_forwards(list(models.values()), (x[:BATCH],), {}, warmup=2, runs=runs)
    return [{"budget": f"{b}%", "params": cards[b]["params"], "flops": cards[b]["flops"],
             "val_accuracy": cards[b]["metrics"].get("accuracy"), "test_accuracy": round(accuracy[b], 4),
             "latency_ms": round(t1 * 1e3, 3), f"latency_{BATCH}_ms": round(tb * 1e3, 3)}
            for b, t1, tb in zip(models, one, batch)]


def table(summary: dict[str, Any]) -> str:
    """The results as an aligned text table (what ``osf demo`` prints)."""
    full = summary["full_model"]
    head = ("budget", "params", "FLOPs", "% FLOPs", "val acc", "test acc", "1 image", f"{BATCH} images", "speed-up")
    body = [(r["budget"], f"{r['params']:,}", f"{r['flops'] / 1e6:.2f}M", f"{100 * r['flops'] / full['flops']:.0f}%",
             f"{r['val_accuracy']:.3f}", f"{r['test_accuracy']:.3f}", f"{r['latency_ms']:.2f} ms",
             f"{r[f'latency_{BATCH}_ms']:.2f} ms", f"{r['speedup']:.2f}x") for r in summary["subnets"]]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(row, widths)) for row in (head, *body)]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def markdown(summary: dict[str, Any]) -> str:
    """``summary.md``: the results table, what each column means, the front plot and the model cards."""
    full, train = summary["full_model"], summary["train"]
    links = [f"[{r['budget']}]({r['path']}/model_card.md)" for r in summary["subnets"]]
    lines = [f"# osf demo: {summary['model']} on digits", "",
             f"Supernet trained {train['step']} steps (validation accuracy: max subnet "
             f"{train['val_accuracy']['max']:.3f}, min subnet {train['val_accuracy']['min']:.3f}); search evaluated "
             f"{summary['evaluated']} subnets, {summary['front_size']} on the Pareto front. Full model: "
             f"{int(full['params']):,} params, {full['flops'] / 1e6:.2f}M FLOPs (1 multiply-add = 2 FLOPs, one image).",
             "", "```", table(summary), "```", "",
             f"- *budget*: the most accurate evaluated subnet with {BAND:.0%}–100% of that share of the full model's "
             "FLOPs (so the three differ in size even where a small subnet is as accurate as the full model).",
             "- *val acc*: accuracy on the validation split the search used (inherited weights, BatchNorm "
             "recalibrated); *test acc*: the exported `model.pt2`, loaded with plain `torch.export.load`, on "
             f"held-out digits ({summary['data']}).",
             f"- *1 image* / *{BATCH} images*: CPU latency of the exported program, median of "
             f"{summary['settings']['latency_runs']} forwards ({summary['machine']}), the three models in "
             f"interleaved rounds; *speed-up*: batch-{BATCH} latency against the largest export's. At batch 1 "
             "these tiny models are dominated by fixed per-op overhead.",
             "", "![accuracy against FLOPs](front.png)", "",
             f"Model cards: {', '.join(links)}. Total time {summary['seconds']} s.", ""]
    return "\n".join(lines)
