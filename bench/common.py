"""Helpers shared by the benchmarks: atomic writes, environment facts, sections of docs/benchmarks.md."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"
QUICK_DOCS = ROOT / "docs" / "benchmarks-quick.md"  # what --quick runs (make bench-quick, CI) regenerate


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


def publish(name: str, section_name: str, quick: bool, env: dict, rows: list[dict], section: str,
            docs: Path = DOCS) -> None:
    """Write ``bench/results/<name>[-quick].json`` (environment and rows) and put ``section`` in ``docs``
    (``--quick`` runs: in docs/benchmarks-quick.md, never over the full results)."""
    out = ROOT / "bench" / "results" / (f"{name}-quick.json" if quick else f"{name}.json")
    write_atomic(out, json.dumps({"environment": env, "rows": rows}, indent=1))
    update_section(QUICK_DOCS if quick else docs, section_name, section)


def rows_kept(result: Path, names: list[str]) -> list[dict]:
    """The rows of the last results in ``result`` for models other than ``names`` (an ``--only`` run merges
    its new rows into them)."""
    if not result.exists():
        return []
    return [r for r in json.loads(result.read_text())["rows"] if r["model"] not in names]


def per_model_main(argv: list[str] | None, *, doc: str, script: str, result: str, section_name: str,
                   quick: tuple, full: tuple, measure, section, docs: Path = DOCS) -> int:
    """The ``main`` of a benchmark that measures each model of a list on 2 threads: ``measure(name,
    setting)`` gives a model's row, over ``full`` = (names, setting), or ``quick`` with ``--quick``; the
    rows go to bench/results/<result>[-quick].json and ``section(env, rows)`` to ``docs`` (``publish``)."""
    import argparse

    import torch
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{len(quick[0])} models, a shorter run")
    opts = parser.parse_args(argv)
    torch.set_num_threads(2)
    names, setting = quick if opts.quick else full
    rows = []
    for name in names:
        rows.append(measure(name, setting))
        print(json.dumps(rows[-1]), flush=True)
    env = environment(command=f"python bench/{script}" + (" --quick" if opts.quick else ""),
                      threads=torch.get_num_threads())
    publish(result, section_name, opts.quick, env, rows, section(env, rows), docs=docs)
    return 0


def extraction_vs_copy(supernet, arch, repeats: int = 5) -> dict:
    """Seconds to ``supernet.extract(arch)`` the first time (code generated) and again (code cached),
    against two plain copies of the extracted model's weights: a ``state_dict`` copy
    (``{k: v.clone() for k, v in model.state_dict().items()}``, the issue's baseline) and the bare clone of
    its tensors from a ready list (the least any copy can cost). Each is timed in blocks of calls lasting a
    few milliseconds (so a sub-millisecond call is not one noisy clock reading), median of ``repeats``
    blocks; the blocks alternate, so drifts in the machine hit all alike."""
    import time

    def timed(fn, calls: int = 1) -> float:
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - started) / calls

    first = timed(lambda: supernet.extract(arch))
    model = supernet.extract(arch)
    kept = list(model.state_dict().values())
    calls = max(1, min(50, int(2e-3 / max(timed(lambda: supernet.extract(arch)), 1e-6))))
    again, state_copy, clone = [], [], []
    for _ in range(repeats):
        again.append(timed(lambda: supernet.extract(arch), calls))
        state_copy.append(timed(lambda: {k: v.clone() for k, v in model.state_dict().items()}, calls))
        clone.append(timed(lambda: [t.clone() for t in kept], calls))
    again_s, copy_s, clone_s = (max(sorted(x)[repeats // 2], 1e-7) for x in (again, state_copy, clone))
    return {"extract_first_s": round(first, 4), "extract_again_s": round(again_s, 6), "copy_s": round(copy_s, 6),
            "clone_s": round(clone_s, 6), "first_vs_copy": round(first / copy_s, 2),
            "again_vs_copy": round(again_s / copy_s, 2), "again_vs_clone": round(again_s / clone_s, 2)}


def compare_outputs(expected, got, atol: float = 1e-5, rtol: float = 1e-4,
                    scaled: bool = False) -> tuple[str | None, float | None]:
    """(why two outputs differ or None, max abs difference) over their tensor leaves, ``torch.allclose``
    per leaf. ``scaled``: ``atol`` times the leaf's largest magnitude (at least 1), for random-weight models
    whose outputs reach ~1e12 (Inception-v3), where float32 rounding alone leaves differences ~1e6."""
    import torch
    from torch.utils._pytree import tree_leaves
    a = [x for x in tree_leaves(expected) if isinstance(x, torch.Tensor)]
    b = [x for x in tree_leaves(got) if isinstance(x, torch.Tensor)]
    if len(a) != len(b):
        return f"{len(b)} output tensors instead of {len(a)}", None
    worst, why = 0.0, None
    for i, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"output {i}: {y.dtype}{list(y.shape)} instead of {x.dtype}{list(x.shape)}", None
        if not x.is_floating_point():
            if not torch.equal(x, y):
                why = why or f"output {i} ({x.dtype}) differs"
            continue
        if x.numel():
            worst = max(worst, (x.double() - y.double()).abs().nan_to_num(float("inf")).max().item())
        scale = max(1.0, x.abs().nan_to_num(0.0).max().item()) if scaled and x.numel() else 1.0
        if not torch.allclose(x, y, atol=atol * scale, rtol=rtol, equal_nan=True):
            why = why or f"output {i} differs (max abs diff {worst:.3g})"
    return why, worst


def output_loss(y):
    """Mean square of the floating-point outputs that carry a gradient (None when none does)."""
    import torch
    from torch.utils._pytree import tree_leaves
    leaves = [v for v in tree_leaves(y) if isinstance(v, torch.Tensor) and v.is_floating_point() and v.requires_grad]
    return sum(v.float().square().mean() for v in leaves) if leaves else None


def gradient_problem(supernet, arch, small) -> str | None:
    """Where the gradients the supernet left at ``arch`` (cut to its kept positions) differ from the
    extracted model's (rtol 1e-4, atol 1e-5 times the gradient's largest magnitude; low-precision dtypes
    torch.testing's tolerances), or None."""
    import torch
    from osf.space.subnet import subnet_ir
    grads = {k: t.grad if t.grad is not None else torch.zeros_like(t) for k, t in supernet.tensors().items()}
    cut = subnet_ir(supernet.space, arch, tensors=grads)  # the arch's IR over the gradients: cut as the weights
    for qual, p in small.named_parameters():
        if p.grad is None:
            continue
        want = cut.tensors[cut.aliases[qual]]
        low = p.grad.dtype in (torch.float16, torch.bfloat16)
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        if not torch.allclose(want, p.grad, rtol=1.6e-2 if low else 1e-4, atol=(1e-3 if low else 1e-5) * scale,
                              equal_nan=True):
            return f"gradient of {qual} differs by {(want - p.grad).abs().max().item():.3g}"
    return None


def run_in_child(ctx, target, args: tuple, timeout: float) -> tuple[dict | None, str | None, float]:
    """Run ``target(*args, conn)`` in a child of multiprocessing context ``ctx``; it sends one dict back.
    Returns (that dict or None, why there is none: a timeout or a crash, seconds)."""
    import time
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=target, args=(*args, send), daemon=True)
    started = time.perf_counter()
    proc.start()
    send.close()
    row, failure = None, None
    try:
        if recv.poll(timeout):
            row = recv.recv()
        else:
            failure = f"timeout: no result after {timeout:.0f} s"
    except EOFError:
        proc.join()
        failure = f"crash: child exited with code {proc.exitcode}"
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        recv.close()
    return row, failure, round(time.perf_counter() - started, 1)
