"""Turning a data loader's batch into model inputs and a target, and moving it to a device."""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable

import torch
import torch.utils._pytree as pytree

from ..ir.errors import InputError

BatchFn = Callable[[Any], tuple[tuple, dict, Any]]


def split_batch(batch: Any, batch_fn: BatchFn | None = None) -> tuple[tuple, dict, Any]:
    """``(args, kwargs, target)`` of one batch. Without ``batch_fn``: ``(inputs, target)`` pairs, a lone
    tensor (no target), or a dict of keyword inputs whose ``"labels"`` entry (if any) is the target."""
    if batch_fn is not None:
        out = batch_fn(batch)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise TypeError("batch_fn must return (args tuple, kwargs dict, target)")
        return out
    if isinstance(batch, torch.Tensor):
        return (batch,), {}, None
    if isinstance(batch, Mapping):
        return (), {k: v for k, v in batch.items() if k != "labels"}, batch.get("labels")
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        return (batch[0],), {}, batch[1] if len(batch) == 2 else None
    raise TypeError(f"cannot tell inputs from targets in a batch of type {type(batch).__name__}"
                    f"{f' with {len(batch)} items' if isinstance(batch, (tuple, list)) else ''}; pass "
                    "batch_fn=lambda batch: (args, kwargs, target)")


@contextlib.contextmanager
def explained(batch: Any, batch_fn: BatchFn | None) -> Iterator[None]:
    """Inside the block, an ``InputError`` (the model refused the inputs taken from ``batch``) also says
    how ``split_batch`` split the batch, when it used its own rule rather than ``batch_fn``."""
    try:
        yield
    except InputError as error:
        if batch_fn is not None:
            raise
        explained_error = InputError(f"{error}. {_split_rule(batch)}")
        for note in getattr(error, "__notes__", ()):  # where it happened (osf.train: the step and the subnet)
            explained_error.add_note(note)
        raise explained_error from error


def _split_rule(batch: Any) -> str:
    fix = "pass batch_fn=lambda batch: (args, kwargs, target) to say which parts are the model's inputs"
    if isinstance(batch, Mapping):
        return (f"The batch is a dict: its 'labels' entry is the target and every other entry a keyword input "
                f"({', '.join(repr(k) for k in batch if k != 'labels')}); if the target has another name or "
                f"some entries are not inputs of the model, {fix}")
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return f"The batch is a pair: its first item is the model's one input and its second the target; {fix}"
    return f"The whole batch is the model's one input, without a target; {fix}"


def to_device(tree: Any, device: torch.device) -> Any:
    """Move every tensor of a nested structure to ``device``."""
    return pytree.tree_map(lambda t: t.to(device, non_blocking=True) if isinstance(t, torch.Tensor) else t, tree)


def batch_size(args: tuple, kwargs: dict) -> int:
    for leaf in pytree.tree_leaves((args, kwargs)):
        if isinstance(leaf, torch.Tensor) and leaf.dim() > 0:
            return int(leaf.shape[0])
    return 1


@contextlib.contextmanager
def seeded(loader: Iterable | None, seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Inside the block, torch's random state (CPU, and ``device``'s when it is a GPU) and the loader's own
    generator (``loader.generator``, which a ``DataLoader`` shuffles with instead of the global state) are
    seeded with ``seed``, so each pass over ``loader`` started there yields the same batches; both are
    restored afterwards."""
    generator = getattr(loader, "generator", None)
    saved = generator.get_state() if isinstance(generator, torch.Generator) else None
    devices = []
    if device is not None and device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if saved is not None:
            generator.manual_seed(seed)
        try:
            yield
        finally:
            if saved is not None:
                generator.set_state(saved)
