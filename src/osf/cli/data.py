"""Data specs understood by the ``osf`` command, each resolved to ``(x_train, y_train, x_val, y_val)``
tensors of a classification task.

``digits`` (scikit-learn's 8x8 digits), ``mnist1d`` (MNIST-1D, generated locally), ``npz:PATH`` (a NumPy
archive with arrays ``x_train``, ``y_train``, ``x_val``, ``y_val``; read without unpickling) or
``python:pkg.module:function`` (a function returning those four as tensors or arrays)."""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from .models import SpecError, call_target

Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
NAMES = ("x_train", "y_train", "x_val", "y_val")
BUILT_IN = ("digits", "mnist1d")


def load_data(spec: str, root: str | None = None) -> Splits:
    """The four tensors named by ``spec`` (inputs as float32 unless integer, labels as int64); a
    ``python:pkg.module:function`` spec is imported from ``root`` (default: the working directory)."""
    kind, _, rest = spec.partition(":")
    if spec in BUILT_IN:
        from . import builtin
        return _checked(getattr(builtin, spec)(), spec)
    if kind == "npz" and rest:
        return _npz(Path(rest))
    if kind == "python" and rest:
        return _python(rest, root)
    raise SpecError(f"unknown data spec '{spec}'; use digits, mnist1d, npz:PATH (arrays {', '.join(NAMES)}) or "
                    "python:pkg.module:function (returning those four)")


def _npz(path: Path) -> Splits:
    if not path.is_file():
        raise SpecError(f"data file '{path}' does not exist; npz:PATH needs a NumPy .npz archive with arrays "
                        f"{', '.join(NAMES)}")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy file: one array, not the four
            raise ValueError("it holds a single array")
        with archive:
            files = archive.files
            arrays = {n: archive[n] for n in NAMES if n in files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise SpecError(f"cannot read data file '{path}' as a NumPy .npz archive without pickling: {e}") from None
    missing = [n for n in NAMES if n not in arrays]
    if missing:
        raise SpecError(f"data file '{path}' lacks array(s) {missing}; it has {files}, needs {', '.join(NAMES)}")
    return _checked([arrays[n] for n in NAMES], f"npz:{path}")


def _python(target: str, root: str | None) -> Splits:
    return _checked(call_target(target, "function returning the data", root), f"python:{target}")


def _checked(out: Any, spec: str) -> Splits:
    if not (isinstance(out, (tuple, list)) and len(out) == 4):
        raise SpecError(f"data '{spec}' must give four arrays ({', '.join(NAMES)}), got {type(out).__name__}")
    tensors = []
    for name, a in zip(NAMES, out):
        t = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
        if name.startswith("x"):
            t = t.float() if t.is_floating_point() and t.dtype != torch.float32 else t
        elif t.is_floating_point() or t.dim() != 1:
            raise SpecError(f"data '{spec}': {name} must be a 1-D array of integer class labels, got "
                            f"{t.dtype} {tuple(t.shape)}")
        else:
            t = t.long()
        tensors.append(t)
    for x, y in ((tensors[0], tensors[1]), (tensors[2], tensors[3])):
        if len(x) != len(y) or len(x) == 0:
            raise SpecError(f"data '{spec}': inputs and labels differ in length or are empty "
                            f"({len(x)} vs {len(y)})")
    return tensors[0], tensors[1], tensors[2], tensors[3]


def loaders(data: Splits, batch_size: int) -> tuple[DataLoader, DataLoader]:
    """A shuffling training loader (its own generator, which ``osf.train`` reseeds every epoch) and a
    validation loader."""
    x, y, xv, yv = data
    train = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True, generator=torch.Generator())
    return train, DataLoader(TensorDataset(xv, yv), batch_size=max(batch_size, 256))
