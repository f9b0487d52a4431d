"""Coverage: osf against NVIDIA ModelOpt (AutoNAS) and Torch-Pruning on the same models, side by side.

For every torchvision classification, segmentation and detection model, the timm models of the zoo
sweep (``bench/zoo.py``), small-config Hugging Face models (BERT, DistilBERT, RoBERTa, ViT, GPT-2, T5
encoder, Llama) and the SAM ViT-B image encoder, each tool's adapter (``bench/peers.py``) converts the
model and checks its maximal and minimal subnets; it also reports the search space it found (elastic
dims by kind, log10 of the number of subnets) and its overheads (convert time; osf and ModelOpt: a
train step of the converted model at a random arch over the same step of that arch exported).

Every (model, tool) pair runs alone in a child process (forked from a server that has imported torch
and the tools once) with a timeout, so a crash or a hang costs only that pair. Results go to
``bench/results/coverage.json`` and the ``coverage`` section of ``docs/benchmarks.md``, both rewritten
atomically after every model; subset runs (``--quick``, ``--only``, ``--family``) write
``coverage-quick.json`` (and docs/benchmarks-quick.md) / ``coverage-subset.json``, never over the full results.

    python bench/coverage.py                 # everything (3+ hours on 2 shared cores)
    python bench/coverage.py --quick         # one small model per family (about a minute; 2 at a time)
    python bench/coverage.py --resume        # finish an interrupted sweep (keeps the models measured)
    python bench/coverage.py --only '^vit_tiny' --tool osf
    python bench/coverage.py --render        # rewrite the docs section from coverage.json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import shlex
import sys
import time
import traceback
import warnings
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import common
import peers
import zoo
from common import DOCS, ROOT

SEED = 0
THREADS = 1  # on a CPU shared with other work, 2 OpenMP threads stall at barriers (steps 100x slower, seen here)
CLS, SEG, DET, TIMM = zoo.CLS, zoo.SEG, zoo.DET, zoo.TIMM
HF, SAM = "huggingface", "segment-anything"
FAMILIES = (CLS, SEG, DET, TIMM, HF, SAM)
TOOLS = ("osf", "modelopt", "torch-pruning")
TOOL_TITLES = {"osf": "osf", "modelopt": "ModelOpt", "torch-pruning": "Torch-Pruning"}
HF_MODELS = ("bert", "distilbert", "roberta", "vit", "gpt2", "t5-encoder", "llama")
SAM_SIZE = 256  # input side of the SAM ViT-B encoder (1024 in SAM; its position embedding is built for this)
STEP_BUDGET_S = 2.0  # train steps are timed only when one eval forward of the original takes less
PRELOAD = ["torch", "torch.export", "torchvision", "timm", "transformers", "segment_anything", "torch_pruning",
           "modelopt.torch.nas", "osf", "osf.cli.models", "peers", "zoo"]

QUICK = (zoo.Case(CLS, "resnet18"), zoo.Case(SEG, "lraspp_mobilenet_v3_large"),  # no detection model: their
         zoo.Case(TIMM, "mobilenetv3_small_100"),  # 7 s forwards made bench-quick (run in CI) exceed 3 minutes
         zoo.Case(HF, "bert"), zoo.Case(SAM, "sam_tiny"))


def all_cases() -> list[zoo.Case]:
    """The zoo's torchvision (classification, segmentation, detection) and timm cases, then HF and SAM."""
    cases = [c for c in zoo.all_cases() if c.family in (CLS, SEG, DET, TIMM)]
    return cases + [zoo.Case(HF, n) for n in HF_MODELS] + [zoo.Case(SAM, "sam_vit_b")]


# ----------------------------------------------------------------------------------------------
# child process: one model, one tool

def model_and_inputs(case: zoo.Case) -> tuple[Any, tuple, dict]:
    """The model (random weights, eval mode) and its example args and kwargs."""
    import torch
    if case.family in (CLS, SEG, DET, TIMM):
        model, args = zoo.model_and_inputs(case)
        return model, args, {}
    if case.family == SAM:
        from segment_anything.modeling import ImageEncoderViT

        from osf.cli.models import resolve
        if case.name == "sam_tiny":  # osf's small SAM-architecture encoder (2 blocks, width 64)
            spec = resolve("sam:tiny")
            return spec.model, spec.args, spec.kwargs
        # sam_model_registry["vit_b"]'s image encoder hyper-parameters, built for a SAM_SIZE input
        from functools import partial
        enc = ImageEncoderViT(depth=12, embed_dim=768, img_size=SAM_SIZE, mlp_ratio=4, num_heads=12, patch_size=16,
                              norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
                              global_attn_indexes=(2, 5, 8, 11), window_size=14, out_chans=256)
        return enc.eval(), (torch.randn(1, 3, SAM_SIZE, SAM_SIZE),), {}
    import transformers
    if case.name in ("t5-encoder", "llama"):
        if case.name == "t5-encoder":
            cfg = transformers.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, vocab_size=1000)
            model = transformers.T5EncoderModel(cfg)
        else:
            cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                                           max_position_embeddings=128)
            model = transformers.LlamaModel(cfg)
        ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(SEED))
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if case.name == "llama":
            kwargs["use_cache"] = False
        return model.eval(), (), kwargs
    from osf.cli.models import resolve  # osf's small built-in configs (GPT-2 with use_cache=False)
    spec = resolve(f"hf:{case.name}")
    return spec.model, spec.args, spec.kwargs


def child(case: zoo.Case, tool: str, settings: dict, conn: Connection) -> None:
    """Entry point of the child process: send back the tool's row (or why the model did not build)."""
    warnings.simplefilter("ignore")
    import os
    import random
    import resource
    if settings.get("memory_gb"):  # a peer once took 21 GB (Torch-Pruning on Swin): fail alone, not the machine
        cap = int(settings["memory_gb"] * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    quiet = os.open(os.devnull, os.O_WRONLY)  # torch.export prints whole graphs on some failures
    os.dup2(quiet, 1)
    os.dup2(quiet, 2)

    import torch
    torch.set_num_threads(settings["threads"])
    torch.manual_seed(SEED)
    random.seed(SEED)
    try:
        model, args, kwargs = model_and_inputs(case)
        params = peers.n_params(model)
        peers.run(model, args, kwargs)  # warm-up: the first forward of a process is much slower
        started = time.perf_counter()
        peers.run(model, args, kwargs)
        forward_s = time.perf_counter() - started
        timed = settings["time_steps"] and forward_s < settings["step_budget_s"]
        row = peers.ADAPTERS[tool](model, args, kwargs, ragged=case.family == DET, train=case.family != DET,
                                   time_steps=timed, repeats=settings["repeats"])
        row.update(params=params, forward_ms=round(forward_s * 1e3, 1))
        if settings["time_steps"] and not timed and tool != "torch-pruning":
            row["step_error"] = f"not timed: one forward took {forward_s:.1f} s (budget {settings['step_budget_s']} s)"
    except BaseException as e:  # noqa: BLE001 - the model itself (or its inputs) failed outside the tool
        row = {"tool": tool, "converted": peers.describe(e, "model"), "traceback": traceback.format_exc()[-1500:]}
    conn.send(row)
    conn.close()


# ----------------------------------------------------------------------------------------------
# parent: sweep, JSON, docs

_CTX: Any = None


def context() -> Any:
    """A forkserver context whose server has imported torch and the tools once (children fork from it)."""
    global _CTX
    if _CTX is None:
        _CTX = mp.get_context("forkserver")
        _CTX.set_forkserver_preload(PRELOAD)
    return _CTX


def run_isolated(case: zoo.Case, tool: str, timeout: float, settings: dict) -> dict:
    """Run one tool on one model in a child; a timeout or a crash becomes the row's ``converted`` text."""
    row, failure, seconds = common.run_in_child(context(), child, (case, tool, settings), timeout)
    if row is None:
        row = {"tool": tool, "converted": failure}
    row["seconds"] = seconds
    return row


def ok(value: Any) -> bool:
    return value is True


def totals(rows: list[dict]) -> dict[str, dict[str, dict[str, int]]]:
    """Per family (and "all"), per tool: models, converted, max equal, min runs."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for fam in (*FAMILIES, "all"):
        mine = [r for r in rows if fam in ("all", r["family"])]
        if not mine:
            continue
        out[fam] = {}
        for tool in TOOLS:
            cells = [r["tools"][tool] for r in mine if tool in r["tools"]]
            out[fam][tool] = {"models": len(cells), "converted": sum(ok(c.get("converted")) for c in cells),
                              "max_equal": sum(ok(c.get("max_equal")) for c in cells),
                              "min_runs": sum(ok(c.get("min_runs")) for c in cells)}
    return out


def kinds_found(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Per tool: models where it found at least one elastic dim of each kind."""
    return {tool: {k: sum(r["tools"][tool].get("dims", {}).get(k, 0) > 0 for r in rows if tool in r["tools"])
                   for k in peers.KINDS} for tool in TOOLS}


def osf_behind(row: dict) -> list[str]:
    """Where osf does worse than a peer on this model (empty: nowhere)."""
    tools = row["tools"]
    mine = tools.get("osf")
    if mine is None:
        return []
    out = []
    for peer in ("modelopt", "torch-pruning"):
        theirs = tools.get(peer)
        if theirs is None:
            continue
        short = "MO" if peer == "modelopt" else "TP"
        lost = [stage for stage in ("converted", "max_equal", "min_runs")
                if ok(theirs.get(stage)) and not ok(mine.get(stage))]
        if ok(mine.get("converted")) and ok(theirs.get("converted")):
            mine_d, theirs_d = mine.get("dims", {}), theirs.get("dims", {})
            width = ("channels", "heads", "embedding")
            if sum(theirs_d.get(k, 0) for k in width) > sum(mine_d.get(k, 0) for k in width):
                lost.append("width dims")
            if theirs_d.get("depth", 0) > mine_d.get("depth", 0):
                lost.append("depth dims")
            if (theirs.get("log10_subnets") or 0) > (mine.get("log10_subnets") or 0):
                lost.append("log10")
        out += [f"{s.replace('_', ' ')} ({short})" for s in lost]
    return out


def _mark(value: Any) -> str:
    return "✓" if value is True else "–" if value is None else "✗"


def _cell(tool: str, r: dict | None) -> str:
    if r is None:
        return ""
    if not ok(r.get("converted")):
        return "✗ " + _short(r.get("converted"))
    dims = r.get("dims", {})
    text = (f"{_mark(True)}{_mark(r.get('max_equal'))}{_mark(r.get('min_runs'))} "
            f"{'/'.join(str(dims.get(k, 0)) for k in peers.KINDS)} · {r.get('log10_subnets')}")
    attn = r.get("hand_supplied", {}).get("attention_modules")
    return text + (f" ({attn} attn)" if attn else "")


def _failure_brief(text: Any) -> str:
    """'<error class> in module <m> at <file:line>' out of an osf conversion failure (TraceError text)."""
    text = str(text)
    kind = re.search(r"\((\w+): ", text)
    module = re.search(r"in module '([^']*)'", text)
    where = re.search(r"at: \S*?/((?:torchvision|timm|transformers|segment_anything)/[^:]+:\d+)", text)
    if not (kind or module or where):
        return _short(text, 110)
    return " ".join(x for x in ((kind.group(1) if kind else ""), (f"in module '{module.group(1)}'" if module else ""),
                                (f"at {where.group(1)}" if where else "")) if x)


def _short(text: Any, n: int = 60) -> str:
    s = str(text or "").replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= n else s[:n - 1] + "…"


def _num(x: Any, fmt: str = "{:.2f}") -> str:
    return "" if x is None else fmt.format(x)


def _median(xs: list[float]) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    return xs[len(xs) // 2] if xs else None


def markdown(env: dict, rows: list[dict], planned: int) -> str:
    """The coverage section of docs/benchmarks.md (markers included)."""
    t = totals(rows)
    lines = ["<!-- coverage:start -->",
             "## Coverage: osf, NVIDIA ModelOpt (AutoNAS) and Torch-Pruning on the same models",
             "", f"Generated by `{env['command']}` on {env['date']}"
             + (f" (partial: {len(rows)} of {planned} models so far)." if len(rows) < planned else "."), "",
             f"- Machine: {env['platform']} ({env['machine']}), {env['cpus']} CPUs, {env['threads']} torch threads "
             "(shared with other work: timings are noisy, ratios are taken between adjacent steps)",
             f"- Versions: python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, "
             f"timm {env['timm']}, transformers {env['transformers']}, torch-pruning {env['torch-pruning']}, "
             f"nvidia-modelopt {env['nvidia-modelopt']}, osf {env['osf']}",
             f"- Seed {env['seed']}; random weights; inputs as in the zoo sweep (batch 2; segmentation 128×128; detection "
             f"2 images of 3×128×128; timm: the model's default size); Hugging Face: small configs (width 64, 2 layers, "
             f"4 heads; Llama with 2 key-value heads), batch 2 × 16 tokens; SAM: the ViT-B image encoder "
             f"(`sam_model_registry['vit_b']` hyper-parameters) built for a {env['sam_size']}×{env['sam_size']} input "
             "instead of 1024×1024, batch 1",
             f"- One child process per model and tool, timeout {env['timeout_s']:.0f} s, heap limit "
             f"{env.get('memory_gb', 0):g} GB (`RLIMIT_DATA`)",
             "", "Models per family and tool: converted / maximal subnet equal to the original (eval mode, every output "
             "tensor, `allclose` with rtol 1e-4 and atol 1e-5 × the output's largest magnitude; osf's maximal subnet sorts "
             "channels by salience, so its sums round differently: where float32 differs it is re-checked in float64 "
             "and the row's notes say so) / minimal subnet "
             "runs with the right output shapes (Torch-Pruning: its 50% pruned model; it has no maximal subnet).", "",
             "| family | models | osf | ModelOpt | Torch-Pruning |", "|---|---:|---|---|---|"]
    for fam, per in t.items():
        n = max(v["models"] for v in per.values())

        def cell(tool: str) -> str:
            v = per.get(tool)
            if not v:
                return ""
            mx = "–" if tool == "torch-pruning" else str(v["max_equal"])
            return f"{v['converted']} / {mx} / {v['min_runs']}"
        lines.append(f"| {'**all**' if fam == 'all' else fam} | {n} | {cell('osf')} | {cell('modelopt')} | "
                     f"{cell('torch-pruning')} |")
    found = kinds_found(rows)
    lines += ["", "Models where the tool found at least one elastic dim of each kind:", "",
              "| tool | channels | heads | embedding width | depth |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {TOOL_TITLES[tool]} | " + " | ".join(str(found[tool][k]) for k in peers.KINDS) + " |"
              for tool in TOOLS]
    behind = [r for r in rows if osf_behind(r)]
    lines += ["", f"osf does worse than a peer on {len(behind)} of {len(rows)} models (last column below)."]
    failed = [r for r in rows if not ok(r["tools"].get("osf", {}).get("converted"))]
    if failed:
        lines += ["", f"osf could not convert {len(failed)} models: " + "; ".join(
            f"{r['name']} ({_failure_brief(r['tools']['osf'].get('converted'))})" for r in failed) + "."]
    lines += ["",
              "Per model, each tool: converted, max equal, min runs (✓ / ✗ / – not applicable), then elastic dims "
              "channels/heads/embedding/depth, then log10 subnets. Torch-Pruning: *(n attn)* = attention modules "
              "whose `num_heads` and post-pruning head attributes the user must hand-supply.", "",
              "| model | family | osf | ModelOpt | Torch-Pruning | osf behind on |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['family']} | " + " | ".join(_cell(tool, r["tools"].get(tool)) for tool in TOOLS)
                     + f" | {', '.join(osf_behind(r))} |")
    lines += ["", "**Space-size convention.** " + peers.COMMON, "",
              "**Kinds.** *heads*: whole attention heads (osf groups of kind `heads` that factor a linear layer's output; "
              "a grouped-conv factor such as ResNeXt's cardinality, or conv channels flattened into a classifier, count "
              "as channels; ModelOpt: hparams named `*head*`; Torch-Pruning's default recipe shrinks head_dim, not "
              "heads, so its attention groups count as channels). *embedding*: a width dim written by the same layer "
              "of two or more repeated blocks — dense convs / linears / embeddings (not depthwise or grouped convs, not "
              "norms) whose names differ only in numeric components, e.g. `blocks.3.mlp.fc2` and `blocks.4.mlp.fc2` — "
              "i.e. tied across blocks by residual adds: the residual-stream width. *channels*: every other width dim (osf: prunable "
              "groups; ModelOpt: unique configurable `out_channels` / `out_features` / `num_features` hparams, "
              "`kernel_size` left out; Torch-Pruning: the groups of `pruner.DG.get_all_groups`). *depth*: osf removable "
              "units; ModelOpt `depth` hparams (first k layers of an `nn.Sequential`); Torch-Pruning none.", "",
              "**Recipes.** osf: `osf.Supernet(model, args, kwargs)` at default options, `extract(space.max())`, "
              "`extract(space.min())`. ModelOpt: `mtn.convert(model, mode='autonas')` (default AutoNAS rules), "
              "`mtn.sample(model, max)`, `mtn.sample(model, min)` + `mtn.export`. Torch-Pruning: `tp.pruner.MetaPruner(model, "
              "inputs, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5, ignored_layers=…, "
              "num_heads=…)` then `pruner.step()`; `ignored_layers` are the layers writing the outputs (found here by "
              "walking the autograd graph back from the outputs; a user lists them by hand), and for attention the "
              "user hand-supplies `num_heads` of the q/k/v projections and re-sets the module's head attributes after "
              "pruning (done here for modules with the usual names: `qkv`, `query/key/value`, `q_lin/k_lin/v_lin`, "
              "`q_proj/k_proj/v_proj`, `q/k/v`)."]
    lines += ["", "### Overheads", "",
              "Convert: osf `Supernet(...)` (trace + space + shared-weight model), ModelOpt `mtn.convert`, Torch-Pruning "
              "`MetaPruner(...)` (dependency graph). Train step (zero grads, forward, mean of the outputs, backward) of "
              "the converted model at a random arch (osf `space.sample(0)` via `set_arch`; ModelOpt `mtn.sample` with "
              "`random.Random(0).choice`, run under `mtn.no_modelopt_patches()` so the arch stays put) over the same "
              f"step of that arch exported standalone (osf `extract`, ModelOpt `mtn.export`): median over "
              f"{env['repeats']} alternating pairs after a warm-up; timed only when one forward of the original takes "
              f"under {env['step_budget_s']:g} s. Detection models step in eval mode (their training forward needs targets).",
              ""]
    med = {tool: _median([r["tools"][tool].get("step_ratio") for r in rows if tool in r["tools"]]) for tool in TOOLS}
    conv = {tool: _median([r["tools"][tool].get("convert_seconds") for r in rows
                           if tool in r["tools"] and ok(r["tools"][tool].get("converted"))]) for tool in TOOLS}
    lines += ["| | osf | ModelOpt | Torch-Pruning |", "|---|---:|---:|---:|",
              "| median convert s | " + " | ".join(_num(conv[t]) for t in TOOLS) + " |",
              "| median train-step ratio (converted ÷ exported) | " + " | ".join(
                  _num(med[t], "{:.2f}×") if t != "torch-pruning" else "–" for t in TOOLS) + " |", "",
              "| model | convert s osf | ModelOpt | TP | step ratio osf | ModelOpt |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        tt = r["tools"]
        lines.append(f"| {r['name']} | " + " | ".join(_num(tt.get(t, {}).get("convert_seconds")) for t in TOOLS) + " | "
                     + " | ".join(_num(tt.get(t, {}).get("step_ratio"), "{:.2f}×") for t in ("osf", "modelopt")) + " |")
    lines += ["", "### Failures", ""]
    for tool in TOOLS:
        fails = []
        for r in rows:
            c = r["tools"].get(tool)
            if c is None:
                continue
            why = (c.get("converted") if not ok(c.get("converted")) else c.get("max_error") if c.get("max_equal") is False
                   else c.get("min_error") if not ok(c.get("min_runs")) else None)
            if why:
                fails.append(f"- {r['name']}: {_short(why, 200)}")
        lines += [f"{TOOL_TITLES[tool]} ({len(fails)}):", ""] + (fails or ["- none"]) + [""]
    return "\n".join(lines + ["<!-- coverage:end -->"])


def environment(command: str, opts: argparse.Namespace, settings: dict) -> dict:
    return common.environment(command=command, seed=SEED, threads=settings["threads"], timeout_s=opts.timeout,
                              transformers=common.version("transformers"), **{
                                  "torch-pruning": common.version("torch-pruning"),
                                  "nvidia-modelopt": common.version("nvidia-modelopt")},
                              sam_size=SAM_SIZE, memory_gb=settings["memory_gb"], jobs=settings["jobs"], repeats=settings["repeats"],
                              step_budget_s=settings["step_budget_s"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small model per family (about a minute)")
    parser.add_argument("--only", metavar="REGEX", help="only models whose name matches REGEX (re.search)")
    parser.add_argument("--family", action="append", choices=FAMILIES, help="only these families (repeatable)")
    parser.add_argument("--tool", action="append", choices=TOOLS, help="only these tools (repeatable)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="results file (default bench/results/coverage.json; coverage-quick.json / "
                             "coverage-subset.json for subset runs; --quick renders docs/benchmarks-quick.md, never docs/benchmarks.md)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="per model and tool (default 300; --quick: 30)")
    parser.add_argument("--resume", action="store_true", help="keep the rows in --json, run only the missing models")
    parser.add_argument("--render", action="store_true", help="only rewrite the docs section from --json")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="(model, tool) pairs run at once (default 1; --quick: 2)")
    parser.add_argument("--memory-gb", type=float, default=12.0, metavar="GB",
                        help="heap limit of each child (RLIMIT_DATA; default 12, 0 for none)")
    parser.add_argument("--no-steps", action="store_true", help="skip the train-step timings")
    opts = parser.parse_args(argv)
    opts.timeout = opts.timeout or (30.0 if opts.quick else 300.0)
    subset = bool(opts.quick or opts.only or opts.family or opts.tool) and not opts.resume
    if opts.json is None:
        opts.json = ROOT / "bench" / "results" / (
            "coverage-quick.json" if opts.quick and subset else "coverage-subset.json" if subset else "coverage.json")
    if opts.render:
        data = json.loads(opts.json.read_text())
        common.update_section(DOCS, "coverage", markdown(data["environment"], data["results"], len(data["results"])))
        return 0
    settings = {"threads": THREADS, "memory_gb": opts.memory_gb, "jobs": opts.jobs or (2 if opts.quick else 1), "time_steps": not opts.no_steps,
                "repeats": 1 if opts.quick else 3, "step_budget_s": 0.5 if opts.quick else STEP_BUDGET_S}
    cases = list(QUICK) if opts.quick else all_cases()
    if opts.only:
        cases = [c for c in cases if re.search(opts.only, c.name)]
    if opts.family:
        cases = [c for c in cases if c.family in opts.family]
    tools = [t for t in TOOLS if not opts.tool or t in opts.tool]
    command = shlex.join(["python", "bench/coverage.py", *(sys.argv[1:] if argv is None else argv)])
    env = environment(command, opts, settings)
    rows: list[dict] = []
    if opts.resume and opts.json.exists():
        rows = json.loads(opts.json.read_text())["results"]
        done = {(r["family"], r["name"]) for r in rows}
        cases = [c for c in cases if (c.family, c.name) not in done]
    planned = len(rows) + len(cases)
    started = time.perf_counter()
    jobs = settings["jobs"]
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # threads only wait on their child's pipe
        pending = [{tool: pool.submit(run_isolated, case, tool, opts.timeout, settings) for tool in tools}
                   for case in cases] if jobs > 1 else None
        for i, case in enumerate(cases, 1):
            row: dict[str, Any] = {"family": case.family, "name": case.name, "tools": {}}
            for tool in tools:
                cell = (pending[i - 1][tool].result() if pending is not None
                        else run_isolated(case, tool, opts.timeout, settings))
                row["tools"][tool] = cell
                row.setdefault("params", cell.get("params"))
            rows.append(row)
            print(f"[{i}/{len(cases)}] {case.family:27} {case.name:32} " + "  ".join(
                f"{t}: {_cell(t, row['tools'][t])[:50]} ({row['tools'][t]['seconds']}s)" for t in tools), flush=True)
            common.write_atomic(opts.json, json.dumps({"environment": env, "totals": totals(rows),
                                                       "kinds_found": kinds_found(rows), "results": rows}, indent=1))
            if not subset or opts.quick:
                common.update_section(DOCS if not subset else common.QUICK_DOCS, "coverage", markdown(env, rows, planned))
    for fam, per in totals(rows).items():
        print(f"{fam}: " + "; ".join(f"{t} {v['converted']}/{v['max_equal']}/{v['min_runs']} of {v['models']}"
                                      for t, v in per.items()))
    print(f"{time.perf_counter() - started:.0f} s; results in {opts.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
