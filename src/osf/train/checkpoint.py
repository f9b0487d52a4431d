"""Training checkpoints: one safetensors file per checkpoint holding the shared weights, the optimizer,
scheduler and RNG states (tensors) and, in its metadata, the step, the data position, the sampler
settings and the supernet's fingerprint (JSON). Nothing is pickled. Files are written to a temporary
name and renamed, so a crash mid-write never leaves a partial file under a checkpoint's name."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .ema import copy_shadow

FORMAT = "osf-checkpoint-1"
_NAME = re.compile(r"^step-(\d{9})\.safetensors$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message names the file and the cause."""


def fingerprint(supernet) -> str:
    """Identifies a supernet's weights layout and search space (checkpoints only load into a match)."""
    h = hashlib.sha256()
    h.update(supernet.ir.modules[""].class_path.encode())
    for name, t in sorted(supernet.tensors().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
    h.update(json.dumps([sorted(g.key for g in supernet.space.groups),
                         sorted(u.key for u in supernet.space.units)]).encode())
    return h.hexdigest()[:16]


# ----- nested states <-> JSON + tensors -----

def _encode(x: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(x, torch.Tensor):
        tensors[path] = x.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(x, np.ndarray):
        tensors[path] = torch.from_numpy(x.astype(np.float64 if x.dtype.kind == "f" else np.int64))
        return {"__ndarray__": path, "dtype": str(x.dtype)}
    if isinstance(x, dict):
        return {"__dict__": [[k, _encode(v, tensors, f"{path}/{k}")] for k, v in x.items()]}
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(x)]}
    if isinstance(x, list):
        return [_encode(v, tensors, f"{path}/{i}") for i, v in enumerate(x)]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    raise TypeError(f"checkpoint: cannot store a {type(x).__name__} (at '{path}') without pickling; keep "
                    "optimizer / scheduler state to tensors, numbers, strings and containers")


def _decode(x: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(x, list):
        return [_decode(v, tensors) for v in x]
    if isinstance(x, dict):
        if "__tensor__" in x:
            return tensors[x["__tensor__"]]
        if "__ndarray__" in x:
            return tensors[x["__ndarray__"]].numpy().astype(x["dtype"])
        if "__tuple__" in x:
            return tuple(_decode(v, tensors) for v in x["__tuple__"])
        if "__dict__" in x:
            return {k: _decode(v, tensors) for k, v in x["__dict__"]}
    return x


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


@contextlib.contextmanager
def kept_buffers(module: torch.nn.Module) -> Iterator[None]:
    """Inside the block ``module``'s buffers (BatchNorm statistics, counters) may change; they are put back
    after."""
    saved = [b.clone() for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, before in zip(module.buffers(), saved):
                b.copy_(before)


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----- files -----

def outer_tensors(model: torch.nn.Module | None, supernet) -> dict[str, torch.Tensor]:
    """The parameters and buffers of ``model`` (a module that runs ``supernet`` inside it, e.g. a detector
    whose backbone it is) that are not the supernet's, by their ``state_dict`` names; empty without one."""
    if model is None:
        return {}
    own = {id(t) for t in supernet.state_dict(keep_vars=True).values()}
    return {k: t for k, t in model.state_dict(keep_vars=True).items() if id(t) not in own}


def save(path: Path, supernet, state: dict[str, Any], model: torch.nn.Module | None = None) -> Path:
    """Write ``supernet``'s weights, those of the enclosing ``model`` outside it (``outer_tensors``) and
    ``state`` (optimizer/scheduler state dicts, RNG, step, ...) atomically to ``path``. An existing file
    is never replaced."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"checkpoint {path} already exists; osf never overwrites a checkpoint")
    tensors: dict[str, torch.Tensor] = {}
    for name, t in supernet.tensors().items():
        tensors[f"weights/{name}"] = t.detach().cpu().contiguous().clone()
    for name, t in outer_tensors(model, supernet).items():
        tensors[f"outer/{name}"] = t.detach().cpu().contiguous().clone()
    meta = {"format": FORMAT, "fingerprint": fingerprint(supernet), "model": supernet.ir.modules[""].class_path,
            "outer": type(model).__qualname__ if model is not None else None,
            "state": _encode(state, tensors, "state")}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"osf": json.dumps(meta)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(supernet, source: str | os.PathLike, *, model: torch.nn.Module | None = None,
                 ema: bool = False) -> int:
    """Load the shared weights of an ``osf.train`` checkpoint into ``supernet`` (built from the same model
    with the same space options) and return the step it was written at: ``source`` is a checkpoint file or
    a ``run_dir`` (its newest checkpoint). With ``model``, the enclosing model's own tensors are loaded
    too. ``ema``: the moving averages of a run trained with ``ema=`` instead of its last weights. The
    optimizer's state stays in the file (``osf.train`` with that ``run_dir`` resumes from it)."""
    path = Path(source)
    if path.is_dir():
        found = checkpoints(path / "checkpoints") or checkpoints(path)
        if not found:
            raise CheckpointError(f"{path} holds no osf checkpoint (step-NNNNNNNNN.safetensors, itself or in its "
                                  "checkpoints/ folder); give osf.train's run_dir or one of its checkpoint files")
        path = found[-1]
    elif not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    state = load(path, supernet, model, enclosing=model is not None)
    if ema:
        if not state.get("ema"):
            raise CheckpointError(f"checkpoint {path} holds no moving averages: its run trained without ema=; load "
                                  "its weights with ema=False")
        copy_shadow(model if model is not None else supernet, state["ema"]["shadow"])
    return int(state["step"])


def load(path: Path, supernet, model: torch.nn.Module | None = None, *,
         enclosing: bool = True) -> dict[str, Any]:
    """Load the weights of checkpoint ``path`` into ``supernet`` (and into the enclosing ``model``'s own
    tensors, which the checkpoint must hold exactly; ``enclosing=False`` ignores those the file holds) and
    return its saved state."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("osf", "null"))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise CheckpointError(f"{path} is not an osf training checkpoint")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except CheckpointError:
        raise
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    if meta["fingerprint"] != fingerprint(supernet):
        raise CheckpointError(f"checkpoint {path} was written for another supernet ({meta['model']}, fingerprint "
                              f"{meta['fingerprint']}); this one is {supernet.ir.modules[''].class_path} with "
                              f"fingerprint {fingerprint(supernet)} (same model and space options needed)")
    outer = outer_tensors(model, supernet)
    saved = {k[len("outer/"):]: t for k, t in tensors.items() if enclosing and k.startswith("outer/")}
    shapes = ({k: tuple(t.shape) for k, t in outer.items()}, {k: tuple(t.shape) for k, t in saved.items()})
    if shapes[0] != shapes[1]:
        what = (f"the weights of an enclosing {meta.get('outer')} model" if saved else "no enclosing model's weights")
        here = f"this run's model= ({type(model).__qualname__})" if model is not None else "this run (no model=)"
        differ = sorted(set(shapes[0].items()) ^ set(shapes[1].items()))[:3]
        raise CheckpointError(f"checkpoint {path} holds {what}, which do not match {here}"
                              + (f" (first differences: {differ})" if saved and outer else "")
                              + "; resume with the same model=, or use another run_dir")
    with torch.no_grad():
        for name, t in supernet.tensors().items():
            t.copy_(tensors[f"weights/{name}"])
        for name, t in outer.items():
            t.copy_(saved[name])
    return _decode(meta["state"], tensors)


def checkpoints(directory: Path) -> list[Path]:
    """The checkpoints in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def name_for(step: int) -> str:
    return f"step-{step:09d}.safetensors"
