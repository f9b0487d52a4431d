"""Supernet train step vs the same subnet extracted standalone, side by side in one run.

For each model and arch (max, min and random archs), a train step (zero grads, forward, loss, backward)
runs in rounds, in a random order, through ``supernet.set_arch(arch)`` (views of the shared weights),
through ``supernet.extract(arch)`` (a physically smaller copy) and through a second copy of that extracted
subnet, the A/A control that shows how far the machine's noise alone moves a ratio. Reported: the median
step-time ratio (target: at most 1.05×) and the activation-memory ratio (target: at most 1.2×): the peak
of what a step allocates besides gradient storage (activations, workspaces), read from the C allocator (glibc
``mallinfo2``) or, on CUDA, from ``torch.cuda.max_memory_allocated``. Reported beside it: the gradient
storage (full-size in the supernet), the peak of a step that allocates its gradients anew, and the ratio
of total peaks, which add the model's own tensors (the supernet must hold all shared weights, the subnet
only its own).
Also the cost of switching to a not yet seen arch (binding the supernet's program template; the first
switch of a model, its max subnet, also generates that template).

    python bench/supernet_step.py            # ResNet-50 and ViT-B/16 (about 10 minutes on 2 cores)
    python bench/supernet_step.py --quick    # ResNet-18 and a small ViT (about a minute)
    python bench/supernet_step.py --device cuda
    python bench/supernet_step.py --malloc keep   # glibc malloc keeping freed memory (see below)

On CPU, a subnet's convolutions on narrowed weight views copy each weight contiguous on every call, and
with glibc's default malloc a copy of a few MB is a fresh ``mmap`` whose pages fault in afresh each time
(it is returned to the OS on free): up to 1.37× on one ResNet-50 3×3 conv. ``--malloc keep`` re-runs the
bench with ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` raised so freed memory is reused, as
PyTorch's CPU performance guide advises (or jemalloc / tcmalloc); both models of each row run in the same
process, so the ratio stays like for like.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import random
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torchvision

import common
import osf

SEED = 0
KEEP_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(1 << 30), "MALLOC_TRIM_THRESHOLD_": str(1 << 34)}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def heap_in_use() -> int:
    """Bytes currently allocated through malloc (small blocks plus mmapped large ones)."""
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


class PeakSampler:
    """Samples ``heap_in_use`` in a thread while the block runs (torch kernels release the GIL)."""

    def __enter__(self) -> "PeakSampler":
        self.base = self.peak = heap_in_use()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, heap_in_use())
            time.sleep(0.0002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, heap_in_use())


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def zero_grads(params: list, keep_grads: bool = False) -> None:
    """Over ``params`` listed once beforehand, as an optimizer holds them: ``.grad`` set to None, or with
    ``keep_grads`` zeroed in place (``zero_grad(set_to_none=False)``)."""
    for p in params:
        if keep_grads and p.grad is not None:
            p.grad.zero_()
        else:
            p.grad = None


def forward_backward(model, x, device) -> None:
    model(x).float().logsumexp(-1).mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()


def step(model, params: list, x, device) -> None:
    """One train step: zero grads, forward, loss, backward."""
    zero_grads(params)
    forward_backward(model, x, device)


def timed(model, params: list, x, device) -> float:
    t = time.perf_counter()
    step(model, params, x, device)
    return time.perf_counter() - t


def step_memory(model, params: list, x, device, *, keep_grads: bool = False) -> int:
    """Peak bytes of one train step beyond what existed before it. ``keep_grads``: the gradients of the
    previous step stay allocated and are zeroed in place, so the step allocates only activations and
    workspaces; otherwise ``.grad`` is set to None and the step allocates its gradients too."""
    zero_grads(params, keep_grads)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        forward_backward(model, x, device)
        return torch.cuda.max_memory_allocated() - base
    with PeakSampler() as s:
        forward_backward(model, x, device)
    return s.peak - s.base


def measure(name: str, model: torch.nn.Module, size: int, batch: int, archs: int, repeats: int,
            device: torch.device, budget_s: float) -> list[dict]:
    torch.manual_seed(SEED)
    x = torch.randn(batch, 3, size, size, device=device)
    supernet = osf.Supernet(model.train(), (x[:2].cpu(),)).to(device).train()
    space = supernet.space
    picks = [("max", space.max()), ("min", space.min())] + [(f"random{i}", space.sample(SEED + i))
                                                           for i in range(archs)]
    rows = []
    for role, arch in picks:
        sub = supernet.extract(arch).to(device).train()
        t0 = time.perf_counter()
        supernet.set_arch(arch)  # first use: binds the program template (generated at the first one)
        switch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        supernet.set_arch(arch)
        cached_switch_s = time.perf_counter() - t0
        twin = copy.deepcopy(sub)  # the A/A control: a second standalone copy, timed alike
        sup_params, sub_params = list(supernet.parameters()), list(sub.parameters())
        runs = {"supernet": (supernet, sup_params), "standalone": (sub, sub_params),
                "twin": (twin, list(twin.parameters()))}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for model_, params in runs.values():
            step(model_, params, x, device)  # warm-up
        order, started = random.Random(SEED), time.perf_counter()
        while len(times["supernet"]) < repeats or (time.perf_counter() - started < budget_s
                                                   and len(times["supernet"]) < 200):
            for k in order.sample(list(runs), len(runs)):  # each round in a random order: drifts hit all alike
                times[k].append(timed(*runs[k], x, device))
        sup_t, sub_t = times["supernet"], times["standalone"]
        del twin, runs
        sup_step = sub_step = sup_act = sub_act = 0
        for _ in range(max(3, min(20, int(0.5 / statistics.median(sup_t))))):  # a sampled peak: the max of a few
            supernet.release_grad_buffers()  # so the measured step allocates its gradient memory, as the subnet's does
            sup_step = max(sup_step, step_memory(supernet, sup_params, x, device))
            sub_step = max(sub_step, step_memory(sub, sub_params, x, device))
            sup_act = max(sup_act, step_memory(supernet, sup_params, x, device, keep_grads=True))
            sub_act = max(sub_act, step_memory(sub, sub_params, x, device, keep_grads=True))
        grads = [p.grad for p in sup_params if p.grad is not None]  # full-size, for every weight the subnet reads
        sup_grads, sub_grads = tensor_bytes(grads), tensor_bytes([p.grad for p in sub_params if p.grad is not None])
        sup_mem = tensor_bytes(supernet.tensors().values()) + sup_step
        sub_mem = tensor_bytes(list(sub.parameters()) + list(sub.buffers())) + sub_step
        sup_med, sub_med = statistics.median(sup_t), statistics.median(sub_t)
        rows.append({"model": name, "arch": role, "params": supernet.cost(arch)["params"],
                     "supernet_step_s": round(sup_med, 4), "standalone_step_s": round(sub_med, 4),
                     "time_ratio": round(sup_med / sub_med, 3), "steps": len(sup_t),
                     "aa_ratio": round(statistics.median(times["twin"]) / sub_med, 3),
                     "supernet_peak_mb": round(sup_mem / 2**20, 1),
                     "standalone_peak_mb": round(sub_mem / 2**20, 1), "memory_ratio": round(sup_mem / sub_mem, 3),
                     "step_memory_ratio": round(sup_step / max(sub_step, 1), 3),
                     "supernet_act_mb": round(sup_act / 2**20, 1), "standalone_act_mb": round(sub_act / 2**20, 1),
                     "act_memory_ratio": round(sup_act / max(sub_act, 1), 3),
                     "supernet_grad_mb": round(sup_grads / 2**20, 1), "standalone_grad_mb": round(sub_grads / 2**20, 1),
                     "supernet_step_mb": round(sup_step / 2**20, 1), "standalone_step_mb": round(sub_step / 2**20, 1),
                     "first_switch_ms": round(switch_s * 1e3, 1), "cached_switch_ms": round(cached_switch_s * 1e3, 3)})
        print(json.dumps(rows[-1]), flush=True)
        supernet.set_arch(None)
        del sub
    return rows


def markdown(env: dict, rows: list[dict]) -> str:
    keep = env.get("malloc") == "keep"
    lines = ["<!-- supernet-step:start -->",
             "## Supernet step vs standalone subnet step" + (", malloc keeping freed memory" if keep else ""), "",
             f"Generated by `{env['command']}` on {env['date']}.", "",
             f"- Machine: {env['platform']} ({env['machine']}), {env['cpus']} CPUs, {env['threads']} torch threads, "
             f"device {env['device']}",
             f"- Versions: python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, "
             f"osf {env['osf']}",
             f"- Seed {env['seed']}; train mode; batch {env['batch']}; median of at least {env['repeats']} rounds "
             "(more for fast steps, up to a time budget; *steps*: how many) after one warm-up each; a round steps the "
             "supernet, the standalone subnet and a second copy of the standalone subnet once each, in a random "
             "order; step = zero grads + forward + loss + backward; the zero-grad loop runs over a parameter list "
             "made once per model, as an optimizer's `zero_grad` does",
             "- *A/A*: the second standalone copy's median step ÷ the first's, the same model timed alike: how far "
             "a time ratio can stray from 1 by this machine's noise alone",
             "- Memory (on CPU sampled every 0.2 ms, the max over 3–20 steps, so a step of a few ms reads roughly): "
             "*activation MB* is the peak a step allocates while the gradients of the previous step stay "
             "allocated and are zeroed in place (`zero_grad(set_to_none=False)`): activations and workspaces, what "
             "running a subnet through the supernet costs. *Gradient MB* is the gradient storage itself: the "
             "supernet keeps a full-size `.grad` for every weight the subnet reads (an optimizer needs `.grad` "
             "shaped like the weight; sandwich training fills them for the max subnet anyway), so a subnet reading "
             "a small part of large weights holds far more gradient memory than its standalone twin whatever the "
             "implementation. *Step MB* is the peak of a step that allocates its gradients anew (`.grad` set to "
             "None, the supernet's buffers released first). *Peak MB* adds the model's own tensors: the supernet "
             "holds every shared weight, so its total ratio grows as the subnet shrinks",
             "- Allocator: " + (f"glibc malloc with {', '.join(f'`{k}={v}`' for k, v in KEEP_MALLOC.items())}: freed "
                                "memory is reused instead of returned to the OS (PyTorch's CPU tuning advice)" if keep
                                else "the system's (glibc malloc, defaults); `--malloc keep` below shows the same rows "
                                "with freed memory reused"),
             "- *First switch*: `set_arch` of an arch not seen before, which binds the supernet's program template "
             "(generated once, at a model's first `set_arch`: the max rows include it); *cached switch*: the same "
             "arch again",
             "- Targets: time ratio ≤ 1.05, activation-memory ratio ≤ 1.2", "",
             "| model | arch | params | supernet step s | standalone step s | time ratio | A/A | steps | activation MB "
             "(supernet / standalone) | activation ratio | gradient MB | step MB | step ratio | peak MB | total ratio | "
             "first switch ms | cached switch ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['arch']} | {r['params']:,} | {r['supernet_step_s']} | "
                     f"{r['standalone_step_s']} | {r['time_ratio']} | {r['aa_ratio']} | {r['steps']} | "
                     f"{r['supernet_act_mb']} / "
                     f"{r['standalone_act_mb']} | {r['act_memory_ratio']} | {r['supernet_grad_mb']} / "
                     f"{r['standalone_grad_mb']} | {r['supernet_step_mb']} / {r['standalone_step_mb']} | "
                     f"{r['step_memory_ratio']} | {r['supernet_peak_mb']} / {r['standalone_peak_mb']} | "
                     f"{r['memory_ratio']} | {r['first_switch_ms']} | {r['cached_switch_ms']} |")
    return "\n".join(lines + ["<!-- supernet-step:end -->"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models only (a smoke test)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="results file (default bench/results/...)")
    parser.add_argument("--malloc", choices=("system", "keep"), default="system",
                        help="keep: glibc malloc set to reuse freed memory instead of returning it to the OS")
    opts = parser.parse_args(argv)
    if opts.malloc == "keep" and any(os.environ.get(k) != v for k, v in KEEP_MALLOC.items()):
        os.execve(sys.executable, [sys.executable, __file__, *(sys.argv[1:] if argv is None else argv)],
                  {**os.environ, **KEEP_MALLOC})  # read at start-up
    torch.set_num_threads(opts.threads)
    device = torch.device(opts.device)
    if opts.quick:
        models = [("resnet18", torchvision.models.resnet18(), 64, 4),
                  ("vit_tiny", torchvision.models.VisionTransformer(32, 8, 4, 4, 64, 128), 32, 8)]
        repeats, archs, budget_s = 5, 1, 1.0
    else:
        models = [("resnet50", torchvision.models.resnet50(), 224, 4),
                  ("vit_b_16", torchvision.models.vit_b_16(), 224, 4)]
        repeats, archs, budget_s = 11, 2, 20.0
    rows = []
    for name, model, size, batch in models:
        rows += measure(name, model, size, batch, archs, repeats, device, budget_s)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    env = common.environment(command="python bench/supernet_step.py " + " ".join(argv or sys.argv[1:]),
                             seed=SEED, threads=opts.threads, repeats=repeats, device=str(device) + gpu,
                             malloc=opts.malloc,
                             batch=", ".join(f"{n} {b}×3×{s}×{s}" for n, _, s, b in models))
    variant = device.type + ("-keep" if opts.malloc == "keep" else "")
    name = "supernet_step-quick.json" if opts.quick else f"supernet_step-{variant}.json"
    out = opts.json or common.ROOT / "bench" / "results" / name
    common.write_atomic(out, json.dumps({"environment": env, "rows": rows}, indent=1))
    common.update_section(common.QUICK_DOCS if opts.quick else common.DOCS, f"supernet-step-{variant}",
                          markdown(env, rows).replace("supernet-step:", f"supernet-step-{variant}:"))
    print(markdown(env, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
