"""The ``osf`` command."""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import textwrap
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch.distributed as dist

from ..ir import IR, OsfError, load_ir
from ..search.search import ALGORITHMS
from ..space.space import SearchSpace
from ..train import TrainingInterrupted, init_process_group
from ..train.checkpoint import checkpoints
from ..train.labels import SCORES
from . import demo, inspect_cmd, pipeline, space_cmd
from .config import (EXPORT_DTYPES, ConfigError, ExportSettings, SearchSettings, SpaceSettings, TrainSettings, parse_config,
                     read_config, to_json)
from .data import BUILT_IN
from .models import BUILTIN, ImageSize, SpecError, is_saved_ir, resolve, trace_spec

MODEL_HELP = ("MODEL is torchvision:NAME, timm:NAME, hf:ARCH (bert, roberta, distilbert, gpt2, llama, mixtral, vit), "
              "hf:PATH (a local save_pretrained folder, e.g. hf:./my-bert), sam:vit_b, sam:tiny, minilm, "
              f"builtin:NAME ({', '.join(BUILTIN)}), python:pkg.module:factory, "
              "python:path/to/file.py:factory, or a directory written by --save / ir.save.")
DATA_HELP = (f"data: {', '.join(BUILT_IN)} (built in), npz:PATH (arrays x_train, y_train, x_val, y_val; labels "
             "one per sample, or one per position for segmentation / tagging, -100 where left out; "
             "NAME_train, NAME_val: the model's input NAME, e.g. attention_mask) or python:pkg.module:function / "
             "python:path/to/file.py:function (returning those four, or a dict of arrays named as in the archive)")


def load_model_ir(spec: str, image_size: ImageSize | None = None) -> IR:
    """An IR for a model spec (tracing it) or a saved IR directory."""
    if is_saved_ir(spec):
        if image_size is not None:
            raise SpecError(f"an image size (--image-size) does not apply to a saved IR ({spec}): its input shapes "
                            "were traced")
        return load_ir(spec)
    return trace_spec(resolve(spec, image_size=image_size), batched=not spec.startswith("python:"))


def image_size_arg(text: str) -> ImageSize:
    """``--image-size``: ``32`` (square) or ``32x48`` (height x width)."""
    try:
        sides = [int(t) for t in text.lower().split("x")]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is no image size: give a side (32) or height x width (32x48)")
    return sides[0] if len(sides) == 1 else sides


def _image_size_flag(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--image-size", type=image_size_arg, default=None, metavar="S|HxW",
                   help="example image size of a torchvision:, timm: or hf:PATH vision model (a side, or height x width)")


def _given(a: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The flags of ``a`` that name fields of ``cls`` and were given (the dataclass has the defaults)."""
    return {k: v for k, v in vars(a).items() if k in cls.__dataclass_fields__ and v is not None}


def _budget(item: str, flag: str) -> tuple[str, float | str]:
    """``flops=50%`` -> ``("flops", "50%")``; ``params=2e6`` -> ``("params", 2000000.0)``."""
    key, _, value = item.partition("=")
    try:
        number = float(value.removesuffix("%"))
    except ValueError:
        number = None
    if not key or number is None:
        raise SpecError(f"{flag} takes METRIC=VALUE with a number or a percentage of the full model (e.g. "
                        f"flops=50% or params=2e6), got '{item}'")
    return key, value if value.endswith("%") else number


def cmd_inspect(a: argparse.Namespace) -> int:
    ir = load_model_ir(a.model, a.image_size)
    root = a.module or ""
    ir.node(root)
    if a.dot:
        Path(a.dot).write_text(inspect_cmd.dot(ir, a.level if a.level is not None else root))
        print(f"wrote {a.dot} (dataflow among the children of '{a.level or root or '<root>'}')", file=sys.stderr)
    print(inspect_cmd.to_json(ir, a.depth, root) if a.json else inspect_cmd.table(ir, a.depth, root))
    if a.save:
        ir.save(a.save)
        print(f"saved IR to {a.save}", file=sys.stderr)
    return 0


def cmd_space(a: argparse.Namespace) -> int:
    space = SearchSpace(load_model_ir(a.model, a.image_size), **to_json(SpaceSettings(**_given(a, SpaceSettings))))
    print(json.dumps(space_cmd.to_json(space), indent=1) if a.json else space_cmd.text(space))
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    if a.nproc > 1 and "RANK" not in os.environ:
        return _launch_ranks(a)
    if "RANK" in os.environ:  # one of the ranks torchrun started: NCCL for GPUs, gloo for the CPU
        device = TrainSettings(**_given(a, TrainSettings)).device
        init_process_group("gloo" if pipeline.run_device(device, "train.device").type == "cpu" else "nccl")
    code = _train(a)  # on an error this rank exits at once and torchrun stops the others (no barrier to hang in)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return code


def _launch_ranks(a: argparse.Namespace) -> int:
    """``osf train --nproc N``: the same command on N local ranks through torchrun (fork-join training)."""
    pipeline.check_rank_devices(TrainSettings(**_given(a, TrainSettings)).device, a.nproc, "train.device")
    argv, skip = [], False
    for token in a.argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            argv.append(token)
    command = [sys.executable, "-m", "osf.cli.launch", "--standalone", "--nproc-per-node", str(a.nproc),
               "--max-restarts", str(a.max_restarts), "-m", "osf.cli.main", *argv]
    threads = os.environ.get("OMP_NUM_THREADS") or str(_threads_per_rank(a.nproc))
    print(f"osf train: launching {a.nproc} ranks of {threads} threads (OMP_NUM_THREADS): {' '.join(command[1:])}",
          file=sys.stderr)
    return subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": threads}).returncode


def _threads_per_rank(nproc: int) -> int:
    """The CPU cores this process may use, shared out over ``nproc`` ranks (torchrun alone gives each one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // nproc)


def _train(a: argparse.Namespace) -> int:
    run = pipeline.train_run(a.model, a.data, a.out, SpaceSettings(**_given(a, SpaceSettings)),
                             TrainSettings(**_given(a, TrainSettings)), image_size=a.image_size,
                             progress=not a.quiet)
    if dist.is_initialized() and dist.get_rank() != 0:
        return 0
    print(_trained_line(run.result, run.train["metric"], a.out))
    return 0


def _trained_line(result: dict, metric: str, out: str) -> str:
    scores = result[f"val_{metric}"]
    return (f"trained {result['step']} steps into {out}; validation {SCORES[metric]}: max subnet {scores['max']:.4f}, "
            f"min subnet {scores['min']:.4f}")


def cmd_search(a: argparse.Namespace) -> int:
    settings = SearchSettings(**{**_given(a, SearchSettings), "constraints": dict(_budget(c, "--constraint") for c in a.constraint or [])})
    front = pipeline.search_run(a.run_dir, settings, progress=not a.quiet)
    print(front.table())
    out = Path(settings.out or Path(a.run_dir) / pipeline.SEARCH_DIR)
    saved = [str(out / name) for name in ("front.json", "front.png") if (out / name).is_file()]
    print(f"saved {' and '.join(saved)}", file=sys.stderr)  # no front.png without matplotlib
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    if a.arch is None and not a.pick and not a.budgets:
        raise ConfigError("say which subnet: --arch, --pick METRIC=VALUE or --budgets METRIC=V1,V2,...")
    budgets = dict([_budgets(a.budgets)]) if a.budgets else {}
    settings = ExportSettings(out=a.out, arch=a.arch, pick=dict(_budget(p, "--pick") for p in a.pick or []),
                              budgets=budgets, force=a.force, formats=tuple(a.format or ExportSettings.formats),
                              evaluate=not a.no_eval, dtype=a.dtype or ExportSettings.dtype,
                              finetune_epochs=a.finetune_epochs, finetune_lr=a.finetune_lr)
    path = pipeline.export_run(a.run_dir, settings, progress=not a.quiet)
    _print_export(path)
    return 0


def _steps_or_epoch(text: str) -> int | str:
    """``--val-every``: a number of steps, or ``epoch``."""
    if text == "epoch":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of steps or 'epoch', got {text!r}") from None


def _budgets(item: str) -> tuple[str, list[float | str]]:
    """``flops=25%,50%`` -> ``("flops", ["25%", "50%"])``."""
    key, _, values = item.partition("=")
    return key, [_budget(f"{key}={v}", "--budgets")[1] for v in values.split(",")]


def _print_export(path: Path) -> None:
    if (path / pipeline.EXPORTS_INDEX).is_file():  # one subnet per budget
        index = json.loads((path / pipeline.EXPORTS_INDEX).read_text())
        for row in index["exports"]:
            extra = "".join(f", {k} {v}" for k, v in row.items() if k not in pipeline.INDEX_FIELDS)
            print(f"{row['dir']}: {row['params']:,} params, {row['flops']:,} FLOPs "
                  f"({100 * row['flops_share']:.1f}% of the full model's){extra}")
        print(f"exported {len(index['exports'])} subnets to {path} (index: exports.md)")
        return
    card = json.loads((path / "card.json").read_text())
    extra = "".join(f", {k} {v}" for k, v in card["metrics"].items())
    print(f"exported to {path}: {', '.join(card['files'])}; {card['params']:,} params, {card['flops']:,} FLOPs{extra}")


def cmd_run(a: argparse.Namespace) -> int:
    config = parse_config(read_config(a.config))
    done = pipeline.run_config(config, progress=not a.quiet)
    print(_trained_line(done["train"], config.train.metric, config.out))
    if "search" in done:
        print(done["search"].table())
    if "export" in done:
        _print_export(done["export"])
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    settings = demo.DemoSettings(**{k: v for k, v in vars(a).items()
                                    if k in demo.DemoSettings.__dataclass_fields__ and v is not None})
    summary = demo.run_demo(a.out, settings, force=a.force, progress=not a.quiet)
    print(demo.table(summary))
    acc = summary["train"]["val_accuracy"]
    print(f"\nsupernet of {summary['model']}: {summary['train']['step']} steps, validation accuracy max {acc['max']:.3f} "
          f"/ min {acc['min']:.3f}; front of {summary['front_size']} from {summary['evaluated']} evaluated subnets; "
          f"{summary['seconds']:.0f} s")
    print(f"report: {a.out}/summary.md, front.png, front.json, subnets/ (model.pt2, model.onnx, model_card.md)")
    return 0


def _describe(text: str, *examples: str) -> str:
    """A subcommand's description: ``text`` wrapped, then the examples as they are."""
    body = textwrap.fill(" ".join(text.split()), 78)
    return body + ("\n\nexample" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(examples) if examples else "")


def _space_flags(p: argparse.ArgumentParser) -> None:
    d = SpaceSettings()
    g = p.add_argument_group("search space")
    g.add_argument("--width-ratios", type=float, nargs="+", metavar="R",
                   help=f"fractions of each width group offered (default: {' '.join(map(str, d.width_ratios))})")
    g.add_argument("--multiple-of", type=int, metavar="N", help=f"round channel counts to N (default {d.multiple_of})")
    g.add_argument("--no-depth", dest="depth", action="store_const", const=False,
                   help="no removable units (width only)")
    g.add_argument("--include", action="append", metavar="GLOB", help="only modules matching GLOB (repeatable)")
    g.add_argument("--exclude", action="append", metavar="GLOB", help="never modules matching GLOB (repeatable)")
    g.add_argument("--prune-head-dim", action="store_const", const=True, help="also shrink head_dim")
    _image_size_flag(g)


def _train_flags(p: argparse.ArgumentParser) -> None:
    d = TrainSettings()
    g = p.add_argument_group("training")
    how_long = g.add_mutually_exclusive_group()
    how_long.add_argument("--steps", type=int, help="optimizer steps (one batch each)")
    how_long.add_argument("--epochs", type=int, help=f"passes over the training data (default {pipeline.DEFAULT_EPOCHS})")
    g.add_argument("--lr", type=float, help=f"AdamW learning rate (default {d.lr})")
    g.add_argument("--lr-schedule", choices=TrainSettings.SCHEDULES,
                   help=f"onecycle: warm up to --lr over the first 10%% of the steps, then anneal towards zero; cosine: "
                   f"anneal from --lr to zero; constant: --lr throughout; plateau: halve the rate after "
                   f"{pipeline.PLATEAU_PATIENCE} validations (--val-every) without a better max-subnet score; a "
                   f"resumed run may extend only constant and plateau (default {d.lr_schedule})")
    g.add_argument("--weight-decay", type=float, metavar="WD",
                   help=f"AdamW's decoupled weight decay, on every parameter unless --no-decay-1d (default "
                   f"{d.weight_decay})")
    g.add_argument("--no-decay-1d", dest="decay_1d", action="store_const", const=False,
                   help="no weight decay on 1-D parameters: biases, normalisation scales and shifts, layer scales "
                   "(timm's and Once-for-All's convention); fixed for a run")
    g.add_argument("--label-smoothing", type=float, metavar="EPS",
                   help=f"cross-entropy against labels smoothed by EPS (0.1 in Once-for-All; default "
                   f"{d.label_smoothing:g})")
    g.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    g.add_argument("--accumulate", type=int, metavar="N",
                   help=f"batches per optimizer step (gradient accumulation): steps of N × --batch-size samples in "
                   f"the memory of one batch; an epoch is then len/N steps (default {d.accumulate})")
    g.add_argument("--sampler", choices=TrainSettings.SAMPLERS,
                   help=f"which subnets each step trains: sandwich = max, min and random ones; uniform = random "
                   f"ones; motif = sandwich with each random subnet replaced by its motif's most salient member "
                   f"(default {d.sampler})")
    g.add_argument("--subnets", type=int, metavar="K", help=f"subnets per step (default {d.subnets})")
    g.add_argument("--distill", choices=TrainSettings.DISTILL,
                   help=f"inplace: the max subnet teaches the others; teacher: the model as given (trained weights: "
                   f"hf:PATH, your python: factory) teaches every subnet (default {d.distill})")
    g.add_argument("--distill-weight", type=float, metavar="W",
                   help=f"share of the distillation loss in a student's loss (default {d.distill_weight})")
    g.add_argument("--warmup-epochs", type=float, metavar="E",
                   help=f"train the max subnet alone for the first E epochs (fractions allowed), then the sampler's "
                   f"subnets (default {d.warmup_epochs:g}; a quarter of the run helped the small ViT's max subnet)")
    g.add_argument("--clip-grad-norm", type=float, metavar="N",
                   help="clip the gradients' total norm to N before each step (default: no clipping)")
    g.add_argument("--amp", action="store_const", const=True,
                   help="mixed precision: autocast to bfloat16 on the CPU, float16 with loss scaling on CUDA")
    g.add_argument("--seed", type=int, help=f"fixes initial weights, data order and sampling (default {d.seed})")
    g.add_argument("--metric", choices=tuple(SCORES),
                   help=f"the validation score of the run, its search and its exports: top-1 accuracy, or miou (mean "
                   f"intersection over union of the classes, for labels per position: segmentation) (default "
                   f"{d.metric})")
    g.add_argument("--val-every", type=_steps_or_epoch, metavar="N|epoch",
                   help="score the max and min subnets on the validation split every N steps (or every epoch) while "
                   "training (metrics.jsonl, TensorBoard, the progress bar); a resumed run may change it (default: "
                   "once, at the end)")
    g.add_argument("--ema", type=float, metavar="DECAY",
                   help="keep a moving average of the weights (e.g. 0.999; warmed up over the first steps), which the "
                   "run then scores, searches and exports instead of the last weights; fixed for a run (default: none)")
    g.add_argument("--checkpoint-every", type=int, metavar="N", help=f"steps between checkpoints "
                   f"(default {d.checkpoint_every}; one is always written at the end)")
    g.add_argument("--device", help=f"cpu, cuda, cuda:N or auto (CUDA when available, else the CPU; under --nproc "
                   f"each rank takes its own GPU); a resumed run may change it (default {d.device})")
    g.add_argument("--workers", type=int, metavar="N",
                   help=f"processes reading the batches of data given as datasets (python: data returning two), e.g. "
                   f"to decode and transform images while the model trains; in-memory arrays need none. A resumed run "
                   f"may change it, though random transforms then draw otherwise (default {d.workers})")


def parser() -> argparse.ArgumentParser:
    """The ``osf`` argument parser: one subcommand per stage, each with ``--quiet`` and ``--debug``."""
    p = argparse.ArgumentParser(prog="osf", description="Turn any PyTorch model into a once-for-all supernet: "
                                "inspect it, see its search space, train it, search the best subnets, export them.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    common.add_argument("--debug", action="store_true", help="on error, show the full traceback")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter

    i = sub.add_parser("inspect", parents=[common], help="capture a model and print its module tree with shapes, "
                       "params and FLOPs", description="Capture MODEL into osf's hierarchical IR and print the module "
                       "tree. " + MODEL_HELP)
    i.add_argument("model")
    i.add_argument("--depth", type=int, default=None, help="fold the tree below this nesting level")
    i.add_argument("--module", default=None, help="show only this module's subtree (qualified name)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--dot", metavar="FILE", help="write a Graphviz drawing of one level's dataflow")
    i.add_argument("--level", default=None, help="module whose children --dot draws (default: --module or root)")
    _image_size_flag(i)
    i.add_argument("--save", metavar="DIR", help="also save the IR (graph JSON + safetensors) to DIR")
    i.set_defaults(func=cmd_inspect)

    s = sub.add_parser("space", parents=[common], formatter_class=fmt, help="show a model's search space: width "
                       "groups, removable units, size, motifs",
                       description=_describe("Derive MODEL's search space and print its width groups (channels, "
                       "heads), removable units (depth), what is fixed and why, the exact number of subnets and of "
                       "motifs. " + MODEL_HELP, "  osf space builtin:vit --width-ratios 0.5 1.0 --json"))
    s.add_argument("model")
    _space_flags(s)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_space)

    t = sub.add_parser("train", parents=[common], formatter_class=fmt, help="train a supernet into a run "
                       "directory (resumes)",
                       description=_describe("Train MODEL's supernet on a classification data set (AdamW, "
                       "cross-entropy, sampled subnets per step, optional in-place distillation) into RUN_DIR: the "
                       "traced model, space options, checkpoints and metrics, so that osf search / osf export need "
                       "nothing else. Running the same command again resumes from the newest checkpoint; more "
                       "--steps / --epochs extend the run. " + MODEL_HELP,
                       "  osf train builtin:resnet --data digits --out runs/digits --epochs 10"))
    t.add_argument("model")
    t.add_argument("--data", required=True, metavar="SPEC", help=DATA_HELP)
    t.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory (created, or resumed)")
    _train_flags(t)
    _space_flags(t)
    t.add_argument("--nproc", type=int, default=1, metavar="N", help="train on N local processes (fork-join over "
                   "torch.distributed, gloo on CPU / NCCL on GPU, launched through torchrun); same result as one "
                   "process up to float rounding")
    t.add_argument("--max-restarts", type=int, default=0, metavar="R", help="with --nproc: restart all ranks up to "
                   "R times when one dies; training resumes from the newest checkpoint")
    t.set_defaults(func=cmd_train)

    d = SearchSettings()
    r = sub.add_parser("search", parents=[common], formatter_class=fmt, help="search a trained run for the "
                       "Pareto-best subnets",
                       description=_describe("Search the trained supernet of RUN_DIR for the subnets with the best "
                       "trade-off of the objectives (accuracy on the run's validation data, BatchNorm recalibrated "
                       "on its training data; params and FLOPs from the IR). Prints the Pareto front and saves "
                       "front.json and front.png to RUN_DIR/search (or --out).",
                       "  osf search runs/digits --constraint flops=50% --budget 200"))
    r.add_argument("run_dir", metavar="RUN_DIR")
    r.add_argument("--objectives", nargs="+", metavar="M", help=f"accuracy, params, flops, latency "
                   f"(default: {' '.join(d.objectives)})")
    r.add_argument("--constraint", action="append", metavar="M=V", help="hard limit, e.g. flops=50%% (of the full "
                   "model) or params=2e6 (repeatable)")
    r.add_argument("--budget", type=int, help=f"subnets to evaluate (default {d.budget})")
    r.add_argument("--algorithm", choices=ALGORITHMS, help=f"surrogate: evolution guided by a regression of the "
                   f"evaluated subnets' accuracy; nsga2: plain NSGA-II; random: uniform samples (default {d.algorithm})")
    r.add_argument("--seed", type=int, help=f"default {d.seed}")
    r.add_argument("--calib-batches", type=int, metavar="N", help=f"BatchNorm recalibration batches per subnet "
                   f"(default {d.calib_batches})")
    r.add_argument("--out", metavar="DIR", help="where front.json and front.png go (default RUN_DIR/search)")
    r.add_argument("--device", help=f"where subnets are scored: cpu, cuda, cuda:N or auto (CUDA when available); "
                   f"latency is always timed on the CPU (default {d.device})")
    r.set_defaults(func=cmd_search)

    e = sub.add_parser("export", parents=[common], formatter_class=fmt, help="export a subnet of a trained run as "
                       ".pt2 / ONNX with a model card",
                       description=_describe("Extract one subnet of RUN_DIR's trained supernet and write DIR: "
                       "model.pt2 (torch.export; loads with plain torch), model.onnx (when onnx and onnxscript are "
                       "installed), weights.safetensors, arch.json, card.json and model_card.md. DIR is written "
                       "atomically and never replaced without --force.",
                       "  osf export runs/digits --arch max --out exported/max",
                       "  osf export runs/digits --pick flops=25% --out exported/small",
                       "  osf export runs/digits --pick flops=25% --dtype bfloat16 --out exported/small-bf16",
                       "  osf export runs/digits --budgets flops=25%,50%,100% --out exported/all",
                       "  osf export runs/digits --budgets flops=25%,50% --finetune-epochs 2 --out exported/tuned",
                       "  osf export runs/digits --arch exported/small/arch.json --out exported/again"))
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--arch", metavar="ARCH", help="max, min, an Arch as JSON, or a JSON file holding one")
    e.add_argument("--pick", action="append", metavar="M=V", help="the most accurate subnet of osf search's front "
                   "within this budget, e.g. flops=50%% (repeatable)")
    e.add_argument("--budgets", metavar="M=V1,V2,...", help="one subnet per budget, each the most accurate within "
                   "it (and --pick), written to DIR/M-V with an index DIR/exports.md, e.g. flops=25%%,50%%,100%%")
    e.add_argument("--out", required=True, metavar="DIR", help="the directory to write")
    e.add_argument("--force", action="store_true", help="replace DIR if it exists (the old one stays until the new "
                   "one is complete)")
    e.add_argument("--format", action="append", choices=("pt2", "onnx"), help="only these formats (repeatable; "
                   "default both)")
    e.add_argument("--no-eval", action="store_true", help="do not score the subnet on the validation data for "
                   "the model card")
    e.add_argument("--dtype", choices=EXPORT_DTYPES, help="write the subnet in this dtype; with evaluation the card "
                   "also gets its validation accuracy in it, e.g. accuracy_float16 (default float32)")
    e.add_argument("--finetune-epochs", type=int, default=0, metavar="E", help="first train each subnet alone for E "
                   "epochs of the training split, from its inherited weights (the run's optimizer settings and "
                   "distillation, a cosine schedule; in RUN_DIR/finetune, resumed if cut short); the card scores "
                   "both, e.g. accuracy and accuracy_inherited (default 0: the inherited weights)")
    e.add_argument("--finetune-lr", type=float, metavar="LR", help="the fine-tuning rate, annealed to zero (default: "
                   "a tenth of the run's --lr)")
    e.set_defaults(func=cmd_export)

    c = sub.add_parser("run", parents=[common], formatter_class=fmt, help="train, search and export as a config "
                       "file says",
                       description=_describe("Run the stages a YAML or TOML config describes, in order: model, "
                       "data, space, train (into train.out, resuming), then search and export if their sections are "
                       "present. Unknown sections or keys are errors that list the valid ones; docs/cli.md lists "
                       "every key.", "\n".join(["  # demo.yaml", "  model: builtin:resnet", "  data: digits",
                       "  space: {multiple_of: 4}", "  train: {out: runs/digits, epochs: 10, sampler: sandwich}",
                       '  search: {constraints: {flops: "50%"}, budget: 100}',
                       '  export: {out: exported/digits, pick: {flops: "50%"}}'])))
    c.add_argument("config", metavar="CONFIG", help="a .yaml, .yml or .toml file")
    c.set_defaults(func=cmd_run)
    dd = demo.DemoSettings()
    m = sub.add_parser("demo", parents=[common], formatter_class=fmt, help="every stage on a built-in model and "
                       "the digits data set, in a few minutes",
                       description=_describe("Build the supernet of a built-in model (a small residual CNN or ViT), "
                       "train it on scikit-learn's digits, search the accuracy / FLOPs front, export the best subnets "
                       "within 25%%, 50%% and 100%% of the FLOPs, and score each exported file on held-out digits "
                       "and time it on the CPU. Writes OUT: summary.md, summary.json, front.png, front.json, "
                       "subnets/ and the training run.", "  osf demo --out reports/demo",
                       "  osf demo --model vit --epochs 30 --out reports/demo-vit"))
    m.add_argument("--out", default="osf-demo", metavar="DIR", help="the report directory (default osf-demo)")
    m.add_argument("--force", action="store_true", help="replace DIR if it exists (the old one stays until the "
                   "new one is complete)")
    m.add_argument("--model", choices=("resnet", "vit"), help=f"built-in model (default {dd.model})")
    m.add_argument("--epochs", type=int, help=f"training epochs (default {dd.epochs})")
    m.add_argument("--budget", type=int, help=f"subnets the search evaluates (default {dd.budget})")
    m.add_argument("--seed", type=int, help=f"default {dd.seed}")
    m.set_defaults(func=cmd_demo)
    return p


ERRORS = (OsfError, ValueError, KeyError, OSError, ImportError, ArithmeticError)


def main(argv: list[str] | None = None) -> int:
    """Run ``osf`` on ``argv`` (default ``sys.argv[1:]``); bad input prints one line and returns 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "quiet", False):  # Hugging Face's own bars (loading weights) too, if it is imported later
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    plain_format = warnings.formatwarning
    pytree_log = logging.getLogger("torch.utils._pytree")
    if not args.debug:  # one line per warning, as errors are, instead of Python's file:line and source line
        warnings.formatwarning = lambda message, category, *_: (  # type: ignore[assignment]
            f"osf {args.command}: warning: {' '.join(str(message).split())}\n")
        pytree_log.addFilter(_third_party_deprecation)
    try:
        return args.func(args)
    except ERRORS as e:
        if args.debug:
            traceback.print_exc()
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"osf {args.command}: error: {' '.join(str(msg).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if args.debug:
            traceback.print_exc()
        print(f"osf {args.command}: {_interrupted(args, e)}", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports it
    finally:
        warnings.formatwarning = plain_format
        pytree_log.removeFilter(_third_party_deprecation)


def _third_party_deprecation(record: logging.LogRecord) -> bool:
    """False for torch's notes to the authors of other libraries (torchao, imported by transformers, registers
    enums as pytree constants: two lines on every hf: model), which no osf user can act on."""
    return "Calling register_constant() on Enum subclasses is deprecated" not in record.getMessage()


def _interrupted(a: argparse.Namespace, e: KeyboardInterrupt) -> str:
    """What a Ctrl-C left behind and how to go on."""
    command = a.command
    if command == "demo":
        return "interrupted; nothing was written (the report is staged and appears only when complete)"
    if isinstance(e, TrainingInterrupted):  # the command trains into a run directory: a checkpoint was written
        return (f"interrupted after training step {e.step} of {e.steps}, saved in {e.checkpoint}; run the same "
                "command again to resume from it")
    if command == "train":
        saved = checkpoints(Path(a.out) / "checkpoints")
        if not saved:
            return "interrupted before the first checkpoint; the same command starts the run again"
        return f"interrupted; run the same command again to resume from {saved[-1]}"
    if command == "search":
        return ("interrupted; the subnets evaluated so far are cached in the search directory: run the same "
                "command again to go on from them")
    if command == "run":
        return ("interrupted; training resumes from its last checkpoint and the search from the subnets it "
                "evaluated: run the same command again to go on")
    return "interrupted"


if __name__ == "__main__":
    sys.exit(main())
