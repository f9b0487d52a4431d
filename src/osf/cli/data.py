"""Data specs understood by the ``osf`` command, each resolved to the ``x_train, y_train, x_val, y_val``
tensors of a classification task (labels one per sample, or one per position: segmentation, tagging), plus
any further model inputs by name.

``digits`` (scikit-learn's 8x8 digits), ``mnist1d`` (MNIST-1D, generated locally), ``npz:PATH`` (a NumPy
archive with arrays ``x_train``, ``y_train``, ``x_val``, ``y_val``; read without unpickling) or
``python:pkg.module:function`` (a function returning those four as tensors or arrays, or a dict of arrays
named as in the archive, or two ``torch.utils.data.Dataset``s of ``(x, y)`` samples, read batch by batch: data
that do not fit in memory, an image folder with its transforms). ``x`` is the model's first input; arrays
``NAME_train`` and ``NAME_val`` (a text model's ``attention_mask_train`` / ``attention_mask_val``) are its
input ``NAME``, one row per sample."""
from __future__ import annotations

import functools
import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, default_collate

from ..train.labels import IGNORE_INDEX
from .models import SpecError, call_target

NAMES = ("x_train", "y_train", "x_val", "y_val")
BUILT_IN = ("digits", "mnist1d")
SPLITS = ("_train", "_val")
LABELS = "labels"  # the target's key in a batch of named inputs (``osf.supernet.batches.split_batch``)
# what to do with labels ``osf train`` does not train on
PYTHON_API = (", and osf train trains classifiers (cross-entropy, top-1 accuracy): train this supernet in Python with "
              "osf.train and your own loss_fn (docs/train.md), then osf.search it with your own score (docs/search.md)")


class Splits(NamedTuple):
    """A classification task: inputs and labels of both splits, and the model's further inputs by name
    (each a tensor with one row per sample of its split). Data given as datasets (``sets``: train and
    validation) are read from them; ``x_*`` and ``y_*`` then hold the first two samples of each split (what
    tracing and the checks before it read) and ``top_label`` the largest label, where a dataset's
    ``targets`` tell it."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    inputs_train: dict[str, torch.Tensor] = {}
    inputs_val: dict[str, torch.Tensor] = {}
    sets: tuple[Dataset, Dataset] | None = None
    top_label: int | None = None

    def largest_label(self) -> int:
        """The largest class label of either split (of the samples at hand where datasets do not say)."""
        seen = int(max(self.y_train.max(), self.y_val.max()))
        return seen if self.top_label is None else max(seen, self.top_label)

    def fingerprint(self) -> str:
        """A hash of the data (every array's dtype, shape and values; for datasets, their lengths and the
        labels they list, as their samples may be drawn through random transforms): a run records it, so
        resuming on data changed behind the same spec is refused."""
        digest = hashlib.blake2b(digest_size=16)
        if self.sets is None:
            named = [("x_train", self.x_train), ("y_train", self.y_train), ("x_val", self.x_val), ("y_val", self.y_val)]
            for split, inputs in (("_train", self.inputs_train), ("_val", self.inputs_val)):
                named += [(name + split, t) for name, t in sorted(inputs.items())]
        else:
            named = [(f"{split} length", torch.tensor(len(ds))) for split, ds in zip(SPLITS, self.sets)]
            named += [(f"{split} targets", torch.as_tensor(ds.targets)) for split, ds in zip(SPLITS, self.sets)
                      if isinstance(getattr(ds, "targets", None), (list, tuple, torch.Tensor, np.ndarray))]
        for name, t in named:
            digest.update(f"{name} {t.dtype} {tuple(t.shape)};".encode())
            digest.update(memoryview(np.ascontiguousarray(t.detach().cpu().numpy())).cast("B"))
        return digest.hexdigest()


def load_data(spec: str, root: str | None = None) -> Splits:
    """The splits named by ``spec`` (inputs as float32 unless integer, labels as int64); a
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
            arrays = {n: archive[n] for n in files if n in NAMES or n.endswith(SPLITS)}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise SpecError(f"cannot read data file '{path}' as a NumPy .npz archive without pickling: {e}") from None
    missing = [n for n in NAMES if n not in arrays]
    if missing:
        raise SpecError(f"data file '{path}' lacks array(s) {missing}; it has {files}, needs {', '.join(NAMES)}")
    return _checked(arrays, f"npz:{path}")


def _python(target: str, root: str | None) -> Splits:
    return _checked(call_target(target, "function returning the data", root), f"python:{target}")


def _checked(out: Any, spec: str) -> Splits:
    if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(d, Dataset) for d in out):
        return _datasets(out[0], out[1], spec)
    if isinstance(out, Mapping):
        missing = [n for n in NAMES if n not in out]
        if missing:
            raise SpecError(f"data '{spec}' lacks {missing}; it has {sorted(out)}, needs {', '.join(NAMES)}")
        inputs = _named_inputs(out, spec)
        out = [out[n] for n in NAMES]
    elif isinstance(out, (tuple, list)) and len(out) == 4:
        inputs = ({}, {})
    else:
        raise SpecError(f"data '{spec}' must give four arrays ({', '.join(NAMES)}), a dict of them or two "
                        f"datasets (train, validation), got {type(out).__name__}")
    tensors = []
    for name, a in zip(NAMES, out):
        if name.startswith("x"):
            t = _input(a, name, spec)
        else:
            t = _tensor(a, name, spec)
            if t.is_floating_point() or t.is_complex() or t.dim() == 0 or (t.dim() == 2 and t.size(1) == 1):
                raise SpecError(f"data '{spec}': {name} must be an array of integer class labels, one per sample "
                                "(1-D) or one per position ([N, H, W] for segmentation, [N, tokens] for tagging), got "
                                f"{t.dtype} {tuple(t.shape)}{_label_hint(t)}")
            _check_label_values(t, name, spec)
            t = t.long()
        tensors.append(t)
    if (tensors[1].dim() > 1) != (tensors[3].dim() > 1):
        raise SpecError(f"data '{spec}': y_train holds {_labels_kind(tensors[1])} but y_val {_labels_kind(tensors[3])}; "
                        "label both splits alike")
    for i, split in enumerate(SPLITS):
        x, y = tensors[2 * i], tensors[2 * i + 1]
        if len(x) != len(y) or len(x) == 0:
            raise SpecError(f"data '{spec}': inputs and labels differ in length or are empty "
                            f"({len(x)} vs {len(y)})")
        for name, t in inputs[i].items():
            if t.dim() == 0 or len(t) != len(x):
                raise SpecError(f"data '{spec}': {name}{split} has {len(t) if t.dim() else 0} rows, x{split} "
                                f"{len(x)}; give one row per sample")
    return Splits(*tensors, *inputs)


def _datasets(train: Dataset, val: Dataset, spec: str) -> Splits:
    """Splits read from two datasets of ``(x, y)`` samples: their first two samples checked and kept as
    arrays, the datasets read by the loaders."""
    probes = []
    for name, ds in (("train", train), ("validation", val)):
        try:
            size = len(ds)  # type: ignore[arg-type]
        except TypeError:
            raise SpecError(f"data '{spec}': the {name} dataset has no length; give a map-style dataset "
                            "(__getitem__ and __len__)") from None
        if size == 0:
            raise SpecError(f"data '{spec}': the {name} dataset is empty")
        first = [ds[i] for i in range(min(2, size))]
        if not all(isinstance(s, (tuple, list)) and len(s) == 2 for s in first):
            size = f" of {len(first[0])}" if isinstance(first[0], (tuple, list)) else ""
            keys = f" with keys {list(first[0])[:6]}" if isinstance(first[0], Mapping) else ""
            fix = ("; for samples of several named inputs (a Hugging Face dataset's input_ids, attention_mask and "
                   "label), return arrays instead, padded to one length: x_train (the first input), NAME_train for "
                   "each other input, y_train, and the same for _val" if keys else "")
            raise SpecError(f"data '{spec}': a {name} sample must be a pair (input, label), got "
                            f"{type(first[0]).__name__}{size}{keys}{fix}")
        if not isinstance(first[0][0], (torch.Tensor, np.ndarray)):
            raise SpecError(f"data '{spec}': a {name} sample's input is a {type(first[0][0]).__name__}, not a tensor; "
                            "give the dataset a transform that makes one (torchvision.transforms.ToTensor() for images)")
        x, y = default_collate(first * (3 - len(first)) if len(first) == 1 else first)
        probes += [x, y]
    tensors = _checked(probes, spec)
    tops = [t for t in map(_top_target, (train, val)) if t is not None]
    return tensors._replace(sets=(train, val), top_label=max(tops) if tops else None)


def _top_target(dataset: Dataset) -> int | None:
    """The largest of a dataset's ``targets`` (torchvision's datasets list their labels), if numbers."""
    targets = getattr(dataset, "targets", None)
    try:
        return int(torch.as_tensor(targets).max()) if targets is not None and len(targets) else None
    except (TypeError, ValueError, RuntimeError):  # not numbers: only the samples read are checked
        return None


def _tensor(a: Any, name: str, spec: str) -> torch.Tensor:
    """Array ``name`` of the data as a tensor; strings and objects refused, saying what to store instead."""
    if isinstance(a, torch.Tensor):
        return a
    array = np.asarray(a)
    if array.dtype.kind in "USO":  # str, bytes, Python objects
        fix = ("store class indices, the same in both splits: classes = np.unique(y_train); y = "
               "np.searchsorted(classes, y)" if name.startswith("y") else
               "store numbers: text as token ids from a tokenizer (padded to one length, with attention_mask_train "
               "and attention_mask_val)")
        raise SpecError(f"data '{spec}': {name} holds {'strings' if array.dtype.kind in 'US' else 'Python objects'} "
                        f"({array.dtype}); {fix}")
    return torch.as_tensor(array)


def _labels_kind(y: torch.Tensor) -> str:
    return f"labels per position ({tuple(y.shape[1:])} per sample)" if y.dim() > 1 else "one label per sample"


def _check_label_values(t: torch.Tensor, name: str, spec: str) -> None:
    """Class labels run from 0; labels per position may leave positions out with ``IGNORE_INDEX``."""
    per_position = t.dim() > 1
    kept = t[t != IGNORE_INDEX] if per_position else t
    if kept.numel() and int(kept.min()) < 0:
        ignore = f"label positions to leave out {IGNORE_INDEX}" if per_position else "drop the samples to ignore"
        raise SpecError(f"data '{spec}': {name} holds the label {int(kept.min())}; class labels run from 0 to the "
                        f"number of classes - 1 ({ignore})")


def _label_hint(t: torch.Tensor) -> str:
    """How labels shaped or typed otherwise than class indices may be stored as such."""
    if t.dim() == 2 and t.size(1) == 1:
        return "; store y.ravel()"
    if t.dim() == 2 and t.is_floating_point() and bool(((t == 0) | (t == 1)).all()):
        return ("; class indices per position (tagging): store y.astype(np.int64); several labels per sample "
                f"(multi-label), one-hot or not{PYTHON_API}")
    if t.is_floating_point() and t.numel() and bool((t == t.round()).all()):
        return "; store y.astype(np.int64)"
    return f"; these look like regression targets{PYTHON_API}"


def _input(a: Any, name: str, spec: str) -> torch.Tensor:
    """A model input as a tensor: floating point as float32, integers and booleans as they are."""
    t = _tensor(a, name, spec)
    if t.is_floating_point() and t.numel():
        finite = torch.isfinite(t.reshape(len(t), -1) if t.dim() else t.reshape(1, 1)).all(dim=1)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            raise SpecError(f"data '{spec}': {name} holds NaN or infinite values ({int((~finite).sum())} samples, the "
                            f"first at row {first}); every loss would be NaN: fill them (np.nan_to_num) or drop "
                            "those samples")
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t


def _named_inputs(arrays: Mapping[str, Any], spec: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The further model inputs of a dict of arrays: ``NAME_train`` with ``NAME_val``, ``NAME`` neither x nor y
    nor the batches' label key."""
    names = {k.removesuffix(split) for k in arrays for split in SPLITS if k.endswith(split) and k not in NAMES}
    for name in sorted(names):
        unpaired = [name + split for split in SPLITS if name + split not in arrays]
        if unpaired or not name.isidentifier() or name == LABELS:
            why = (f"lacks {unpaired[0]}: a further model input needs both {name}_train and {name}_val"
                   if unpaired else f"'{name}' cannot name a model input (a Python identifier other than {LABELS!r})")
            raise SpecError(f"data '{spec}' {why}")
    return tuple({n: _input(arrays[n + split], n + split, spec) for n in sorted(names)} for split in SPLITS)


class _Named(Dataset):
    """Samples as dicts: the model's inputs by name and the label under ``LABELS``."""

    def __init__(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {**{k: v[i] for k, v in self.inputs.items()}, LABELS: self.labels[i]}


def loaders(data: Splits, batch_size: int, x_name: str | None = None,
            constants: dict[str, Any] | None = None, workers: int = 0) -> tuple[DataLoader, DataLoader]:
    """A shuffling training loader (its own generator, which ``osf.train`` reseeds every epoch) and a
    validation loader: ``(x, y)`` batches, or with ``x_name`` (the model's name for its first input) dicts
    of the inputs by name, the further inputs and ``constants`` (keyword values the model was traced with,
    such as ``use_cache=False``) beside them, and the labels under ``LABELS``. Datasets are read by
    ``workers`` processes (0: in this one); arrays always in this one."""
    def samples(x: torch.Tensor, y: torch.Tensor, inputs: dict[str, torch.Tensor], pairs: Dataset | None) -> Dataset:
        if pairs is not None:
            return pairs if x_name is None else _NamedPairs(pairs, x_name)
        if x_name is None:
            if inputs:
                raise ValueError("data with further model inputs need x_name, the model's name for its first input")
            return TensorDataset(x, y)
        return _Named({x_name: x, **inputs}, y)
    collate = None if x_name is None else functools.partial(_with_constants, constants=dict(constants or {}))
    sets = data.sets or (None, None)
    workers = workers if data.sets is not None else 0
    return (DataLoader(samples(data.x_train, data.y_train, data.inputs_train, sets[0]), batch_size=batch_size,
                       shuffle=True, generator=torch.Generator(), collate_fn=collate, num_workers=workers),
            DataLoader(samples(data.x_val, data.y_val, data.inputs_val, sets[1]), batch_size=max(batch_size, 256),
                       collate_fn=collate, num_workers=workers))


class _NamedPairs(Dataset):
    """A dataset's ``(x, y)`` samples as dicts: ``x`` under the model's name for it, ``y`` under ``LABELS``."""

    def __init__(self, pairs: Dataset, x_name: str) -> None:
        self.pairs, self.x_name = pairs, x_name

    def __len__(self) -> int:
        return len(self.pairs)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        x, y = self.pairs[i]
        return {self.x_name: x, LABELS: y}


def _with_constants(samples: list[dict[str, torch.Tensor]], constants: dict[str, Any]) -> dict[str, Any]:
    return {**default_collate(samples), **constants}
