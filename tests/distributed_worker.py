"""Launched by ``torchrun`` from tests/test_distributed.py (and importable there for the single-process
references): small supernet runs on the digits data, one scenario per invocation.

    torchrun --nproc-per-node 2 tests/distributed_worker.py SCENARIO OUT_DIR
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import osf
from osf.cli.builtin import ResidualCNN, TinyViT, digits
from osf.train import init_process_group

STEPS = 6
CASES = {  # name: (model, sampler, subnets per step, distillation, shuffle)
    "cnn-sandwich-k4": ("cnn", "sandwich", 4, "inplace", True),  # ranks split the subnets
    "vit-uniform-k3": ("vit", "uniform", 3, None, True),          # 3 subnets on 2 ranks: batches are sharded
    "mlp-dropout-k4": ("mlp", "sandwich", 4, "inplace", True),   # dropout + soft targets recomputed off-rank
    "cnn-sandwich-k2": ("cnn", "sandwich", 2, None, False),       # one subnet per rank: the hazard baseline's
    "vit-uniform-k3-ignored": ("vit", "uniform", 3, None, True),  # sharded batches, a third labelled -100
}


class DropoutMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 64),
                                  nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.body(x))


def setup(case: str, lr: float = 0.05, dtype: torch.dtype = torch.float32):
    """A fresh supernet (same weights in every process, in ``dtype``), its loader, sampler, distillation,
    optimizer."""
    kind, sampler_name, k, distill, shuffle = CASES[case]
    torch.manual_seed(0)
    model = {"cnn": lambda: ResidualCNN(width=16, blocks=2), "vit": lambda: TinyViT(dim=32, depth=2, mlp=64),
             "mlp": DropoutMLP}[kind]().to(dtype)
    x, y, _, _ = digits()
    x = x.to(dtype)
    if case.endswith("-ignored"):  # left out of the loss: shards hold unequal numbers of labelled samples
        y = torch.where(torch.arange(len(y)) % 3 == 0, -100, y)
    supernet = osf.Supernet(model, (x[:2],))
    loader = DataLoader(TensorDataset(x[:512], y[:512]), batch_size=32, shuffle=shuffle)
    sampler_cls = osf.SandwichSampler if sampler_name == "sandwich" else osf.UniformSampler
    sampler = sampler_cls(supernet.space, k, seed=1)
    optimizer = torch.optim.SGD(supernet.parameters(), lr=lr, momentum=0.9)
    return supernet, loader, sampler, (osf.Distill(distill) if distill else None), optimizer


def weights(supernet) -> dict[str, torch.Tensor]:
    """Parameters and counters (``num_batches_tracked``): what a parallel run must reproduce. Running
    statistics are averaged over ranks instead (docs/distributed.md)."""
    return {n: t.detach().clone().contiguous() for n, t in [*supernet.named_parameters(), *supernet.named_buffers()]
            if t.is_floating_point() == isinstance(t, torch.nn.Parameter)}


def run(case: str, *, parallel, steps: int = STEPS, run_dir=None, checkpoint_every=None, loss_fn=F.cross_entropy,
        lr: float = 0.05, ema_decay: float | None = None, validate_every: int | None = None):
    """``case`` trained; with ``ema_decay`` a moving average (``result.ema``), with ``validate_every`` the max
    and min subnets scored on held-out digits that often."""
    supernet, loader, sampler, distill, optimizer = setup(case, lr)
    ema = osf.EMA(supernet, decay=ema_decay) if ema_decay is not None else None
    validate = None
    if validate_every is not None:
        _, _, x_val, y_val = digits()
        validate = osf.Validation(DataLoader(TensorDataset(x_val, y_val), batch_size=128), every=validate_every)
    result = osf.train(supernet, loader, optimizer=optimizer, loss_fn=loss_fn, steps=steps, sampler=sampler,
                       distill=distill, seed=3, progress=False, parallel=parallel, run_dir=run_dir,
                       checkpoint_every=checkpoint_every, ema=ema, validate=validate)
    result.ema = ema
    return supernet, result


class Enclosing(nn.Module):
    """A model running the supernet inside it (``osf.train(model=...)``): its own head and BatchNorm, and a
    forward that takes the target and returns the loss."""

    def __init__(self, supernet: nn.Module):
        super().__init__()
        self.backbone, self.norm, self.head = supernet, nn.BatchNorm1d(10), nn.Linear(10, 10)

    def forward(self, x, target):
        return F.cross_entropy(self.head(self.norm(self.backbone(x))), target)


def run_enclosing(*, parallel, k: int = 4, steps: int = STEPS) -> nn.Module:
    """``cnn-sandwich-k4``'s supernet trained as the backbone of ``Enclosing`` (``model=``), in float64 (its BatchNorm
    after the backbone turns float32 summation order into 1e-5 differences); returns the model."""
    supernet, loader, _, _, _ = setup("cnn-sandwich-k4", dtype=torch.float64)
    model = Enclosing(supernet).double()
    osf.train(supernet, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
              loss_fn=lambda loss, _: loss, steps=steps, sampler=osf.SandwichSampler(supernet.space, k, seed=1),
              seed=3, progress=False, parallel=parallel, model=model, batch_fn=lambda b: ((b[0], b[1]), {}, None))
    return model


def run_ddp(*, parallel: bool, world: int = 2) -> dict[str, torch.Tensor]:
    """The supernet under plain ``DistributedDataParallel`` (``find_unused_parameters=True``), each rank
    training another subnet on its half of the batch; with ``parallel=False`` the same update in one
    process (each rank's subnet on its rows, the losses averaged as DDP averages gradients)."""
    supernet, loader, _, _, _ = setup("cnn-sandwich-k2")
    optimizer = torch.optim.SGD(supernet.parameters(), lr=0.05, momentum=0.9)
    ddp = (torch.nn.parallel.DistributedDataParallel(supernet, find_unused_parameters=True,
                                                     broadcast_buffers=False) if parallel else None)
    ranks = [dist.get_rank()] if parallel else list(range(world))
    for step, (xb, yb) in zip(range(STEPS), loader):
        optimizer.zero_grad()
        for rank in ranks:
            supernet.set_arch(supernet.space.sample(step * world + rank))
            loss = F.cross_entropy((ddp or supernet)(xb[rank::world]), yb[rank::world])
            (loss if parallel else loss / world).backward()
        optimizer.step()
    return {n: p.detach().clone() for n, p in supernet.named_parameters()}


def naive(case: str, how: str, steps: int = STEPS) -> dict[str, torch.Tensor]:
    """The hazard: each rank steps its own copy with the gradients of its own subnets (same batches, same
    subnets as ``run``: the loader does not shuffle), then the copies are reconciled by the last writer
    winning (``last``) or by averaging them (``average``)."""
    supernet, loader, sampler, distill, optimizer = setup(case)
    rank, world = dist.get_rank(), dist.get_world_size()
    it = iter(loader)
    supernet.train()
    for step in range(steps):
        xb, yb = next(it)
        optimizer.zero_grad()
        for _, arch in sampler.sample(step)[rank::world]:
            with supernet.set_arch(arch):
                F.cross_entropy(supernet(xb), yb).backward()
        optimizer.step()
        for p in supernet.parameters():
            if how == "last":
                dist.broadcast(p.data, src=world - 1)
            else:
                dist.all_reduce(p.data)
                p.data /= world
    return weights(supernet)


def main(scenario: str, out: Path) -> None:
    init_process_group()
    rank = dist.get_rank()
    if scenario == "equivalence":
        for case in CASES:
            supernet, result = run(case, parallel=None)
            if rank == 0:
                save_file(weights(supernet), str(out / f"{case}.safetensors"))
                (out / f"{case}.join").write_text(str(sum(r["join_seconds"] for r in result.history)))
        for how in ("last", "average"):
            w = naive("cnn-sandwich-k2", how)
            if rank == 0:
                save_file(w, str(out / f"naive-{how}.safetensors"))
    elif scenario == "ema-validation":  # every rank validates: its scores written per rank
        _, result = run("cnn-sandwich-k4", parallel=None, ema_decay=0.9, validate_every=2)
        scores = [{k: v for k, v in r.items() if k.startswith("val_")} for r in result.history]
        (out / f"scores-rank{rank}.json").write_text(json.dumps(scores))
        if rank == 0:
            save_file(result.ema.shadow, str(out / "ema.safetensors"))
    elif scenario == "one-case":
        supernet, _ = run("cnn-sandwich-k4", parallel=None)
        if rank == 0:
            save_file(weights(supernet), str(out / "cnn-sandwich-k4.safetensors"))
    elif scenario == "elastic":
        attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
        calls = {"n": 0}

        def dying_loss(output, target):  # rank 1 dies in the middle of step 5 on the first attempt
            calls["n"] += 1
            if attempt == 0 and rank == 1 and calls["n"] == 4 * 3 + 1:  # 3 shares per rank and step
                os.kill(os.getpid(), 9)
            return F.cross_entropy(output, target)
        supernet, _ = run("vit-uniform-k3", parallel=None, steps=8, run_dir=out / "run", checkpoint_every=2,
                          loss_fn=dying_loss)
        if rank == 0:
            save_file(weights(supernet), str(out / f"final-attempt{attempt}.safetensors"))
    elif scenario == "enclosing":
        model = run_enclosing(parallel=None)
        if rank == 0:
            save_file(weights(model), str(out / "enclosing.safetensors"))
        try:  # 3 subnets cannot be dealt out over 2 ranks as whole batches
            run_enclosing(parallel=None, k=3)
        except ValueError as e:
            if rank == 0:
                (out / "enclosing-k3.txt").write_text(str(e))
    elif scenario == "ddp":
        w = run_ddp(parallel=True)
        if rank == 0:
            save_file(w, str(out / "ddp.safetensors"))
    elif scenario == "mismatch":
        run("cnn-sandwich-k4", parallel=None, lr=0.05 if rank == 0 else 0.1)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
