"""Helpers shared by the benchmarks: atomic writes, environment facts, sections of docs/benchmarks.md."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(**settings) -> dict:
    """Date, machine and versions, plus the benchmark's own ``settings``."""
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "platform": platform.platform(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": version("torch"), "torchvision": version("torchvision"), "timm": version("timm"),
            "osf": version("osf"), **settings}


def update_section(path: Path, name: str, section: str) -> None:
    """Replace the ``<!-- name:start -->`` … ``<!-- name:end -->`` section of ``path`` with ``section``
    (which carries the markers), appending it (or creating the file) when missing."""
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start, end = text.find(start_mark), text.find(end_mark)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(end_mark):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    write_atomic(path, text)
