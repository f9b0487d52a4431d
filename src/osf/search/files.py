"""Atomic file writes and the append-only evaluation cache of a search."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from ..ir.errors import FormatError


def write_atomic(path: str | os.PathLike, write: Callable[[str], None], *, overwrite: bool) -> None:
    """Call ``write(temporary path)`` in ``path``'s folder, then rename it onto ``path``: readers see the old
    file or the complete new one, never a partial one. An existing ``path`` raises ``FileExistsError``
    unless ``overwrite=True``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:  # on disk before the rename, so a crash cannot leave an empty file
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any, *, overwrite: bool) -> None:
    """``data`` as indented JSON at ``path``, through ``write_atomic``."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    write_atomic(path, write, overwrite=overwrite)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON value in ``path``; ``FormatError`` naming the file if it is not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(f"{path} is not valid JSON ({e}); it is not an osf file or it is damaged") from None


class EvaluationLog:
    """A JSON-lines file of evaluations: a header line identifying the supernet and the settings that
    change results, then one line per evaluation, appended with a single ``write`` and flushed to disk.
    A line cut short by a crash is dropped (and re-evaluated) on the next open."""

    def __init__(self, path: str | os.PathLike, header: dict):
        self.path = Path(path)
        self.records: list[dict] = []
        if self.path.exists() and self.path.stat().st_size:
            self._load(header)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, lambda tmp: Path(tmp).write_text(json.dumps(header) + "\n"), overwrite=True)

    def _load(self, header: dict) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        try:
            lines = data[:end].decode().splitlines()
            found = json.loads(lines[0]) if lines else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            found = None
        if not isinstance(found, dict) or found.get("format") != header["format"]:
            raise FormatError(f"{self.path} is not an osf search cache; pass another cache path")
        diff = sorted(k for k in set(found) | set(header) if found.get(k) != header.get(k))
        if diff:
            raise ValueError(f"search cache {self.path} was written for another supernet or settings "
                             f"(differs in: {', '.join(diff)}); pass a new cache path or delete the file")
        if end < len(data):  # a crash mid-append: drop the partial line (only now that the file is known ours)
            with open(self.path, "r+b") as f:
                f.truncate(end)
        for n, line in enumerate(lines[1:], start=2):
            try:
                self.records.append(json.loads(line))
            except json.JSONDecodeError:
                raise FormatError(f"{self.path}, line {n}: not valid JSON; the cache is damaged (delete the "
                                  "line or the file)") from None

    def append(self, record: dict) -> None:
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.records.append(record)
