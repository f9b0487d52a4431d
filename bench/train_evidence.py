"""Supernet training on real data: inherited-weight subnets against the same architectures trained alone.

For the digits (scikit-learn) and MNIST-1D data sets and the built-in residual CNN and small ViT, one
supernet is trained with the sandwich rule (max, min, 2 random subnets per step) and in-place
distillation, after a warm-up that trains the max subnet alone for the first 25% of the steps
(``WarmupSampler``). Then the max, the min and two middle subnets are evaluated on the test split with inherited
weights (BatchNorm recalibrated on training batches), against the same architectures trained standalone
from scratch for the same number of epochs with the same optimizer and schedule. Also reported: the
step-time ratio of a subnet through the supernet against the extracted subnet (side by side), and each
subnet's accuracy on a moving average of the supernet's weights kept during the same training (``osf.EMA``).

    python bench/train_evidence.py           # 3 seeds, about 30 minutes on 2 cores
    python bench/train_evidence.py --seeds 1 # about 10 minutes
    python bench/train_evidence.py --quick   # digits, residual CNN, 2 epochs, 1 seed (smoke test)

Each seed trains the supernet and every standalone architecture afresh (initialisation, batch order,
sampled subnets); the data split stays the same. The table gives the mean over seeds and the spread of
the gap: one seed's test accuracy moves by about a point (digits' 360 test images: 1 image = 0.28 points).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import common
import osf
from osf.cli.builtin import ResidualCNN, TinyViT, digits, mnist1d

SEED, BATCH, LR = 0, 64, 3e-3
WARMUP = 0.25  # the fraction of the steps that trains the max subnet alone, before the sandwich rule
EMA_DECAY = 0.998  # about the last 500 steps of runs of 900-1900 (warmed up: (1 + n) / (10 + n) until then)


def loaders(data, seed: int):
    x, y, xt, yt = data
    train = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed))
    return train, DataLoader(TensorDataset(xt, yt), batch_size=256)


def model_for(kind: str, dataset: str) -> torch.nn.Module:
    dims, size, patch = (2, 8, 2) if dataset == "digits" else (1, 40, 4)
    if kind == "cnn":
        return ResidualCNN(1, 10, dims=dims, width=32, blocks=4)
    return TinyViT(1, 10, dims=dims, size=size, patch=patch, dim=64, depth=4, heads=4, mlp=128)


def middle_archs(space: osf.SearchSpace) -> dict[str, osf.Arch]:
    """Half width everywhere; three-quarter width with every other top-level unit dropped."""
    def width(ratio):
        return {g.key: min(g.choices, key=lambda c: abs(c - ratio * g.size)) for g in space.groups}
    top = [u.key for u in space.units if u.parent is None]
    return {"width 1/2": osf.Arch(width(0.5), {}),
            "width 3/4, half depth": osf.Arch(width(0.75), {k: i % 2 == 0 for i, k in enumerate(top)})}


def warmed_up(sampler: osf.Sampler, steps: int) -> osf.WarmupSampler:
    """``sampler`` after the max subnet alone for the first ``WARMUP`` fraction of ``steps``."""
    return osf.WarmupSampler(sampler, math.ceil(WARMUP * steps))


def optimizer_for(params, steps: int):
    opt = torch.optim.AdamW(params, lr=LR, weight_decay=1e-4)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)


def standalone(model: torch.nn.Module, train, test, epochs: int, seed: int = SEED) -> tuple[float, float]:
    """Train ``model`` alone; (test accuracy, seconds per step)."""
    opt, sched = optimizer_for(model.parameters(), epochs * len(train))
    torch.manual_seed(seed)
    model.train()
    t0, steps = time.perf_counter(), 0
    for _ in range(epochs):
        for x, y in train:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
            sched.step()
            steps += 1
    secs = (time.perf_counter() - t0) / steps
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(-1) == y).sum()) for x, y in test)
    return correct / len(test.dataset), secs


def step_ratio(supernet: osf.Supernet, arch: osf.Arch, x, y, repeats: int = 15) -> float:
    sub = supernet.extract(arch).train()
    times = {"super": [], "sub": []}
    for _ in range(repeats + 1):
        for key, model in (("super", supernet), ("sub", sub)):
            with supernet.set_arch(arch):
                model.zero_grad(set_to_none=True)
                t = time.perf_counter()
                F.cross_entropy(model(x), y).backward()
                times[key].append(time.perf_counter() - t)
    supernet.zero_grad(set_to_none=True)
    return statistics.median(times["super"][1:]) / statistics.median(times["sub"][1:])


def run(dataset: str, kind: str, epochs: int, seed: int) -> list[dict]:
    data = digits(SEED) if dataset == "digits" else mnist1d()  # the split stays; the training seed varies
    train, test = loaders(data, seed)
    torch.manual_seed(seed)
    supernet = osf.Supernet(model_for(kind, dataset).train(), (data[0][:1],), multiple_of=4)
    steps = epochs * len(train)
    opt, sched = optimizer_for(supernet.parameters(), steps)
    ema = osf.EMA(supernet, EMA_DECAY)  # updated beside training, which it leaves unchanged
    t0 = time.perf_counter()
    osf.train(supernet, train, optimizer=opt, scheduler=sched, loss_fn=F.cross_entropy, steps=steps,
              sampler=warmed_up(osf.SandwichSampler(supernet.space, 4, seed), steps),
              distill=osf.Distill("inplace", weight=0.5), ema=ema,
              seed=seed, progress=False)
    train_s = time.perf_counter() - t0
    archs = {"max": supernet.space.max(), "min": supernet.space.min(), **middle_archs(supernet.space)}
    x, y = next(iter(train))
    rows = []
    for name, arch in archs.items():
        inherited = osf.evaluate(supernet, arch, test, calib_loader=train, calib_batches=20)
        with ema.applied():
            averaged = osf.evaluate(supernet, arch, test, calib_loader=train, calib_batches=20)
        torch.manual_seed(seed + 1)  # a fresh initialisation of the same architecture
        fresh = osf.Supernet(model_for(kind, dataset).train(), (data[0][:1],), multiple_of=4, sort=False)
        scratch, sub_step_s = standalone(fresh.extract(arch), train, test, epochs, seed)
        rows.append({"dataset": dataset, "model": kind, "arch": name, "seed": seed,
                     "params": supernet.cost(arch)["params"],
                     "flops": supernet.cost(arch)["flops"], "inherited_acc": round(inherited, 4),
                     "ema_acc": round(averaged, 4),
                     "scratch_acc": round(scratch, 4), "gap_points": round(100 * (inherited - scratch), 2),
                     "step_ratio": round(step_ratio(supernet, arch, x, y), 3), "epochs": epochs,
                     "supernet_train_s": round(train_s, 1), "standalone_step_ms": round(1e3 * sub_step_s, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per dataset, model and subnet: the mean over seeds, with the gap's spread."""
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault((r["dataset"], r["model"], r["arch"]), []).append(r)
    table = []
    for runs in out.values():
        gaps = [r["gap_points"] for r in runs]
        table.append({**{k: runs[0][k] for k in ("dataset", "model", "arch", "params", "flops")},
                      "seeds": len(runs), "inherited_acc": statistics.mean(r["inherited_acc"] for r in runs),
                      "ema_acc": statistics.mean(r["ema_acc"] for r in runs),
                      "scratch_acc": statistics.mean(r["scratch_acc"] for r in runs), "gap_points": statistics.mean(gaps),
                      "gap_min": min(gaps), "gap_max": max(gaps),
                      "step_ratio": statistics.median(r["step_ratio"] for r in runs),
                      "supernet_train_s": statistics.mean(r["supernet_train_s"] for r in runs)})
    return table


def markdown(env: dict, rows: list[dict]) -> str:
    lines = ["<!-- train-evidence:start -->", "## Supernet training on real data (inherited weights vs from scratch)",
             "", f"Generated by `{env['command']}` on {env['date']}.", "",
             f"- Machine: {env['platform']} ({env['machine']}), {env['cpus']} CPUs, {env['threads']} torch threads",
             f"- Versions: python {env['python']}, torch {env['torch']}, osf {env['osf']}",
             f"- Seeds {env['seeds']} (each: initialisation, batch order, sampled subnets; the data split stays); "
             f"batch {BATCH}; AdamW (lr {LR}, one-cycle schedule); the same epochs for the "
             f"supernet (max subnet alone for the first {WARMUP:.0%} of the steps, then the sandwich rule; 4 subnets per step, "
             "in-place distillation with weight 0.5) and for each "
             "standalone architecture (cross-entropy, fresh initialisation)",
             "- Inherited accuracy: the subnet on the supernet's weights, BatchNorm recalibrated on 20 training "
             "batches; test split: digits 20% held out (seed 0, 360 images: one image is 0.28 points), MNIST-1D's "
             "own 1000 test signals. Accuracies and the gap are means over the seeds; *gap range* is the lowest "
             "and highest gap of a single seed",
             f"- *EMA acc*: the same subnet on a moving average of the supernet's weights kept during the same "
             f"training (`osf.EMA`, decay {EMA_DECAY}, warmed up; BatchNorm recalibrated alike)",
             "- *FLOPs*: of one sample (`supernet.cost`; the supernet is traced on one sample, its batch dynamic)",
             "- *Step ratio*: one train step of the subnet through the supernet ÷ the extracted subnet (median "
             "of 15, side by side; median over seeds); these models' steps take a few milliseconds, so fixed "
             "per-step costs weigh more than on the models of the supernet-step section", "",
             "| data | model | subnet | params | FLOPs | inherited acc | EMA acc | from-scratch acc | gap (points) | "
             "gap range | step ratio | supernet training s |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary(rows):
        lines.append(f"| {r['dataset']} | {r['model']} | {r['arch']} | {r['params']:,} | {r['flops']:,} | "
                     f"{r['inherited_acc']:.4f} | {r['ema_acc']:.4f} | {r['scratch_acc']:.4f} | {r['gap_points']:+.2f} | "
                     f"{r['gap_min']:+.2f} … {r['gap_max']:+.2f} | {r['step_ratio']} | {r['supernet_train_s']:.1f} |")
    return "\n".join(lines + ["<!-- train-evidence:end -->"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=None, help="training seeds (default 3; --quick: 1)")
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    seeds = list(range(SEED, SEED + (opts.seeds or (1 if opts.quick else 3))))
    rows = []
    plan = [("digits", "cnn", 2)] if opts.quick else [(d, k, e) for d, e in (("digits", 40), ("mnist1d", 30))
                                                      for k in ("cnn", "vit")]
    for dataset, kind, epochs in plan:  # quick: a smoke test of the whole path on one small case
        for seed in seeds:
            rows += run(dataset, kind, epochs, seed)
    env = common.environment(command="python bench/train_evidence.py " + " ".join(argv or sys.argv[1:]),
                             seeds=", ".join(map(str, seeds)), threads=opts.threads)
    out = common.ROOT / "bench" / "results" / ("train_evidence-quick.json" if opts.quick else "train_evidence.json")
    common.write_atomic(out, json.dumps({"environment": env, "rows": rows}, indent=1))
    common.update_section(common.QUICK_DOCS if opts.quick else common.DOCS, "train-evidence", markdown(env, rows))
    print(markdown(env, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
