"""Save / load an IR: ``ir.json`` (graph, hierarchy, metadata) + ``weights.safetensors`` (tensors).

Nothing is unpickled on load. Writes go to a temporary directory renamed into place, so a crash never
leaves a half-written IR under the final name; an existing path is never overwritten silently.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import FormatError
from .graph import IR, Graph, ModuleNode

GRAPH_FILE, WEIGHTS_FILE = "ir.json", "weights.safetensors"


def save_ir(ir: IR, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"'{path}' exists; choose another path or pass overwrite=True")
    with staged_directory(path, overwrite) as tmp:
        tensors = {k: t.detach().contiguous().cpu() for k, t in ir.tensors.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "osf-ir"})
        with open(tmp / GRAPH_FILE, "w") as f:
            json.dump(ir.to_json(), f)
    return path


@contextlib.contextmanager
def staged_directory(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """A temporary directory beside ``path``; on success its files are flushed and it replaces ``path``
    (an old ``path`` is moved aside first and removed only after the new one is in place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if (path.exists() or path.is_symlink()) and not overwrite:  # something may have appeared there meanwhile
            raise FileExistsError(f"'{path}' already exists; pass overwrite=True to replace it, or choose another path")
        old = None
        if path.exists() or path.is_symlink():
            old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None and old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        elif old is not None:
            old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)



def load_ir(path: str | os.PathLike) -> IR:
    """Load an IR written by :meth:`IR.save`. Raises :class:`FormatError` if it is corrupt."""
    path = Path(path)
    graph_file, weights_file = path / GRAPH_FILE, path / WEIGHTS_FILE
    if not path.is_dir() or not graph_file.is_file() or not weights_file.is_file():
        raise FormatError(f"'{path}' is not a saved osf IR (expected a directory with {GRAPH_FILE} and "
                          f"{WEIGHTS_FILE})")
    try:
        with open(graph_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"'{graph_file}' is corrupt or truncated: {e}") from None
    if not isinstance(data, dict) or data.get("format") != "osf-ir":
        raise FormatError(f"'{graph_file}' is not an osf IR file")
    try:
        tensors = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as e:
        raise FormatError(f"'{weights_file}' is corrupt or truncated: {e}") from None
    ir = ir_from_json(data, f"'{graph_file}'")
    missing = sorted({c for c in ir.aliases.values() if c not in tensors})
    if missing:
        raise FormatError(f"'{weights_file}' lacks tensors the graph needs: {missing[:5]}")
    _check_shapes(tensors, ir.aliases, ir.modules)
    for k in set(ir.aliases.values()):
        spec = _param_spec(k, ir.modules)
        if spec is not None:
            tensors[k] = torch.nn.Parameter(tensors[k], requires_grad=spec.get("requires_grad", True))
    ir.tensors = tensors
    return ir


def ir_from_json(data: dict, source: str) -> IR:
    """The tensor-less IR of ``IR.to_json()``'s ``data``; ``source`` names it in a ``FormatError``."""
    if data.get("version") != 1:
        raise FormatError(f"{source} has IR version {data.get('version')}; this osf reads version 1")
    try:
        modules = {n: ModuleNode(n, m["meta"], m["children"]) for n, m in data["modules"].items()}
        graph = Graph.from_dict(data["graph"])
        eval_graph = Graph.from_dict(data["eval_graph"]) if data.get("eval_graph") else None
        return IR(graph, modules, {}, data["aliases"], data["info"], eval_graph)
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{source} is missing or has malformed field {e}") from None


def _param_spec(qual: str, modules: dict[str, ModuleNode]) -> dict | None:
    mod, _, local = qual.rpartition(".")
    node = modules.get(mod)
    return None if node is None else node.meta.get("params", {}).get(local)


def _check_shapes(tensors: dict, aliases: dict, modules: dict[str, ModuleNode]) -> None:
    for qual, canon in aliases.items():
        mod, _, local = qual.rpartition(".")
        node = modules.get(mod)
        if node is None:
            continue
        spec = node.meta["params"].get(local) or node.meta["buffers"].get(local)
        if spec is not None and list(tensors[canon].shape) != spec["shape"]:
            raise FormatError(f"tensor '{qual}' has shape {list(tensors[canon].shape)} in the weights file but "
                              f"{spec['shape']} in the graph: the files do not belong together")
