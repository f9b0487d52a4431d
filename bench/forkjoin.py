"""Fork-join throughput: subnets trained per second with P = 1 and P = 2 ranks (gloo on CPU, NCCL on a
GPU), and the share of a step spent joining (all-reducing gradients) and waiting for the slowest rank.

    python bench/forkjoin.py            # residual CNN, small ViT, ResNet-18 (several minutes)
    python bench/forkjoin.py --quick    # residual CNN only (about a minute)

The same cores serve both settings: P = 1 runs with all of them as threads, P = 2 with one share per
rank. Each rank sees the same batch and runs half of the K = 4 sandwich subnets; the join sums their
gradients (bucketed all-reduce). Results go to bench/results/forkjoin*.json and docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

MODELS = {  # name: (input shape, classes)
    "residual-cnn": ((1, 8, 8), 10),
    "tiny-vit": ((1, 8, 8), 10),
    "resnet18": ((3, 64, 64), 100),
}
BATCH, K, WARMUP, SEED = 64, 4, 3, 0


def build(name: str) -> torch.nn.Module:
    from osf.cli.builtin import ResidualCNN, TinyViT
    if name == "residual-cnn":
        return ResidualCNN(width=64, blocks=4)
    if name == "tiny-vit":
        return TinyViT(dim=128, depth=4, heads=4, mlp=256)
    import torchvision
    return torchvision.models.resnet18(num_classes=MODELS[name][1])


def worker(name: str, steps: int, out: Path) -> None:
    """One rank (or the single process): train ``steps`` steps and write the per-step timings."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, TensorDataset

    import osf
    from osf.train import ForkJoin, init_process_group

    distributed = "RANK" in os.environ
    device = init_process_group() if distributed else torch.device("cpu")
    torch.manual_seed(SEED)
    shape, classes = MODELS[name]
    supernet = osf.Supernet(build(name), (torch.randn(2, *shape),)).to(device)
    x, y = torch.randn(BATCH * 4, *shape), torch.randint(0, classes, (BATCH * 4,))
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, drop_last=True)
    result = osf.train(supernet, loader, optimizer=torch.optim.SGD(supernet.parameters(), lr=0.01, momentum=0.9),
                       loss_fn=F.cross_entropy, steps=steps + WARMUP,
                       sampler=osf.SandwichSampler(supernet.space, K, SEED), seed=SEED, progress=False,
                       parallel=ForkJoin(measure_wait=True) if distributed else False)
    rows = result.history[WARMUP:]
    if not distributed or torch.distributed.get_rank() == 0:
        common.write_atomic(out, json.dumps({
            "seconds": statistics.median(r["seconds"] for r in rows),
            "join": statistics.median(r.get("join_seconds", 0.0) - r.get("wait_seconds", 0.0) for r in rows),
            "wait": statistics.median(r.get("wait_seconds", 0.0) for r in rows),
            "params": sum(p.numel() for p in supernet.parameters()),
        }))
    if distributed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def launch(name: str, ranks: int, steps: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        me = [str(Path(__file__).resolve()), "--worker", name, "--steps", str(steps), "--out", str(out)]
        if ranks == 1:
            cmd = [sys.executable, *me]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks), *me]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{name} with {ranks} rank(s) failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the residual CNN only (a smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per run (after 3 warm-up steps)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    steps = opts.steps or (5 if opts.quick else 15)
    if opts.worker:
        worker(opts.worker, steps, opts.out)
        return
    cores = os.cpu_count() or 1
    rows = []
    for name in (["residual-cnn"] if opts.quick else list(MODELS)):
        one = launch(name, 1, steps, cores)
        share = max(1, cores // 2)
        one_share = launch(name, 1, steps, share)
        two = launch(name, 2, steps, share)
        rows.append({"model": name, "params": one["params"], "P1_subnets_per_s": K / one["seconds"],
                     "P1_share_subnets_per_s": K / one_share["seconds"],
                     "P2_subnets_per_s": K / two["seconds"], "speedup": one["seconds"] / two["seconds"],
                     "scaling": one_share["seconds"] / two["seconds"],
                     "P2_join_fraction": two["join"] / two["seconds"], "P2_wait_fraction": two["wait"] / two["seconds"],
                     "P1_step_s": one["seconds"], "P2_step_s": two["seconds"]})
        print(json.dumps(rows[-1]), flush=True)
    env = common.environment(command="python bench/forkjoin.py " + " ".join(argv or sys.argv[1:]), seed=SEED,
                             batch=BATCH, subnets_per_step=K, timed_steps=steps, backend="gloo (CPU)")
    name = "forkjoin-quick.json" if opts.quick else "forkjoin-cpu.json"
    common.write_atomic(common.ROOT / "bench" / "results" / name, json.dumps({"environment": env, "rows": rows},
                                                                             indent=1))
    common.update_section(common.QUICK_DOCS if opts.quick else common.DOCS, "forkjoin-cpu", section(env, rows))


def section(env: dict, rows: list[dict]) -> str:
    lines = ["<!-- forkjoin-cpu:start -->", "## Fork-join: subnets per second with 1 and 2 ranks (CPU, gloo)", "",
             f"`{env['command']}` — {env['date']}, {env['platform']}, {env['cpus']} CPUs, Python {env['python']}, "
             f"torch {env['torch']}, osf {env['osf']}; seed {env['seed']}, batch {env['batch']}, "
             f"{env['subnets_per_step']} sandwich subnets per step, median of {env['timed_steps']} steps after "
             "3 warm-up steps. P = 2 gives each rank half of the cores; P = 1 runs once with all cores as "
             "threads (what the machine does without osf's fork-join) and once with one rank's share (how "
             "throughput scales when every rank brings its own cores or GPU).", "",
             "| model | params | P=1, all cores: subnets/s | P=1, half: subnets/s | P=2: subnets/s | P=2 vs P=1 all "
             "| P=2 vs P=1 half | join (all-reduce) share of a P=2 step | waiting for the slower rank |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['P1_subnets_per_s']:.1f} | "
                     f"{r['P1_share_subnets_per_s']:.1f} | {r['P2_subnets_per_s']:.1f} | {r['speedup']:.2f}× | "
                     f"{r['scaling']:.2f}× | {100 * r['P2_join_fraction']:.1f}% | {100 * r['P2_wait_fraction']:.1f}% |")
    lines += ["", "Join = the bucketed all-reduce of every shared gradient plus the per-subnet losses; wait = a "
              "barrier before it (ranks run different subnets, so the one with the larger subnets sets the pace). "
              "On one machine, intra-op threads already use every core, so fork-join pays off when ranks add "
              "devices (more cores, GPUs, nodes): compare the P=2 vs P=1-half column. No GPU was lent to this "
              "run; on a GPU the same script runs NCCL.", "<!-- forkjoin-cpu:end -->"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
