"""``osf.export`` on every model of the probe (``bench/probe.py``: Hugging Face architectures and
hand-written models no test names), as a user ships a subnet: per model, ``space.min()`` and a sampled arch
are written as ``.pt2`` and ONNX, and each file is loaded back without osf and run on the probe's inputs:

- *pt2*: ``torch.export.load(file).module()`` must give ``supernet.extract(arch).eval()``'s outputs
  (atol 1e-5, rtol 1e-4);
- *ONNX*: an ONNX Runtime session (CPU), fed the inputs by the names ``osf.export`` gives them, must give
  them within atol 1e-4 × the output's largest magnitude (at least 1), rtol 1e-3 (other kernels).

A model whose eval-mode forward draws random numbers (a VAE's sample) is exported but not compared. Each
model runs in a spawned process with a timeout (an exporter may crash or hang).

    python bench/exports.py                  # every probe model (about 40 minutes)
    python bench/exports.py --quick          # 3 models
    python bench/exports.py --only 'hf:(bert|gpt2)$'   # a few, merged into the last full results

Writes bench/results/exports[-quick].json and the ``exports`` section of docs/benchmarks.md (--quick:
docs/benchmarks-quick.md).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import probe  # noqa: E402

import osf  # noqa: E402
from osf.export.inputs import input_names  # noqa: E402

SEED = 0
QUICK = ("hf:bert", "fused_qkv_split_per_head", "temporal_shift")
ROLES = ("min", "sample")
_CLEAN = ("same", "ran", "near ties")  # what counts as exported cleanly
TIMEOUT = 600


def _tensors(value: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


def _outputs(model: torch.nn.Module, args: tuple, kwargs: dict, seed: int = SEED) -> Any:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return model(*args, **kwargs)


def _check_pt2(file: Path, args: tuple, kwargs: dict, want: Any, compare: bool) -> str:
    program = torch.export.load(str(file))
    if not compare:
        program.module()(*args, **kwargs)
        return "ran"
    why = common.compare_outputs(_tensors(want), _tensors(_outputs(program.module(), args, kwargs)))[0]
    return f"differs: {why}" if why else "same"


def _check_onnx(file: Path, names: list[str], args: tuple, kwargs: dict, want: Any, compare: bool) -> str:
    import onnxruntime
    session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    given = dict(zip(names, _tensors((args, kwargs))))
    missing = [i.name for i in session.get_inputs() if i.name not in given]
    if missing:
        return f"differs: the graph takes inputs {missing}, not among osf's input names {names}"
    got = session.run(None, {i.name: given[i.name].numpy() for i in session.get_inputs()})
    if not compare:
        return "ran"
    why = common.compare_outputs(_tensors(want), [torch.from_numpy(x) for x in got], atol=1e-4, rtol=1e-3,
                                 scaled=True)[0]
    return f"differs: {why}" if why else "same"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def measure(name: str) -> dict:
    """Export ``min()`` and a sampled arch of probe model ``name`` to .pt2 and ONNX; load both back and
    compare them with the extracted model."""
    torch.manual_seed(SEED)
    started = time.perf_counter()
    row: dict[str, Any] = {"model": name}
    try:
        model, args, kwargs = probe.build(name)
        supernet = osf.Supernet(model.eval(), args, kwargs)
    except Exception as e:  # noqa: BLE001 - a model osf refuses is a probe row, not an export one
        row.update(built=False, error=_first_line(e))
        return {**row, "seconds": round(time.perf_counter() - started, 1)}
    row["built"] = True
    names = input_names(supernet.ir)
    with tempfile.TemporaryDirectory() as tmp:
        for role, arch in zip(ROLES, (supernet.space.min(), supernet.space.sample(SEED + 1))):
            small = supernet.extract(arch).eval()
            with probe.NearTies() as selections:
                want = _outputs(small, args, kwargs)
            # another seed gives other outputs where the forward draws random numbers: nothing to compare
            again = _outputs(small, args, kwargs, SEED + 1)
            compare = common.compare_outputs(want, again, atol=0.0, rtol=0.0)[0] is None
            for fmt in ("pt2", "onnx"):
                out = Path(tmp) / f"{role}-{fmt}"
                try:
                    supernet.export(arch, out, formats=(fmt,))
                except Exception as e:  # noqa: BLE001 - reported per format
                    row[f"{fmt}_{role}"] = f"failed: {_first_line(e)}"
                    continue
                try:
                    row[f"{fmt}_{role}"] = (_check_pt2(out / "model.pt2", args, kwargs, want, compare) if fmt == "pt2"
                                            else _check_onnx(out / "model.onnx", names, args, kwargs, want, compare))
                    if row[f"{fmt}_{role}"].startswith("differs") and selections.near_ties:
                        row[f"{fmt}_{role}"] = "near ties"  # other kernels may pick otherwise: not comparable
                except Exception as e:  # noqa: BLE001 - the written file does not load or run
                    row[f"{fmt}_{role}"] = f"does not run: {_first_line(e)}"
    return {**row, "seconds": round(time.perf_counter() - started, 1)}


def child(name: str, conn: Any) -> None:
    """Entry point of the spawned process: send back the model's row."""
    warnings.simplefilter("ignore")
    import transformers
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    try:
        row = measure(name)
    except BaseException as e:  # noqa: BLE001 - reported
        row = {"model": name, "built": False, "error": _first_line(e), "traceback": traceback.format_exc()[-2000:]}
    conn.send(row)
    conn.close()


def _cell(value: str | None) -> str:
    if value is None:
        return ""
    return {"same": "yes", "ran": "ran (random)", "near ties": "ran (near ties)"}.get(
        value, value.replace("|", "\\|")[:160])


def section(env: dict, rows: list[dict]) -> str:
    built = [r for r in rows if r.get("built")]
    cells = [f"{fmt}_{role}" for fmt in ("pt2", "onnx") for role in ROLES]
    counts = {c: sum(r.get(c) in _CLEAN for r in built) for c in cells}
    clean = sum(all(r.get(c) in _CLEAN for c in cells) for r in built)
    lines = ["<!-- exports:start -->", "## Exports: every probe model written as .pt2 and ONNX and loaded back", "",
             f"Generated by `{env['command']}` on {env['date']}"
             + (" (the rows of the models it names re-measured; the others from the last full run)." if "--only" in
                env["command"] else "."), "",
             f"- Machine: {env['platform']} ({env['machine']}), {env['cpus']} CPUs",
             f"- Versions: python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
             f"onnx {env['onnx']}, onnxscript {env['onnxscript']}, onnxruntime {env['onnxruntime']}, osf {env['osf']}",
             f"- Seed {SEED}; the probe's models and inputs (`bench/probe.py`); per model `space.min()` and "
             f"`space.sample({SEED + 1})` exported with `supernet.export(arch, dir, formats=(fmt,))`; *yes*: the "
             "file, loaded back without osf (`torch.export.load(...).module()`; an ONNX Runtime CPU session fed by "
             "input name), gives the extracted model's outputs (pt2: atol 1e-5, rtol 1e-4; ONNX: atol 1e-4 × the "
             "output's largest magnitude, rtol 1e-3); *ran (random)*: it ran, outputs not compared (the forward "
             "draws random numbers); *ran (near ties)*: it ran and its outputs differ where a `topk` / `sort` / "
             "`argmax` of the extracted model picks among values within 1e-4 of the largest (other kernels round "
             "otherwise and pick otherwise: not compared, see the probe's float64 check); otherwise the exporter's error (`osf.ExportError` names the format and the "
             "cause) or what differs", "",
             f"{clean} of {len(built)} models export cleanly in both formats at both archs; "
             + ", ".join(f"{c.replace('_', ' ')}: {counts[c]}" for c in cells)
             + f". Not built ({len(rows) - len(built)}): the models osf refuses (see the probe).", "",
             "| model | pt2 min | pt2 sample | ONNX min | ONNX sample | s |", "|---|---|---|---|---|---:|"]
    for r in rows:
        if r.get("built"):
            lines.append(f"| {r['model']} | " + " | ".join(_cell(r.get(c)) for c in cells) + f" | {r['seconds']} |")
        else:
            lines.append(f"| {r['model']} | not built: {_cell(r.get('error'))} | | | | {r.get('seconds', '')} |")
    return "\n".join(lines + ["<!-- exports:end -->"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--only", metavar="REGEX", help="only models whose name matches REGEX (re.search); "
                                                        "merged into the last full results")
    opts = parser.parse_args(argv)
    names = list(QUICK) if opts.quick else probe.names()
    if opts.only:
        names = [n for n in names if re.search(opts.only, n)]
    result = common.ROOT / "bench" / "results" / ("exports-quick.json" if opts.quick else "exports.json")
    kept = common.rows_kept(result, names) if opts.only else []
    ctx, rows = mp.get_context("spawn"), []
    for name in names:
        row, failure, seconds = common.run_in_child(ctx, child, (name,), TIMEOUT)
        rows.append(row if row is not None else {"model": name, "built": False, "error": failure, "seconds": seconds})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "traceback"}), flush=True)
    order = {n: i for i, n in enumerate(probe.names())}
    rows = sorted(kept + rows, key=lambda r: order.get(r["model"], len(order)))
    env = common.environment(command="python bench/exports.py" + (" --quick" if opts.quick else "")
                             + (f" --only '{opts.only}'" if opts.only else ""),
                             transformers=common.version("transformers"), onnx=common.version("onnx"),
                             onnxscript=common.version("onnxscript"), onnxruntime=common.version("onnxruntime"))
    common.publish("exports", "exports", opts.quick, env, rows, section(env, rows))
    clean = all(r.get(f"{fmt}_{role}") in _CLEAN for r in rows for fmt in ("pt2", "onnx") for role in ROLES)
    return 1 if opts.quick and not clean else 0  # the CI smoke test fails on a model that no longer exports


if __name__ == "__main__":
    sys.exit(main())
