"""Modules put in and hooks on a rebuilt model, checked module by module against the eager original.

Per model (eval mode, random weights, seed 0), for every module of the original:

- *put in*: a copy of the rebuilt model gets a copy of the original's module at that path (``setattr``);
  its outputs must equal the original's (atol 1e-4, rtol 1e-3), since the forward now calls that module
  where the rebuilt one's ops ran. Counted: equal, different (a bug), refused (``ModuleReplacedError``,
  with its reasons);
- *hooked*: a forward hook on the module of a copy of the rebuilt model and on the original's; the values
  the two hooks see and the outputs must be equal. Counted: equal, different (a bug), warned (the module
  cannot be called on its own: the warning says the hook would never fire).

And all at once, as tools do (a model summary hooks every module, quantization swaps every layer):

- *all hooked*: a forward hook on every module at once; each hook that fires sees the original's values, and
  the outputs are equal; the handles removed, the model must call no module but itself again;
- *all leaves put in*: a copy of the original's module put in at the path of every module without
  submodules that can be replaced, at once; the outputs must equal the original's;
- *fx*: ``torch.fx.symbolic_trace`` of the rebuilt model gives its outputs, and torchvision's
  ``create_feature_extractor`` returns every module path among its node names.

    python bench/module_swaps.py            # 16 models (about 14 minutes)
    python bench/module_swaps.py --quick    # 2 models

Writes bench/results/module_swaps[-quick].json and the ``module-swaps`` section of docs/benchmarks.md
(--quick: docs/benchmarks-quick.md).
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import re
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import osf  # noqa: E402

SEED = 0
QUICK = ("resnet18", "hf:bert")
FULL = ("resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "convnext_tiny",
        "regnet_y_400mf", "vit_b_16", "swin_t", "googlenet", "timm:vit_tiny_patch16_224", "timm:convnext_atto",
        "hf:vit", "hf:bert", "hand:attention_maps", "resnet18_fpn")


class _Block(nn.Module):
    """A pre-norm transformer block written by hand, returning its attention map too: ``nn.MultiheadAttention``
    at its defaults returns ``(out, weights)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm1(x)
        out, weights = self.attn(h, h, h)
        x = x + out
        return x + self.mlp(self.norm2(x)), weights


class _AttentionMaps(nn.Module):
    """A small ViT written by hand that returns its logits and the last block's attention map (the earlier
    blocks' maps unread, as in ``x, _ = block(x)``)."""

    def __init__(self, dim: int = 32, depth: int = 3, heads: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 8, stride=8)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.head = nn.Linear(dim, 10)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch(image).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x, weights = block(x)
        return self.head(x.mean(1)), weights


def build(name: str) -> tuple[nn.Module, tuple, dict]:
    """The model (random weights) and its example inputs."""
    image = (torch.randn(2, 3, 64, 64),)
    if name.startswith("timm:"):
        import timm
        sized = {"img_size": 64} if "_patch" in name else {}  # transformers take the image size
        return timm.create_model(name[5:], **sized), image, {}
    if name == "hand:attention_maps":
        return _AttentionMaps(), (torch.randn(2, 3, 32, 32),), {}
    if name.startswith("hf:"):
        import transformers
        transformers.logging.set_verbosity_error()
        if name == "hf:vit":
            config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=128, image_size=32, patch_size=8)
            return transformers.ViTModel(config), (torch.randn(2, 3, 32, 32),), {}
        config = transformers.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=128, vocab_size=100, max_position_embeddings=64)
        ids = torch.randint(0, 100, (2, 12))
        return transformers.BertForSequenceClassification(config), (), {"input_ids": ids,
                                                                        "attention_mask": torch.ones_like(ids)}
    import torchvision.models as tvm
    if name == "resnet18_fpn":  # a detector's backbone: its FPN takes the backbone's features as an OrderedDict
        from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
        return resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5), image, {}
    if name == "vit_b_16":
        model = tvm.vit_b_16(image_size=32)
        nn.init.normal_(model.heads.head.weight, std=0.02)  # zero-initialised: every output would be 0
        return model, (torch.randn(2, 3, 32, 32),), {}
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return getattr(tvm, name)(**kwargs), image, {}


def _tensors(value) -> list[torch.Tensor]:
    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


def _same(got: list[torch.Tensor], want: list[torch.Tensor]) -> bool:
    return common.compare_outputs(want, got, atol=1e-4, rtol=1e-3)[0] is None


def _reason(message: str) -> str:
    """The reason of a refusal or warning, without the module's name."""
    why = re.split(r"cannot be replaced by a [\w.]+: |cannot be called on its own \(", message)[-1]
    why = why.split("). Hook the root")[0].replace("the model calls it other than on one tensor and constant "
                                                   "keywords (", "")
    return re.sub(r"'[\w.]+'", "'…'", why.split(", while a module put in")[0])[:90]


def measure(name: str) -> dict:
    torch.manual_seed(SEED)
    started = time.perf_counter()
    model, args, kwargs = build(name)
    model.eval()
    rebuilt = osf.trace(model, args, kwargs).build().eval()
    with torch.no_grad():
        expected = _tensors(model(*args, **kwargs))
    counts = collections.Counter()
    reasons: dict[str, collections.Counter] = {"refused": collections.Counter(), "warned": collections.Counter()}
    different: list[str] = []
    for path, module in model.named_modules():
        parent, _, local = path.rpartition(".")
        if not path or local not in rebuilt.get_submodule(parent)._modules:
            continue
        counts["modules"] += 1
        changed = copy.deepcopy(rebuilt)
        try:
            setattr(changed.get_submodule(parent), local, copy.deepcopy(module))
        except osf.ModuleReplacedError as e:
            counts["refused"] += 1
            reasons["refused"][_reason(str(e))] += 1
        else:
            with torch.no_grad():
                same = _same(_tensors(changed(*args, **kwargs)), expected)
            counts["put_in_equal" if same else "put_in_different"] += 1
            if not same:
                different.append(f"put in {path}")
        hooked, original, seen = copy.deepcopy(rebuilt), copy.deepcopy(model), {}

        def note(key: str):
            def hook(module: nn.Module, inputs: tuple, output) -> None:  # returns None: the output stays
                seen.setdefault(key, _tensors(output))
            return hook
        original.get_submodule(path).register_forward_hook(note("original"))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hooked.get_submodule(path).register_forward_hook(note("rebuilt"))
        warned = [w for w in caught if "will never be called" in str(w.message)]
        with torch.no_grad():
            out, _ = _tensors(hooked(*args, **kwargs)), original(*args, **kwargs)
        if warned:
            counts["warned"] += 1
            reasons["warned"][_reason(str(warned[0].message))] += 1
            continue
        same = "original" in seen and "rebuilt" in seen and _same(seen["rebuilt"], seen["original"]) and \
            _same(out, expected)
        counts["hooked_equal" if same else "hooked_different"] += 1
        if not same:
            different.append(f"hook on {path}")
    at_once = all_at_once(model, rebuilt, args, kwargs, expected)
    different += at_once.pop("different")
    return {"model": name, **{k: counts[k] for k in ("modules", "put_in_equal", "put_in_different", "refused",
                                                     "hooked_equal", "hooked_different", "warned")},
            **at_once, "different": different[:10], "refused_because": dict(reasons["refused"].most_common(4)),
            "warned_because": dict(reasons["warned"].most_common(3)),
            "seconds": round(time.perf_counter() - started, 1)}


def all_at_once(model: nn.Module, rebuilt: nn.Module, args: tuple, kwargs: dict,
                expected: list[torch.Tensor]) -> dict:
    """Every module hooked at once (then every hook removed), and every replaceable leaf put in at once."""
    different: list[str] = []
    hooked, original, seen = copy.deepcopy(rebuilt), copy.deepcopy(model), {"rebuilt": {}, "original": {}}

    def note(side: str, path: str):
        def hook(module: nn.Module, inputs: tuple, output) -> None:  # values as they are then (in-place ops)
            seen[side].setdefault(path, [t.clone() for t in _tensors(output)])
        return hook
    paths = [path for path, _ in original.named_modules() if path and path in dict(hooked.named_modules())]
    for path in paths:
        original.get_submodule(path).register_forward_hook(note("original", path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        handles = [hooked.get_submodule(path).register_forward_hook(note("rebuilt", path)) for path in paths]
    with torch.no_grad():
        original(*args, **kwargs)
        try:
            out = _tensors(hooked(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - any failure is the bug this counts
            out = []
            different.append(f"all hooked: {type(e).__name__}: {str(e)[:80]}")
    fired = seen["rebuilt"]
    wrong = [p for p in fired if p not in seen["original"] or not _same(fired[p], seen["original"][p])]
    if out and not _same(out, expected):
        different.append("all hooked: outputs")
    different += [f"all hooked: hook on {p}" for p in wrong[:3]]
    for handle in handles:
        handle.remove()
    calls = []
    watch = nn.modules.module.register_module_forward_hook(lambda module, inputs, output: calls.append(module))
    try:
        with torch.no_grad():
            out = _tensors(hooked(*args, **kwargs))
    finally:
        watch.remove()
    if not _same(out, expected):
        different.append("hooks removed: outputs")
    swapped, put_in = copy.deepcopy(rebuilt), 0
    for path, module in model.named_modules():
        parent, _, local = path.rpartition(".")
        if path and not module._modules and local in swapped.get_submodule(parent)._modules:
            try:
                setattr(swapped.get_submodule(parent), local, copy.deepcopy(module))
                put_in += 1
            except osf.ModuleReplacedError:
                pass
    with torch.no_grad():
        if not _same(_tensors(swapped(*args, **kwargs)), expected):
            different.append(f"all {put_in} leaves put in: outputs")
    fx = feature_extraction(rebuilt, args, kwargs, expected)
    different += fx.pop("different")
    return {"all_hooked_fired": len(fired), "all_hooked_wrong": len(wrong),
            "called_after_removal": sum(m is not hooked for m in calls), "leaves_put_in": put_in, **fx,
            "different": different}


def feature_extraction(rebuilt: nn.Module, args: tuple, kwargs: dict, expected: list[torch.Tensor]) -> dict:
    """``torch.fx.symbolic_trace`` of the rebuilt model gives its outputs, and how many of its module paths
    torchvision's ``create_feature_extractor`` can return (a module that runs no op leaves no node). Their
    values are not compared with the original's extractor: FX traces the original's ``out += identity`` as
    an out-of-place add, while the rebuilt graph keeps eager PyTorch's in-place ``add_``, so a feature taken
    at a module whose output is later changed in place differs (eager hooks that keep the tensor see the
    changed value too)."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names
    ours = copy.deepcopy(rebuilt)
    try:
        traced = torch.fx.symbolic_trace(ours)
        with torch.no_grad():
            same = _same(_tensors(traced(*args, **kwargs)), expected)
        names = get_graph_node_names(ours)[1]  # a module path selects the last node named below it
        paths = [p for p, _ in ours.named_modules() if p and any(n == p or n.startswith(f"{p}.") for n in names)]
        with torch.no_grad():
            create_feature_extractor(ours, return_nodes={p: p for p in paths})(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - reported per model
        return {"fx": f"{type(e).__name__}: {str(e)[:70]}", "fx_nodes": 0, "different": []}
    return {"fx": "equal" if same else "DIFFERENT", "fx_nodes": len(paths),
            "different": [] if same else ["fx: outputs"]}


def section(env: dict, rows: list[dict]) -> str:
    lines = ["<!-- module-swaps:start -->", "## Modules put in and hooks, module by module", "",
             f"Generated by `{env['command']}` on {env['date']}.", "",
             f"- Machine: {env['platform']} ({env['machine']}), {env['cpus']} CPUs",
             f"- Versions: python {env['python']}, torch {env['torch']}, torchvision {env['torchvision']}, "
             f"timm {env['timm']}, osf {env['osf']}",
             f"- Seed {SEED}; random weights; eval mode; a plain rebuild (`osf.trace(model).build()`) of each model",
             "- *put in*: a copy of the original's module put in at its path; *equal*: the outputs equal the "
             "original's (atol 1e-4, rtol 1e-3). *hooked*: a forward hook on the module; *equal*: the values the "
             "hook sees and the outputs equal those of the same hook on the original. *Different* counts are "
             "bugs; refusals and warnings say why (most common reasons shown)",
             "- All at once: *all hooked*: a forward hook on every module at once, *fired* (those that can be called "
             "on their own) / *wrong* (a value unlike the original's hook's); *after removal*: modules other than the "
             "root called once every handle is removed (0: the model runs its ops itself again); *leaves put in*: "
             "a copy of the original's module at every replaceable leaf at once, the outputs equal the original's "
             "(a difference is listed below); *fx*: `torch.fx.symbolic_trace` of the rebuilt model gives its "
             "outputs (or why it fails); *fx features*: among its "
             "node names, the module paths torchvision's `create_feature_extractor` can return (all at once)", "",
             "| model | modules | put in: equal / different / refused | hooked: equal / different / warned | "
             "all hooked: fired / wrong | after removal | leaves put in | fx | fx features | "
             "refused because | seconds |",
             "|---|---:|---|---|---|---:|---:|---|---|---|---:|"]
    for r in rows:
        why = "; ".join(f"{n}× {k}" for k, n in r["refused_because"].items()).replace("|", "\\|")
        lines.append(f"| {r['model']} | {r['modules']} | {r['put_in_equal']} / {r['put_in_different']} / "
                     f"{r['refused']} | {r['hooked_equal']} / {r['hooked_different']} / {r['warned']} | "
                     f"{r['all_hooked_fired']} / {r['all_hooked_wrong']} | {r['called_after_removal']} | "
                     f"{r['leaves_put_in']} | {r['fx']} | {r['fx_nodes']} | {why} | "
                     f"{r['seconds']} |")
    bad = [d for r in rows for d in r["different"]]
    lines += ["", "Different: " + (", ".join(bad) if bad else "none") + "."]
    return "\n".join(lines + ["<!-- module-swaps:end -->"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    opts = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    rows = []
    for name in QUICK if opts.quick else FULL:
        rows.append(measure(name))
        print(json.dumps(rows[-1]), flush=True)
    env = common.environment(command="python bench/module_swaps.py" + (" --quick" if opts.quick else ""))
    common.publish("module_swaps", "module-swaps", opts.quick, env, rows, section(env, rows))
    return int(any(r["put_in_different"] or r["hooked_different"] or r["different"] or r["called_after_removal"]
                   for r in rows))  # CI fails on a bug


if __name__ == "__main__":
    sys.exit(main())
