"""Model-zoo sweep: capture torchvision and timm models with ``osf.trace`` and check ``ir.build()``.

For every torchvision classification, segmentation, detection and video model and a list of timm
models, capture the model (eval-mode example inputs, random weights), rebuild it from the IR and
compare the rebuilt model's eval-mode outputs with the original's (``torch.allclose`` on every tensor
leaf). Each model runs alone in a freshly spawned process with a timeout, so a hang or a crash only
costs that model. Results go to a JSON file and to the ``zoo`` section of ``docs/benchmarks.md``;
both are rewritten (atomically) after every model, so an interrupted sweep keeps what it measured.

    python bench/zoo.py                  # everything (about an hour on 2 cores)
    python bench/zoo.py --quick          # a few small models (under 3 minutes)
    python bench/zoo.py --only 'vit|swin' --json /tmp/vit.json
    python bench/zoo.py --redo 'maxvit|levit' --note 'reshape rule changed their spaces'

Rows stay in the sweep's own order whatever order they were measured in. The JSON keeps a log of the
runs that produced its rows (date, machine, command, models, note), shown at the top of the section:
``--resume`` (finish an interrupted sweep) and ``--redo`` (re-measure some models after a change) add
to it instead of replacing the history.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import shlex
import statistics
import sys
import time
import traceback
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import common
from common import DOCS, ROOT
START, END = "<!-- zoo:start -->", "<!-- zoo:end -->"
SEED, THREADS, BATCH = 0, 2, 2
ATOL, RTOL = 1e-5, 1e-4
CAPTURE_TARGET_S = 5.0
TIMED_MODELS = ("resnet50", "vit_b_16")  # torchvision models whose capture time is reported explicitly

CLS, SEG, DET, VIDEO, TIMM = ("torchvision-classification", "torchvision-segmentation",
                              "torchvision-detection", "torchvision-video", "timm")
FAMILIES = (CLS, SEG, DET, VIDEO, TIMM)

TIMM_MODELS = (
    # plain vision transformers
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_small_patch32_224", "deit_tiny_patch16_224",
    "deit_tiny_distilled_patch16_224", "deit3_small_patch16_224", "beit_base_patch16_224",
    "eva02_tiny_patch14_224", "vit_small_patch16_dinov3", "cait_xxs24_224", "xcit_nano_12_p16_224",
    "crossvit_tiny_240", "tnt_s_patch16_224", "volo_d1_224", "convit_tiny",
    # hierarchical transformers and hybrids
    "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "pvt_v2_b0", "twins_svt_small",
    "twins_pcpvt_small", "coat_lite_tiny", "coat_tiny", "levit_128s", "levit_conv_128s", "mobilevit_xxs",
    "mobilevitv2_050", "tiny_vit_5m_224", "efficientformer_l1", "efficientformerv2_s0", "edgenext_xx_small",
    "visformer_tiny", "pit_ti_224", "coatnet_0_rw_224", "maxvit_tiny_tf_224", "nest_tiny", "davit_tiny",
    "gcvit_xxtiny", "focalnet_tiny_srf", "efficientvit_b0", "efficientvit_m0", "fastvit_t8", "shvit_s1",
    "hiera_tiny_224", "mvitv2_tiny", "nextvit_small", "swinv2_cr_tiny_224", "vitamin_small_224",
    "vit_relpos_small_patch16_224", "vit_small_r26_s32_224", "iformer_t", "swiftformer_xs", "efficientvim_m1",
    "lowformer_b0",
    # MLP, pooling, recurrent and other token mixers
    "mixer_s16_224", "resmlp_12_224", "gmlp_ti16_224", "poolformer_s12", "poolformerv2_s12",
    "sequencer2d_s", "mambaout_femto", "inception_next_tiny", "rdnet_tiny",
    # CNNs
    "resnet18", "resnet50", "resnet50d", "resnetv2_50", "seresnet18", "resnext26ts", "skresnet18",
    "res2net50_26w_4s", "densenet121", "dla34", "dpn68", "cspresnet50", "cspdarknet53", "darknet53",
    "vovnet39a", "ese_vovnet19b_dw", "selecsls42b", "tresnet_m", "hrnet_w18_small", "regnety_002",
    "regnetx_002", "regnetz_b16", "regnetv_040", "convnext_atto", "convnext_tiny", "convnextv2_atto",
    "efficientnet_b0", "efficientnetv2_rw_t", "tf_efficientnet_lite0", "mobilenetv2_100",
    "mobilenetv3_small_100", "mobilenetv3_large_100", "mobilenetv4_conv_small", "mnasnet_100",
    "fbnetc_100", "lcnet_050", "hardcorenas_a", "ghostnet_100", "ghostnetv2_100", "rexnet_100",
    "repvit_m1", "mobileone_s0", "hgnet_tiny", "hgnetv2_b0", "starnet_s1", "fasternet_t0",
    "inception_v3", "inception_v4", "xception41", "nasnetalarge", "nfnet_l0", "nf_resnet26",
    "halonet26t", "botnet26t_256", "lambda_resnet26t", "cspnext_tiny", "lcnetv2_small", "repghostnet_050",
    "resnest14d", "legacy_seresnet18", "cpubone_b0_bfrobust", "legacy_xception",
    # families a new-user probe found outside the sweep (12-08)
    "caformer_s18", "convformer_s18", "flexivit_small", "gmixer_12_224", "maxxvit_rmlp_nano_rw_256",
    "hieradet_small", "coatnext_nano_rw_224", "qwen3_vit_88m", "csatv2", "repvgg_a0", "mixnet_s", "tinynet_e",
    "rexnetr_100", "resnetrs50", "sebotnet33ts_256", "haloregnetz_b", "lamhalobotnet50ts_256", "bat_resnext26ts",
    "vgg11_bn", "gernet_s", "fbnetv3_b", "gcresnet33ts", "densenetblur121d",
)

QUICK = {(CLS, "resnet18"), (CLS, "mobilenet_v3_small"), (SEG, "lraspp_mobilenet_v3_large"),
         (TIMM, "vit_tiny_patch16_224")}  # one per kind of model; bench-quick runs in CI


class Case(NamedTuple):
    family: str
    name: str


def all_cases() -> list[Case]:
    """Every model of the sweep, torchvision families first."""
    import torchvision.models as tvm
    cases = [Case(CLS, n) for n in tvm.list_models(module=tvm)]
    cases += [Case(SEG, n) for n in tvm.list_models(module=tvm.segmentation)]
    cases += [Case(DET, n) for n in tvm.list_models(module=tvm.detection)]
    cases += [Case(VIDEO, n) for n in tvm.list_models(module=tvm.video)]
    return cases + [Case(TIMM, n) for n in TIMM_MODELS]


# ----------------------------------------------------------------------------------------------
# child process: one model

def model_and_inputs(case: Case) -> tuple[Any, tuple]:
    """The model with random weights in eval mode and its positional example inputs."""
    import torch
    if case.family == TIMM:
        import timm
        model = timm.create_model(case.name, pretrained=False)
        shape = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
        return model.eval(), (torch.randn(BATCH, *shape),)
    import torchvision.models as tvm
    if case.family == CLS:
        model = tvm.get_model(case.name, weights=None)
        size = 299 if case.name == "inception_v3" else 224  # its training-mode aux head needs 299
        return model.eval(), (torch.randn(BATCH, 3, size, size),)
    model = tvm.get_model(case.name, weights=None, **({} if case.family == VIDEO else {"weights_backbone": None}))
    if case.family == SEG:
        return model.eval(), (torch.randn(BATCH, 3, 128, 128),)
    if case.family == DET:
        return model.eval(), ([torch.rand(3, 128, 128) for _ in range(BATCH)],)
    frames, size = (16, 224) if case.name.startswith(("mvit", "s3d")) else (8, 112)
    return model.eval(), (torch.randn(BATCH, 3, frames, size, size),)


def compare(expected: Any, got: Any) -> tuple[str | None, float | None]:
    """(why the outputs differ or None, max abs difference) over the tensor leaves of two outputs."""
    return common.compare_outputs(expected, got, ATOL, RTOL)


def describe(exc: BaseException, stage: str) -> str:
    """``stage: Type: first line of the message`` (truncated)."""
    lines = str(exc).strip().splitlines()
    text = f"{stage}: {type(exc).__name__}" + (f": {lines[0]}" if lines else "")
    return text[:400]


def measure(case: Case) -> dict:
    """Capture, rebuild and compare one model; returns the fields of its result row."""
    import torch

    import osf
    torch.manual_seed(SEED)
    torch.set_num_threads(THREADS)
    row: dict[str, Any] = {"captured": False, "exact": False}
    model, args = model_and_inputs(case)
    row["params"] = sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        expected = model(*args)
    started = time.perf_counter()
    try:
        ir = osf.trace(model, args)
    except Exception as e:  # noqa: BLE001 - recorded as the model's result
        row.update(capture_seconds=round(time.perf_counter() - started, 3), error=describe(e, "capture"),
                   traceback=traceback.format_exc()[-2000:])
        return row
    row.update(captured=True, capture_seconds=ir.info.get("capture_seconds", round(time.perf_counter() - started, 3)),
               capture_method=ir.info.get("capture"), modules=len(ir.modules), ops=len(ir.graph.ops))
    try:
        rebuilt = ir.build().eval()
        with torch.no_grad():
            got = rebuilt(*args)
    except Exception as e:  # noqa: BLE001
        row.update(error=describe(e, "rebuild"), traceback=traceback.format_exc()[-2000:])
        return row
    why, row["max_abs_diff"] = compare(expected, got)
    row["exact"] = why is None
    if why:
        row["error"] = f"mismatch: {why}"
    try:
        row.update(measure_space(ir, model, args, expected))
    except Exception as e:  # noqa: BLE001
        row.update(space_error=describe(e, "space"), space_traceback=traceback.format_exc()[-2000:])
    return row


def _median_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def measure_space(ir, model, args: tuple, expected: Any) -> dict:
    """Search space of the captured model: groups, units, size, motifs; ``min()`` extracted, run and
    timed against the original; extraction time of a sampled arch against copying its kept weights."""
    import math

    import torch

    import osf
    from torch.utils._pytree import tree_leaves
    started = time.perf_counter()
    supernet = osf.Supernet(None, ir=ir)
    space = supernet.space
    out: dict[str, Any] = {"space_seconds": round(time.perf_counter() - started, 3), "groups": len(space.groups),
                           "heads_groups": sum(g.kind == "heads" for g in space.groups), "units": len(space.units),
                           "log10_size": round(space.log10_size(), 2),
                           "log10_motifs": round(math.log10(space.num_motifs()), 2),
                           "unsupported_ops": sorted({u.target for u in space.analysis.unsupported})}
    smallest = space.min()
    cost = supernet.cost(smallest)
    out.update(min_params=cost["params"], min_flops=cost["flops"], max_flops=supernet.cost(space.max())["flops"])
    small = supernet.extract(smallest).eval()
    with torch.no_grad():
        got = small(*args)
        shapes = [tuple(x.shape) for x in tree_leaves(got) if isinstance(x, torch.Tensor)]
        want = [tuple(x.shape) for x in tree_leaves(expected) if isinstance(x, torch.Tensor)]
        out["min_extracted"] = shapes == want and sum(p.numel() for p in small.parameters()) == cost["params"]
        supernet.eval()
        with supernet.set_arch(smallest):  # the same subnet on the shared weights (the program template)
            via = supernet(*args)
        out["template"] = supernet.template_status == "template"
        out["set_arch_matches"] = common.compare_outputs(got, via)[0] is None
        original = _median_seconds(lambda: model(*args))
        reduced = _median_seconds(lambda: small(*args))
    out.update(latency_original_ms=round(original * 1e3, 2), latency_min_ms=round(reduced * 1e3, 2),
               min_speedup=round(original / reduced, 2))
    out.update(common.extraction_vs_copy(supernet, space.sample(SEED)))
    return out


def child(case: Case, conn: Connection) -> None:
    """Entry point of the spawned process: send back the result row (or why the model did not run)."""
    warnings.simplefilter("ignore")
    try:
        row = measure(case)
    except BaseException as e:  # noqa: BLE001 - the model itself (or its inputs) failed outside osf
        row = {"captured": False, "exact": False, "error": describe(e, "model"),
               "traceback": traceback.format_exc()[-2000:]}
    conn.send(row)
    conn.close()


# ----------------------------------------------------------------------------------------------
# parent: sweep, JSON, docs

def run_isolated(case: Case, timeout: float) -> dict:
    """Run ``case`` in a spawned child; a timeout or a crash becomes the row's error."""
    row, failure, seconds = common.run_in_child(mp.get_context("spawn"), child, (case,), timeout)
    if row is None:
        row = {"captured": False, "exact": False, "error": failure}
    return {"family": case.family, "name": case.name, **row, "seconds": seconds}


def environment(command: str, timeout: float) -> dict:
    """Machine, versions and settings of this sweep."""
    return common.environment(command=command, seed=SEED, threads=THREADS, batch=BATCH, atol=ATOL, rtol=RTOL,
                              timeout_s=timeout)


def totals(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Per family: models run, captured, rebuilt exactly."""
    out = {}
    for fam in FAMILIES:
        mine = [r for r in rows if r["family"] == fam]
        if mine:
            out[fam] = {"models": len(mine), "captured": sum(r["captured"] for r in mine),
                        "exact": sum(r["exact"] for r in mine)}
    return out


def timed_models(rows: list[dict]) -> dict[str, float | None]:
    """Capture seconds of the explicitly reported torchvision models that this run covered."""
    by_name = {r["name"]: r for r in rows if r["family"] == CLS}
    return {n: by_name[n].get("capture_seconds") if by_name[n]["captured"] else None
            for n in TIMED_MODELS if n in by_name}


def run_entry(env: dict, names: list[str], note: str | None) -> dict:
    """One line of the run log: when, where and why which models were measured."""
    return {"date": env["date"], "platform": env["platform"], "command": env["command"], "models": names,
            **({"note": note} if note else {})}


def _run_line(run: dict) -> str:
    names = run["models"]
    which = f"{len(names)} models" + (f" ({', '.join(names)})" if len(names) <= 30 else "")
    return (f"- {run['date']}, {run['platform']}: `{run['command']}`: {which}"
            + (f". {run['note']}" if run.get("note") else ""))


def in_sweep_order(rows: list[dict], sweep: list[Case]) -> list[dict]:
    """``rows`` in the order of ``sweep`` (``all_cases()``; rows of models no longer in it last)."""
    order = {(c.family, c.name): i for i, c in enumerate(sweep)}
    return sorted(rows, key=lambda r: order.get((r["family"], r["name"]), len(order)))


def markdown(env: dict, rows: list[dict], planned: int, runs: list[dict]) -> str:
    """The zoo section of docs/benchmarks.md (markers included)."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = [START, "## Model zoo: capture, rebuild, search space", "",
             f"Generated by `{env['command']}` on {env['date']}"
             + (f" (partial: {len(rows)} of {planned} models so far)." if len(rows) < planned else ".")
             + " The rows come from these runs (the latest last; a model re-measured keeps only its last row):",
             "", *map(_run_line, runs), "",
             f"- Machine of the latest run: {env['platform']} ({env['machine']}), {env['cpus']} CPUs, "
             f"{env['threads']} torch threads",
             f"- Versions: python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, "
             f"timm {env['timm']}, osf {env['osf']}",
             f"- Seed {env['seed']}; random weights; batch {env['batch']} (detection: {env['batch']} images "
             "of 3x128x128; segmentation 128x128; timm: the model's default input size); one spawned process per "
             f"model, timeout {env['timeout_s']:.0f} s",
             f"- *Exact*: the eval-mode outputs of `ir.build()` match the original's "
             f"(`torch.allclose(atol={env['atol']}, rtol={env['rtol']})` on every tensor leaf)", ""]
    timed = timed_models(rows)
    if timed:
        measured_in = {n: next((r["date"] for r in reversed(runs) if n in r["models"]), None) for n in timed}
        lines += [f"Capture time (target: at most {CAPTURE_TARGET_S:g} s; each from the run that measured the model, "
                  "so machines may differ): " + ", ".join(
                      f"{n} {'not captured' if s is None else f'{s:.2f} s'}"
                      + (f" ({measured_in[n]} run)" if measured_in[n] else "") for n, s in timed.items()) + ".", ""]
    lines += ["| family | models | captured | rebuilt exactly |", "|---|---:|---:|---:|"]
    lines += [f"| {fam} | {t['models']} | {t['captured']} | {t['exact']} |" for fam, t in totals(rows).items()]
    spaced = [r for r in rows if "groups" in r]
    clocked = [r for r in spaced if "again_vs_clone" in r]
    if spaced:
        lines += ["", "### Search space and extraction", "",
                  "Per captured model: prunable width groups (of which attention-head / conv-group groups), removable "
                  "units, log10 of the number of subnets and of motifs, params and FLOPs of `space.min()` (from the "
                  "IR), whether `extract(min())` ran with the right output shapes and exactly the predicted params, "
                  "the CPU latency of the original and of `extract(min())` (median of 5, same run), and the time to "
                  "extract a sampled arch divided by the time of a plain `state_dict` copy of its kept weights: the "
                  "first time (since 2026-12-05 the supernet's extraction template, generated at `extract(min())` "
                  "just before, bound to the arch; in earlier runs the arch's IR rewritten and its forward generated "
                  "and compiled) and again (cached per arch; median of 5); the last "
                  "column divides the repeated extraction by the bare clone of the tensors from a ready list "
                  "(no `state_dict()` walk). One arch per model, timed where the model runs: a ratio below 1× on a "
                  "large model is the allocator (a copy of hundreds of MB faults its pages in afresh; this VM "
                  "reclaims freed memory), not extraction beating a copy; `bench/extraction.py` times blocks of "
                  "calls on 16 models for the cleaner figure. *set_arch*: `space.min()` run on the shared weights "
                  "(`supernet.set_arch`) gives the extracted model's outputs (`t`: through the program template, "
                  "`p`: compiled per arch).", "",
                  f"Repeated extraction within 2× of the `state_dict` copy: {sum(r['again_vs_copy'] <= 2 for r in clocked)} "
                  f"of {len(clocked)} models (median {statistics.median(r['again_vs_copy'] for r in clocked):.2f}×); within "
                  f"2× of the bare clone: {sum(r['again_vs_clone'] <= 2 for r in clocked)} (median "
                  f"{statistics.median(r['again_vs_clone'] for r in clocked):.2f}×)." if clocked else "",
                  _set_arch_summary(spaced), "",
                  "| model | groups (heads) | units | log10 size | log10 motifs | min params | min / max FLOPs "
                  "| extracted | original ms | min ms | speed-up | extract s | extract ÷ copy: first | again "
                  "| again ÷ clone | set_arch |",
                  "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in spaced:
            ratio = r["min_flops"] / r["max_flops"] if r.get("max_flops") else 0
            lines.append("| " + " | ".join(cell(v) for v in (
                r["name"], f"{r['groups']} ({r['heads_groups']})", r["units"], r["log10_size"], r["log10_motifs"],
                f"{r['min_params']:,}", f"{ratio:.3f}", "yes" if r.get("min_extracted") else "no",
                r["latency_original_ms"], r["latency_min_ms"], f"{r['min_speedup']}×",
                r.get("extract_first_s", r.get("extract_seconds")),
                f"{r.get('first_vs_copy', r.get('extract_vs_copy'))}×",
                f"{r['again_vs_copy']}×" if "again_vs_copy" in r else "",
                f"{r['again_vs_clone']}×" if "again_vs_clone" in r else "",
                "" if "set_arch_matches" not in r else
                ("yes" if r["set_arch_matches"] else "NO") + (" (t)" if r["template"] else " (p)"))) + " |")
        failed = [r for r in rows if r.get("space_error")]
        if failed:
            lines += ["", "Search space failures:", ""] + [f"- {r['name']}: {cell(r['space_error'])[:200]}"
                                                          for r in failed]
    lines += ["", "| model | family | captured | exact | capture s | params | modules | ops | error |",
              "|---|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        secs = r.get("capture_seconds")
        lines.append("| " + " | ".join(cell(v) for v in (
            r["name"], r["family"], "yes" if r["captured"] else "no", "yes" if r["exact"] else "no",
            "" if secs is None else f"{secs:.2f}", f"{r['params']:,}" if r.get("params") is not None else "",
            r.get("modules", ""), r.get("ops", ""), (r.get("error") or "")[:160])) + " |")
    return "\n".join(lines + [END])


def _set_arch_summary(rows: list[dict]) -> str:
    checked = [r for r in rows if "set_arch_matches" in r]
    if not checked:
        return ""
    return (f"`set_arch(min())` equals the extracted model on {sum(r['set_arch_matches'] for r in checked)} of "
            f"{len(checked)} models checked ({sum(r['template'] for r in checked)} through the program template).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only a few small models (under 3 minutes)")
    parser.add_argument("--only", metavar="REGEX", help="only models whose name matches REGEX (re.search)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="where to write the results (default: bench/results/zoo.json; zoo-subset.json for subset runs, which leave docs/benchmarks.md alone)")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S", help="per-model limit (default 300)")
    parser.add_argument("--family", action="append", choices=FAMILIES, help="only these families (repeatable)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the rows already in --json and run only the models not measured yet")
    parser.add_argument("--redo", metavar="REGEX",
                        help="keep the rows already in --json but re-measure the models whose name matches REGEX "
                             "(re.search; with --resume also the models not measured yet)")
    parser.add_argument("--note", metavar="TEXT", help="why this run was made: kept in the run log")
    opts = parser.parse_args(argv)
    # a subset run (--quick; --only/--family without --resume/--redo) must not replace the full results
    keep = opts.resume or opts.redo is not None
    subset = opts.quick or ((opts.only or opts.family) and not keep)
    if opts.json is None:
        opts.json = ROOT / "bench" / "results" / ("zoo-subset.json" if subset else "zoo.json")
    sweep = cases = all_cases()
    if opts.quick:
        cases = [c for c in cases if c in QUICK]
    if opts.only:
        cases = [c for c in cases if re.search(opts.only, c.name)]
    if opts.family:
        cases = [c for c in cases if c.family in opts.family]
    command = shlex.join(["python", "bench/zoo.py", *(sys.argv[1:] if argv is None else argv)])
    env = environment(command, opts.timeout)
    rows: list[dict] = []
    runs: list[dict] = []
    if keep and opts.json.exists():
        saved = json.loads(opts.json.read_text())
        rows, runs = saved["results"], saved.get("runs", [])
        done = {Case(r["family"], r["name"]) for r in rows}
        redo = {c for c in cases if opts.redo is not None and re.search(opts.redo, c.name)}
        cases = [c for c in cases if c in redo or (opts.resume and c not in done)]
        rows = [r for r in rows if Case(r["family"], r["name"]) not in redo]  # only the rows measured again
    elif keep:
        raise SystemExit(f"--resume/--redo: {opts.json} does not exist yet; run the sweep without them first")
    if not cases:
        print("nothing to measure: every selected model has a row already (--redo REGEX re-measures some)")
        return 0
    planned = len(rows) + len(cases)
    runs.append(run_entry(env, [c.name for c in cases], opts.note))
    for i, case in enumerate(cases, 1):
        row = run_isolated(case, opts.timeout)
        rows = in_sweep_order(rows + [row], sweep)
        status = "exact" if row["exact"] else "captured" if row["captured"] else "FAILED"
        print(f"[{i}/{len(cases)}] {case.family:27} {case.name:34} {status:8} {row['seconds']:6.1f}s "
              f"{row.get('error') or ''}"[:300], flush=True)
        common.write_atomic(opts.json, json.dumps({"environment": env, "runs": runs, "totals": totals(rows),
                                                   "capture_seconds": timed_models(rows), "results": rows},
                                                  indent=1))
        if not subset or opts.quick:
            common.update_section(DOCS if not subset else common.QUICK_DOCS, "zoo",
                                  markdown(env, rows, planned, runs))
    for fam, t in totals(rows).items():
        print(f"{fam}: captured {t['captured']}/{t['models']}, rebuilt exactly {t['exact']}/{t['models']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
