"""Fork-join training over ``torch.distributed``.

The subnets of one step share weights, so letting each rank update its own copy is a write-after-write
hazard: the last writer (or an average of copies) is not the update of the joint objective. Instead:

- **fork**: every rank gets the same batch and the same sampled subnets (samplers are deterministic in
  ``(seed, step)``) and runs its own share of them (``plan``), accumulating gradients locally;
- **join**: the gradients of all shared weights are summed over ranks with a bucketed all-reduce
  (``ForkJoin.join``), then every rank takes the same optimizer step on the same gradients.

Since the objective is the *sum* of the subnets' losses, the summed gradient is exactly its gradient:
the run equals accumulating the same subnets in one process, up to the order of float additions.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
import torch.utils._pytree as pytree

from ..space.arch import Arch
from .labels import IGNORE_INDEX


class ConfigMismatch(RuntimeError):
    """Ranks of one distributed run were started with different settings."""


@dataclass(frozen=True)
class WorkItem:
    """One rank's share of a step: subnet ``index`` of the step's sample on batch rows ``start:stop``;
    its loss counts with ``weight`` (its fraction of the batch), so the shares of a subnet sum to its
    full-batch loss."""
    index: int
    role: str
    arch: Arch
    start: int
    stop: int
    weight: float


def plan(picks: list[tuple[str, Arch]], rows: int, rank: int = 0, world: int = 1) -> list[WorkItem]:
    """The work of ``rank`` out of ``world`` for one step. Each subnet's batch is cut into
    ``world / gcd(k, world)`` shards (one shard when ``world`` divides ``k``), and the ``k x shards``
    items are dealt out in contiguous, equal runs, so every rank gets ``k / gcd(k, world)`` items."""
    k = len(picks)
    if k == 0:
        return []
    g = math.gcd(k, world)
    shards, per_rank = world // g, k // g
    items = []
    for j in range(rank * per_rank, (rank + 1) * per_rank):
        index, shard = divmod(j, shards)
        q, r = divmod(rows, shards)
        start = shard * q + min(shard, r)
        stop = start + q + (1 if shard < r else 0)
        role, arch = picks[index]
        items.append(WorkItem(index, role, arch, start, stop, (stop - start) / rows if rows else 0.0))
    return items


def labelled_weights(items: list[WorkItem], target: Any, rows: int) -> list[WorkItem]:
    """``items`` whose shares of a batch count with their fraction of its *labelled* samples (positions)
    instead of its rows, where integer targets leave some out with -100 (torch's ``ignore_index``): a loss
    averaged over the labelled ones, as cross-entropy's, then sums over the shares to the full batch's."""
    if not (isinstance(target, torch.Tensor) and target.dim() > 0 and target.shape[0] == rows
            and not target.is_floating_point() and not target.is_complex()
            and any(item.weight != 1.0 for item in items)):
        return items
    kept = (target != IGNORE_INDEX).reshape(rows, -1).sum(1)
    total = int(kept.sum())
    if total in (0, target.numel()):  # every position left out (the loss is NaN either way), or none
        return items
    return [replace(item, weight=int(kept[item.start:item.stop].sum()) / total) for item in items]


def take_rows(tree: Any, start: int, stop: int, rows: int) -> Any:
    """Rows ``start:stop`` of every tensor of a nested structure whose first dim is the batch (``rows``)."""
    if start == 0 and stop == rows:
        return tree
    return pytree.tree_map(lambda t: t[start:stop] if isinstance(t, torch.Tensor) and t.dim() > 0
                           and t.shape[0] == rows else t, tree)


def init_process_group(backend: str | None = None) -> torch.device:
    """Join the process group ``torchrun`` describes in the environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``...) and return this rank's device: ``cuda:LOCAL_RANK`` with NCCL when CUDA is
    available, else the CPU with gloo. A no-op returning the device when the group already exists."""
    cuda = torch.cuda.is_available() and backend in (None, "nccl")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            raise RuntimeError("no process group: launch with torchrun (e.g. torchrun --nproc-per-node 2 "
                               "train.py) or `osf train --nproc N`, or call torch.distributed.init_process_group")
        backend = backend or ("nccl" if cuda else "gloo")
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            # torchrun's agent store outlives a restart: keys of the dead attempt would be read again
            # (pytorch/pytorch#135712), so each attempt gets its own namespace.
            world = int(os.environ["WORLD_SIZE"])
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world, is_master=False)
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            dist.init_process_group(backend, store=dist.PrefixStore(f"osf/attempt-{attempt}", store),
                                    rank=int(os.environ["RANK"]), world_size=world)
        else:
            dist.init_process_group(backend)
    return device


class ForkJoin:
    """The join of a distributed supernet run on ``group`` (default: the world). ``bucket_mb``: size of
    the flat buffers gradients are summed in. ``measure_wait``: put a barrier before each join and keep
    its duration in ``wait_seconds`` (ranks idling for the slowest one), to tell load imbalance from
    communication; it costs one more small collective per step."""

    def __init__(self, group: Any = None, bucket_mb: float = 25.0, measure_wait: bool = False):
        if not dist.is_initialized():
            raise RuntimeError("ForkJoin needs an initialised process group; call "
                               "osf.train.init_process_group() first (under torchrun)")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        self.bucket_bytes = int(bucket_mb * 2**20)
        self.measure_wait = measure_wait
        self.wait_seconds = 0.0

    def _buckets(self, tensors: list[torch.Tensor]) -> list[list[int]]:
        """Indices of ``tensors`` grouped into same-dtype, same-device buckets of about ``bucket_bytes``."""
        buckets: list[list[int]] = []
        open_: dict[tuple, tuple[list[int], int]] = {}
        for i, t in enumerate(tensors):
            key = (t.dtype, t.device)
            idx, size = open_.get(key, ([], 0))
            if idx and size + t.numel() * t.element_size() > self.bucket_bytes:
                buckets.append(idx)
                idx, size = [], 0
            idx.append(i)
            open_[key] = (idx, size + t.numel() * t.element_size())
        buckets.extend(idx for idx, _ in open_.values() if idx)
        return buckets

    def _bucketed(self, tensors: list[torch.Tensor], collective: Any) -> None:
        """Run ``collective(flat) -> Work`` on flat copies of ``tensors``, one per bucket, all in flight at
        once, and copy the results back."""
        pending = []
        for idx in self._buckets(tensors):
            flat = torch.cat([tensors[i].reshape(-1) for i in idx])
            pending.append((idx, flat, collective(flat)))
        for idx, flat, work in pending:
            work.wait()
            offset = 0
            for i in idx:
                n = tensors[i].numel()
                tensors[i].copy_(flat[offset:offset + n].view_as(tensors[i]))
                offset += n

    def _all_reduce(self, tensors: list[torch.Tensor]) -> None:
        """Sum ``tensors`` over ranks, in place."""
        self._bucketed(tensors, lambda flat: dist.all_reduce(flat, group=self.group, async_op=True))

    def join(self, params: list[torch.nn.Parameter], extras: torch.Tensor) -> torch.Tensor:
        """Sum the gradients of ``params`` over ranks (a rank that did not touch a weight adds zeros) and
        the float64 vector ``extras`` (per-subnet losses). A weight no rank used keeps ``grad=None``, as in
        one process, so optimizers skip it the same way. Returns the summed ``extras``."""
        if self.measure_wait:
            start = time.perf_counter()
            dist.barrier(group=self.group)
            self.wait_seconds = time.perf_counter() - start
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        used = torch.tensor([p.grad is not None for p in params], dtype=torch.float64, device=extras.device)
        meta = torch.cat([extras.to(torch.float64), used])
        self._all_reduce(grads + [meta])
        for p, g, u in zip(params, grads, meta[len(extras):].tolist()):
            p.grad = g if u > 0 else None
        return meta[:len(extras)]

    def broadcast_state(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every rank, as the run's common start."""
        src = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        self._bucketed([t.data for t in module.parameters()] + list(module.buffers()),
                       lambda flat: dist.broadcast(flat, src=src, group=self.group, async_op=True))

    def counters(self, module: torch.nn.Module) -> list[torch.Tensor]:
        """Copies of the integer buffers (``num_batches_tracked``) before a step, for ``sync_buffers``."""
        return [b.clone() for b in module.buffers() if not b.is_floating_point()]

    def sync_buffers(self, module: torch.nn.Module, before: list[torch.Tensor]) -> None:
        """Make every rank's buffers equal after a step. Counters (integer buffers) get the sum of all
        ranks' increments since ``before``, as one process would count; floating-point buffers (BatchNorm
        running statistics, which each rank updated with its own subnets) are averaged."""
        floats = [b for b in module.buffers() if b.is_floating_point()]
        counts = [b for b in module.buffers() if not b.is_floating_point()]
        deltas = [b - b0 for b, b0 in zip(counts, before)]
        self._all_reduce(floats + deltas)
        for b in floats:
            b.div_(self.world)
        for b, b0, d in zip(counts, before, deltas):
            b.copy_(b0 + d)

    def agree(self, settings: dict[str, Any]) -> None:
        """Check that every rank runs with the same ``settings`` (JSON-able); raise ``ConfigMismatch``
        naming the keys and ranks that differ. Exchanged as JSON bytes, never pickled."""
        mine = json.dumps(settings, sort_keys=True, default=str).encode()
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend(self.group) == "nccl" \
            else torch.device("cpu")
        length = torch.tensor([len(mine)], dtype=torch.int64, device=device)
        lengths = [torch.zeros_like(length) for _ in range(self.world)]
        dist.all_gather(lengths, length, group=self.group)
        longest = int(max(int(n) for n in lengths))
        buf = torch.zeros(longest, dtype=torch.uint8, device=device)
        buf[:len(mine)] = torch.frombuffer(bytearray(mine), dtype=torch.uint8).to(device)
        bufs = [torch.zeros_like(buf) for _ in range(self.world)]
        dist.all_gather(bufs, buf, group=self.group)
        views = [_flatten(json.loads(bytes(b[:int(n)].cpu().tolist()).decode())) for b, n in zip(bufs, lengths)]
        problems = []
        for key in sorted(set().union(*views)):
            values = [v.get(key, "<missing>") for v in views]
            if any(x != values[0] for x in values):
                differing = [r for r, x in enumerate(values) if x != values[0]]
                problems.append(f"'{key}' is {_short(values[0])} on rank 0 but {_short(values[differing[0]])} "
                                f"on rank{'s' if len(differing) > 1 else ''} {', '.join(map(str, differing))}")
        if problems:
            raise ConfigMismatch("the ranks of this distributed run disagree: " + "; ".join(problems)
                                 + ". Start every rank with the same script, arguments and data")

    def barrier(self) -> None:
        dist.barrier(group=self.group)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested settings as ``{"optimizer.1.lr": 0.1, ...}``, so a mismatch names the exact entry."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else None
    if items is None:
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in items:
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def digest(tree: Any) -> str:
    """A short hash of every tensor in a nested structure (to check that ranks load the same data)."""
    h = hashlib.sha256()
    for leaf in pytree.tree_leaves(tree):
        if isinstance(leaf, torch.Tensor):
            h.update(f"{tuple(leaf.shape)}{leaf.dtype}".encode())
            h.update(leaf.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(leaf).encode())
    return h.hexdigest()[:16]

