"""``osf.train``: a plain PyTorch loop that trains a supernet's shared weights on the sum of the losses of
the subnets sampled at each step (one optimizer step per data batch)."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import math
import numbers
import os
import platform
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist

from ..progress import describe, progress_bar
from ..space.arch import Arch
from ..supernet.batches import BatchFn, batch_size, explained, split_batch, to_device
from ..supernet.supernet import Supernet
from . import checkpoint as ckpt
from .distill import Distill, select_output
from .ema import EMA
from .evaluate import Validation
from .forkjoin import ForkJoin, WorkItem, digest, labelled_weights, plan, take_rows
from .samplers import Sampler, SandwichSampler

LossFn = Callable[[Any, Any], torch.Tensor]
# the note an exception raised while a subnet trains gets:
# "osf.train: in step 3, running the min subnet; its arch: {...}"
STEP_NOTE, ARCH_NOTE = "osf.train: in step", "; its arch: "


@dataclass
class TrainResult:
    """What a run did: its last step, the metrics of every step (as in ``metrics.jsonl``), the last
    checkpoint written and the step it resumed from (0 for a fresh run)."""
    step: int
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    resumed_from: int = 0


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``osf.train`` once the step under way had finished: ``step`` steps of ``steps`` are
    done and, with a run directory, ``checkpoint`` holds them (training again resumes there)."""

    def __init__(self, step: int, steps: int, checkpoint: Path | None) -> None:
        saved = (f"; checkpoint {checkpoint}: train again with the same run_dir to resume"
                 if checkpoint is not None else " (no run_dir: nothing was saved)")
        super().__init__(f"training interrupted after step {step} of {steps}{saved}")
        self.step, self.steps, self.checkpoint = step, steps, checkpoint


def train(supernet: Supernet, loader: Iterable, *, optimizer: torch.optim.Optimizer,
          loss_fn: LossFn | None = None, steps: int | None = None, epochs: int | None = None,
          sampler: Sampler | None = None, distill: Distill | None = None,
          scheduler: Any = None, clip_grad_norm: float | None = None, amp: bool | torch.dtype = False,
          seed: int = 0, batch_fn: BatchFn | None = None, run_dir: str | Path | None = None,
          checkpoint_every: int | None = None, keep_checkpoints: int = 3, resume: bool = True,
          progress: bool | str = True, parallel: ForkJoin | bool | None = None,
          model: torch.nn.Module | None = None, accumulate: int = 1,
          validate: Validation | None = None, ema: EMA | None = None) -> TrainResult:
    """Train ``supernet`` on ``loader``.

    Each step takes one batch, runs every subnet of ``sampler.sample(step)`` (default: the sandwich rule
    with 4 subnets) on it, sums their losses (``loss_fn(output, target)``, a mean over the batch;
    distillation per ``distill``), accumulates the gradients in the shared weights and takes one
    ``optimizer`` step (then ``scheduler.step()``; a ``ReduceLROnPlateau`` steps after each validation
    instead, on the score of ``validate.monitor``); with ``accumulate`` > 1 a step takes that many batches,
    the same subnets on each, their losses divided by ``accumulate`` (a batch too large for memory, split).
    Stop after ``steps`` steps or ``epochs`` passes over ``loader``. ``amp``: autocast (True = bfloat16 on
    CPU, float16 with loss scaling on CUDA, or a dtype).
    ``seed`` fixes the data order (the loader is reseeded per epoch), dropout (reseeded per step and
    subnet) and sampling, so a run repeats exactly.

    With ``run_dir``: metrics go to ``run_dir/metrics.jsonl`` (and TensorBoard when installed), and a
    checkpoint is written every ``checkpoint_every`` steps and at the end into ``run_dir/checkpoints``
    (the last ``keep_checkpoints`` are kept). With ``resume`` (default) a run continues from the newest
    checkpoint there, giving the same weights as an uninterrupted run.

    Under ``torchrun`` (a process group of several ranks; ``parallel=None`` detects it, ``False`` turns it
    off, or pass a ``ForkJoin``) the step is forked: each rank runs its share of the sampled subnets on
    the same batch (every rank must load the same data) and the gradients are summed over ranks before
    the one optimizer step every rank takes (see ``osf.train.forkjoin``). Rank 0 writes the run
    directory, which must be on a filesystem every rank reads.

    Ctrl-C (in the main thread, without several ranks) lets the step under way finish, writes a
    checkpoint (with ``run_dir``) and raises ``TrainingInterrupted``, a ``KeyboardInterrupt``: the
    weights and optimizer are those of a whole number of steps. A second Ctrl-C stops at once.

    ``model``: a larger module that runs ``supernet`` inside it (a detector whose backbone it is, with
    post-processing osf cannot trace). Each subnet's loss is then ``loss_fn(model(*args, **kwargs),
    target)``, the supernet set to that subnet; ``model``'s other parameters train along (give the
    optimizer ``model.parameters()``), and checkpoints, resume and fork-join cover them too. Under several
    ranks each rank then runs whole batches: the subnets per step must be a multiple of the ranks.

    ``validate``: an ``osf.train.Validation`` scores the max and min subnets (or others) on a validation
    loader every so many steps and after the last; the scores join that step's metrics (``val_accuracy/max``
    ...) and the progress bar, and leave training as it was (same weights as without). Under several ranks
    every rank validates on its own (the same loader everywhere: the same scores).

    ``ema``: an ``osf.train.EMA`` of ``supernet`` (or of ``model``) updated after every optimizer step, saved
    in the checkpoints and restored on resume; ``validate`` then scores its averages too (``..._ema``).

    ``progress``: a progress bar on stderr (a string: the bar's title instead of "train supernet")."""
    sampler = sampler if sampler is not None else SandwichSampler(supernet.space, 4, seed)
    if model is not None and not any(m is supernet for m in model.modules()):
        raise ValueError(f"model= must hold the supernet as a submodule (e.g. detector.backbone = supernet); this "
                         f"{type(model).__name__} does not")
    net = model if model is not None else supernet  # what each subnet's forward calls
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if validate is not None:
        if model is not None:
            raise ValueError("validate= scores the supernet's own outputs, and with model= the scores come from the "
                             "model around it: train some steps at a time and score the model yourself in between")
        validate.named_archs(supernet)  # archs of another space are refused before training
        validate.check_loaders(loader)
        if plateau:
            validate.check_plateau(scheduler, supernet, ema)
    if ema is not None and ema.module is not net:
        raise ValueError(f"ema= averages a {type(ema.module).__name__}, not the module this run trains: build it as "
                         f"osf.EMA({'model' if model is not None else 'supernet'}) after creating the supernet")
    _check_optimizer(optimizer, supernet, model)
    if scheduler is not None and getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError("the scheduler was built for another optimizer than optimizer=, so the learning rate it "
                         "sets would never reach training; build it from the optimizer you pass")
    if plateau and validate is None:
        raise ValueError("ReduceLROnPlateau steps on a validation score: give validate=osf.Validation(val_loader, "
                         "every=...) too; it then steps after each validation, on the score of Validation.monitor "
                         "(default: the first subnet scored, the max)")
    if sampler.space is not supernet.space:
        raise ValueError("the sampler was built for another search space; build it from supernet.space")
    if loss_fn is None and not (distill is not None and distill.mode == "teacher" and distill.weight == 1.0):
        raise ValueError("train needs loss_fn (only pure teacher distillation, Distill(mode='teacher', "
                         "weight=1.0), trains without one)")
    steps_per_epoch = _length(loader)
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps= or epochs=")
    _check_settings(steps=steps, epochs=epochs, clip_grad_norm=clip_grad_norm, keep_checkpoints=keep_checkpoints,
                    checkpoint_every=checkpoint_every, accumulate=accumulate, amp=amp)
    if epochs is not None:
        if steps_per_epoch is None:
            raise ValueError("epochs= needs a loader with a length; give steps= instead")
        steps = epochs * steps_per_epoch // accumulate
        if steps == 0:
            raise ValueError(f"epochs={epochs} of {steps_per_epoch} batches make no step of accumulate={accumulate} "
                             "batches; train more epochs or accumulate fewer batches")
    assert steps is not None
    epoch_steps = steps_per_epoch // accumulate if steps_per_epoch is not None else None
    if validate is not None and validate.every == "epoch" and not epoch_steps:
        raise ValueError("Validation(every='epoch') needs a training loader with a length of at least accumulate="
                         f"{accumulate} batches; give every= a number of steps")
    fork = _fork_join(parallel)
    rank, world = (fork.rank, fork.world) if fork is not None else (0, 1)
    device = supernet.device()
    params = [p for p in net.parameters() if p.requires_grad]
    if fork is not None:
        fork.broadcast_state(net)
    run = _Run(Path(run_dir) if run_dir is not None else None, keep_checkpoints, write=rank == 0)
    start, position = 0, (0, 0)
    if run.dir is not None:
        existing = ckpt.checkpoints(run.ckpt_dir)
        if existing and not resume:
            raise FileExistsError(f"{run.ckpt_dir} already holds checkpoints; pass resume=True to continue that "
                                  "run, or choose another run_dir")
        if existing:
            state = ckpt.load(existing[-1], supernet, model)
            _check_same_run(state, sampler, seed, accumulate, ema, existing[-1])
            _warn_other_versions(state, existing[-1])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            if ema is not None:
                ema.load_state_dict(state["ema"])
            start, position = state["step"], tuple(state["position"])
            run.restore_rng = state["rng"]
            run.truncate_log(start)
    scaler, autocast = _mixed_precision(amp, device)
    batches = _Batches(loader, seed, *position)
    history: list[dict] = []
    title = progress if isinstance(progress, str) else "train supernet"
    bar = progress_bar(total=steps, initial=start, disable=not progress or rank != 0, desc=title,
                       unit="step")
    if run.restore_rng is not None:
        ckpt.set_rng_state(run.restore_rng)
    else:
        torch.manual_seed(seed)
    step = start
    last_ckpt = None
    validated: dict[str, float] = {}  # the latest validation scores, shown on the progress bar

    def save_checkpoint(position: tuple[int, int] | None = None) -> Path:
        return run.save(supernet, model, {
            "step": step, "position": list(position or batches.position()), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": ckpt.rng_state(), "sampler": sampler.settings(), "seed": seed, "accumulate": accumulate,
            "ema": ema.state_dict() if ema is not None else None, "versions": _versions()})

    def interrupted() -> TrainingInterrupted:
        saved = None
        if run.dir is not None:  # this step's periodic checkpoint, or the one the run resumed from, may be there
            saved = run.ckpt_dir / ckpt.name_for(step)
            if not saved.exists():  # its data position: the batches of the unfinished step are read again
                saved = save_checkpoint(step_began_at)
        return TrainingInterrupted(step, steps, saved)

    net.train()
    # a teacher is frozen: no dropout, and its BatchNorm statistics stay as they are (its mode comes back after)
    teacher = distill.teacher if distill is not None and distill.mode == "teacher" else None
    teacher_was_training = teacher is not None and teacher.training
    if teacher is not None:
        teacher.eval()
    stop = _StopRequest(enabled=fork is None, saves=run.dir is not None)
    try:
        stop.listen()
        while step < steps:
            step_began_at = batches.position()  # where the step under way takes its first batch
            if stop.requested:
                raise interrupted()
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            picks = sampler.sample(step)
            counters = fork.counters(net) if fork is not None else []
            losses, samples = torch.zeros(len(picks), dtype=torch.float64, device=device), 0
            for micro in range(accumulate):  # the same subnets on each batch of the step
                try:
                    batch = batches.next()
                except Exception:
                    if stop.requested:  # Ctrl-C also stopped the loader's worker processes
                        raise interrupted() from None
                    raise
                args, kwargs, target = split_batch(batch, batch_fn)
                args, kwargs, target = to_device(args, device), to_device(kwargs, device), to_device(target, device)
                if fork is not None and step == start and micro == 0:
                    fork.agree(_settings(supernet, model, sampler, optimizer, scheduler, loss_fn, distill, seed,
                                         steps, start, clip_grad_norm, amp, checkpoint_every, world, accumulate,
                                         ema, (args, kwargs, target)))
                rows = _rows(args, kwargs, model)
                items = labelled_weights(plan(picks, rows, rank, world), target, rows)
                if model is not None and any(item.weight != 1.0 for item in items):
                    raise ValueError(f"with model=, every rank runs whole batches: {len(picks)} subnets per step "
                                     f"cannot be dealt out over {world} ranks; sample a multiple of {world} subnets "
                                     "per step")
                with explained(batch, batch_fn):
                    losses += _train_step(supernet, net, picks, items, rows, args, kwargs, target, loss_fn, distill,
                                          scaler, autocast, seed, step, micro, 1 / accumulate)
                samples += rows
            t_join = time.perf_counter()
            if fork is not None:
                losses = fork.join(params, losses)
                fork.sync_buffers(net, counters)
            join_seconds = time.perf_counter() - t_join
            _check_finite(losses, picks, step + 1)  # counted from 1, as the log and the progress bar
            lr = optimizer.param_groups[0]["lr"]  # the rate of this step (the scheduler sets the next one)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if scheduler is not None and not plateau:
                scheduler.step()
            if ema is not None:
                ema.update()
            step += 1
            seconds = time.perf_counter() - t0
            by_role: dict[str, list[float]] = {}
            for (role, _), value in zip(picks, losses.tolist()):
                by_role.setdefault(role, []).append(value)
            role_loss = {r: sum(v) / len(v) for r, v in by_role.items()}
            record = {"step": step, "lr": lr,
                      **{f"loss/{r}": v for r, v in role_loss.items()},
                      "samples_per_s": round(samples * len(picks) / seconds, 2), "seconds": round(seconds, 4)}
            if fork is not None:
                record["join_seconds"] = round(join_seconds, 4)
                if fork.measure_wait:
                    record["wait_seconds"] = round(fork.wait_seconds, 4)
            bar.update(1)
            if validate is not None and validate.due(step, steps, epoch_steps):
                describe(bar, f"{title} (validating)")
                try:
                    validated = validate.scores(supernet, loader, ema)
                except Exception as e:
                    if run.dir is not None:  # the trained step is kept: fix the validation and train again
                        last_ckpt = save_checkpoint()
                        e.add_note(f"osf.train: validating after step {step}; the weights of that step are saved in "
                                   f"{last_ckpt}: train again with the same run_dir to resume")
                    raise
                record |= validated
                if plateau:  # on the new weights' score; the rate it sets is the next step's
                    scheduler.step(validated[validate.monitor_key(supernet)])
                describe(bar, title)
            history.append(record)
            run.log(record)
            bar.set_postfix({r: f"{v:.4f}" for r, v in role_loss.items()}
                            | {"samples/s": f"{record['samples_per_s']:.0f}"}
                            | {k.removeprefix("val_"): f"{v:.4f}" for k, v in validated.items()}, refresh=False)
            if run.dir is not None and (step == steps or checkpoint_every and step % checkpoint_every == 0):
                last_ckpt = save_checkpoint()
        if fork is not None:
            fork.barrier()  # rank 0's last checkpoint exists before any rank returns
    finally:
        stop.close()
        bar.close()
        run.close()
        if teacher is not None:
            teacher.train(teacher_was_training)
    return TrainResult(step, history, last_ckpt, start)


def _fork_join(parallel: ForkJoin | bool | None) -> ForkJoin | None:
    if isinstance(parallel, ForkJoin):
        return parallel
    if parallel is False:
        return None
    if parallel is True and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("parallel=True needs a process group: launch under torchrun and call "
                           "osf.train.init_process_group() first")
    several_ranks = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return ForkJoin() if several_ranks or parallel is True else None


def _settings(supernet: Supernet, model: torch.nn.Module | None, sampler: Sampler,
              optimizer: torch.optim.Optimizer, scheduler: Any, loss_fn: LossFn | None, distill: Distill | None,
              seed: int, steps: int, start: int, clip_grad_norm: float | None, amp: Any,
              checkpoint_every: int | None, world: int, accumulate: int, ema: EMA | None,
              first_batch: Any) -> dict[str, Any]:
    """What every rank of a distributed run must agree on."""
    return {
        "osf": _version(), "torch": torch.__version__, "world_size": world, "model": ckpt.fingerprint(supernet),
        "outer": {k: list(t.shape) for k, t in ckpt.outer_tensors(model, supernet).items()},
        "sampler": sampler.settings(), "seed": seed, "steps": steps, "resumed_from_step": start,
        "optimizer": [type(optimizer).__name__] + [{k: v for k, v in g.items() if k != "params"}
                                                   | {"n_params": len(g["params"])} for g in optimizer.param_groups],
        "scheduler": type(scheduler).__name__ if scheduler is not None else None,
        "loss_fn": getattr(loss_fn, "__qualname__", type(loss_fn).__name__),
        "distill": None if distill is None else [distill.mode, distill.loss, distill.temperature, distill.field,
                                                 distill.weight, distill.dim],
        "clip_grad_norm": clip_grad_norm, "amp": str(amp), "checkpoint_every": checkpoint_every,
        "accumulate": accumulate, "ema": ema.settings() if ema is not None else None,
        "first_batch": digest(first_batch),
    }


def _version() -> str:
    try:
        return importlib.metadata.version("osf")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _versions() -> dict[str, str]:
    """What a run's arithmetic depends on besides its settings: a resume under others rounds otherwise."""
    return {"osf": _version(), "torch": torch.__version__, "python": platform.python_version()}


def _warn_other_versions(state: dict, path: Path) -> None:
    saved = state.get("versions")  # checkpoints written before osf recorded them: unknown
    if saved is not None and saved != _versions():
        changed = ", ".join(f"{k} {saved.get(k)} -> {v}" for k, v in _versions().items() if saved.get(k) != v)
        warnings.warn(f"resuming from {path}, written under other versions ({changed}): the steps from here may "
                      "round otherwise than an uninterrupted run would (resume is bit-identical under the same "
                      "versions)", stacklevel=3)


def _item_seed(seed: int, step: int, index: int, micro: int = 0) -> int:
    """The torch seed of subnet ``index`` at ``step`` (on its ``micro``-th batch of the step): dropout does not
    depend on which rank runs it."""
    key = f"osf-step:{seed}:{step}:{index}" + (f":{micro}" if micro else "")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def _train_step(supernet: Supernet, net: torch.nn.Module, picks: list[tuple[str, Arch]], items: list[WorkItem],
                rows: int, args: tuple, kwargs: dict, target: Any, loss_fn: LossFn | None, distill: Distill | None,
                scaler, autocast, seed: int, step: int, micro: int = 0, scale: float = 1.0) -> torch.Tensor:
    """Forward (of ``net``: the supernet, or the model around it) and backward of this rank's work items on
    the ``micro``-th batch of the step, each loss times ``scale``; returns each sampled subnet's loss share
    (float64, zero for subnets other ranks run)."""
    device = supernet.device()
    losses = torch.zeros(len(picks), dtype=torch.float64, device=device)
    soft = None
    if distill is not None and distill.mode == "teacher" and items:
        with torch.no_grad(), autocast():  # the teacher in eval mode (``train`` sets it for the run)
            soft = select_output(distill.teacher(*args, **kwargs), distill.field).detach()
    inplace = distill is not None and distill.mode == "inplace"
    if inplace and (not picks or picks[0][0] != "max"):
        raise ValueError("in-place distillation needs the max subnet first in every step (role 'max'); use a "
                         "sandwich-style sampler")
    for item in items:
        if item.start == item.stop:
            continue
        if inplace and item.index > 0 and soft is None:  # the max subnet ran elsewhere: its outputs, again
            soft = _soft_targets(supernet, net, picks[0][1], args, kwargs, distill, autocast, seed, step, micro)
        part = functools.partial(take_rows, start=item.start, stop=item.stop, rows=rows)
        torch.manual_seed(_item_seed(seed, step, item.index, micro))
        try:
            with supernet.set_arch(item.arch), autocast():
                out = net(*part(args), **part(kwargs))
                if distill is None or soft is None:
                    loss = loss_fn(out, part(target))
                elif distill.weight == 1.0 or loss_fn is None:
                    loss = distill(out, part(soft), part(target))
                else:
                    loss = (distill.weight * distill(out, part(soft), part(target))
                            + (1 - distill.weight) * loss_fn(out, part(target)))
                _check_loss(loss)
                if item.weight * scale != 1.0:
                    loss = loss * (item.weight * scale)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        except Exception as e:
            e.add_note(f"{STEP_NOTE} {step + 1}, running the {picks[item.index][0]} subnet{ARCH_NOTE}{item.arch.key()}")
            raise
        if inplace and item.index == 0 and item.start == 0 and item.stop == rows:
            soft = select_output(out, distill.field).detach()
        losses[item.index] += loss.detach().to(torch.float64)
    return losses


def _check_loss(loss: Any) -> None:
    """A subnet's loss must be one differentiable number; say what is wrong where torch's error would not."""
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn returned a {type(loss).__name__}; return a torch scalar tensor computed from the "
                        "model's outputs (no float() or .item() on it)")
    if loss.numel() != 1:
        raise ValueError(f"loss_fn returned a tensor shaped {list(loss.shape)}; return one number per batch (its "
                         "mean: reduction='mean', or .mean())")
    if not loss.requires_grad:
        raise ValueError("loss_fn returned a tensor without gradients (detached, or computed through argmax or "
                         "integers): compute it from the model's outputs with differentiable operations")


def _soft_targets(supernet: Supernet, net: torch.nn.Module, max_arch: Arch, args: tuple, kwargs: dict,
                  distill: Distill, autocast, seed: int, step: int, micro: int = 0) -> Any:
    """The max subnet's outputs on the whole batch (``net``'s: the supernet or the model around it), as its
    own run computes them (same dropout seed); running statistics are left untouched, since that subnet's
    update is another rank's."""
    torch.manual_seed(_item_seed(seed, step, 0, micro))
    with ckpt.kept_buffers(net), torch.no_grad(), supernet.set_arch(max_arch), autocast():
        return select_output(net(*args, **kwargs), distill.field).detach()


def _check_optimizer(optimizer: torch.optim.Optimizer, supernet: Supernet, model: torch.nn.Module | None) -> None:
    """Refuse an optimizer that holds none of the supernet's trainable parameters (built on the original
    model's: the supernet has its own copy, so training would silently change nothing); warn about trainable
    parameters it leaves out, of the supernet or of ``model`` around it: they get gradients every step but
    never change."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    own = [(n, p) for n, p in supernet.named_parameters() if p.requires_grad]
    missed = [n for n, p in own if id(p) not in held]
    if own and len(missed) == len(own):
        raise ValueError("the optimizer holds none of the supernet's parameters, so training would change nothing "
                         "(osf.Supernet trains its own copy of the model's weights, not the model's); build it from "
                         f"supernet.parameters(){' (or model.parameters())' if model is not None else ''} after "
                         "creating the supernet, or set requires_grad=False on the supernet's parameters to keep them "
                         "as they are")
    owner, source = "the supernet", "supernet"
    if not missed and model is not None:
        covered = held | {id(p) for _, p in own}
        missed = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in covered]
        owner, source = "the model around the supernet", "model"
    if missed:
        warnings.warn(f"{len(missed)} trainable parameters of {owner} are not in the optimizer (e.g. {missed[0]!r}), "
                      f"so they will not train; build it from {source}.parameters(), or set requires_grad=False on "
                      "those you mean to freeze", stacklevel=3)


def _rows(args: tuple, kwargs: dict, model: torch.nn.Module | None) -> int:
    """The batch size: the first input tensor's first dim; for a ``model=`` called with a list first (a
    detector's list of images), that list's length. With ``model=`` it only counts samples per second:
    each rank runs whole batches."""
    if model is not None and args and isinstance(args[0], (list, tuple)):
        return len(args[0])
    return batch_size(args, kwargs)


def _check_finite(losses: torch.Tensor, picks: list[tuple[str, Arch]], step: int) -> None:
    bad = [i for i, v in enumerate(losses.tolist()) if not math.isfinite(v)]
    if bad:
        role, arch = picks[bad[0]]
        raise FloatingPointError(f"the loss is {losses[bad[0]].item()} at step {step} for the {role} subnet; arch: "
                                 f"{arch.key()}; lower the learning rate, clip gradients (clip_grad_norm=) "
                                 "or check the data")


def _check_same_run(state: dict, sampler: Sampler, seed: int, accumulate: int, ema: EMA | None, path: Path) -> None:
    saved = state.get("accumulate", 1)  # checkpoints written before the setting: one batch per step
    saved_ema = state.get("ema")  # checkpoints written before the setting hold none
    saved_ema = {k: saved_ema[k] for k in ("decay", "warmup")} if saved_ema else None
    this_ema = ema.settings() if ema is not None else None
    if state["sampler"] != sampler.settings() or state["seed"] != seed or saved != accumulate or saved_ema != this_ema:
        raise ckpt.CheckpointError(f"checkpoint {path} comes from a run with sampler {state['sampler']}, seed "
                                   f"{state['seed']}, accumulate {saved} and ema {saved_ema}; this run has "
                                   f"{sampler.settings()}, seed {seed}, accumulate {accumulate} and ema {this_ema}: "
                                   "resume with the same settings, or use another run_dir")


def _length(loader: Iterable) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _check_settings(*, amp: Any, **counts: float | None) -> None:
    """Refuse settings that would train otherwise than asked: a negative clipping norm flips the gradients'
    sign, ``keep_checkpoints=0`` kept every checkpoint, a string ``amp`` chose a dtype by itself."""
    for name, value in counts.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
            raise ValueError(f"train: {name} must be a positive number, got {value!r}")
        if name in ("steps", "keep_checkpoints", "checkpoint_every", "accumulate") and value != int(value):
            raise ValueError(f"train: {name} must be a whole number, got {value!r}")
    if not isinstance(amp, (bool, torch.dtype)):
        raise ValueError(f"train: amp must be True, False or a torch.dtype (torch.bfloat16, torch.float16), "
                         f"got {amp!r}")


def _mixed_precision(amp: bool | torch.dtype, device: torch.device):
    if amp is False:
        return None, contextlib.nullcontext
    dtype = amp if isinstance(amp, torch.dtype) else (torch.float16 if device.type == "cuda" else torch.bfloat16)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    return scaler, lambda: torch.autocast(device.type, dtype=dtype)


class _StopRequest:
    """Once ``listen`` was called (in the main thread, where SIGINT still has Python's default handler, and
    ``enabled``), the first Ctrl-C only sets ``requested`` and says so; a second one raises
    ``KeyboardInterrupt`` at once; data-loader workers forked meanwhile ignore it. ``close`` puts the default
    handler back."""

    def __init__(self, enabled: bool, saves: bool) -> None:
        self.enabled, self.requested, self.previous, self.pid = enabled, False, None, 0
        self.message = (f"\nCtrl-C: stopping after the step under way{' and saving a checkpoint' if saves else ''} "
                        "(Ctrl-C again stops at once, losing the steps since the last checkpoint)\n").encode()

    def listen(self) -> None:
        if (self.enabled and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.pid, self.previous = os.getpid(), signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self.pid:  # a data loader's worker, forked with this handler: the main process stops
            return
        if self.requested:
            self.close()
            raise KeyboardInterrupt
        self.requested = True
        # os.write, not print: the handler may run while the progress bar is halfway through writing to stderr
        os.write(2, self.message)

    def close(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


class _Batches:
    """Endless batches of ``loader``. Each epoch starts under a torch seed derived from ``(seed, epoch)``,
    and the random draws a loader makes when it starts (shuffling, worker seeds) happen inside that
    window, so a resumed run sees the same batches (it skips the ones already used) and the global
    random stream (dropout, augmentations) is untouched."""

    def __init__(self, loader: Iterable, seed: int, epoch: int, index: int):
        self.loader, self.seed, self.epoch, self.index = loader, seed, epoch, index
        self.it: Any = None
        self.pending: list = []

    def position(self) -> tuple[int, int]:
        return self.epoch, self.index

    def _start_epoch(self) -> None:
        rng = torch.get_rng_state()
        epoch_seed = (self.seed * 1_000_003 + self.epoch) % 2**63
        torch.manual_seed(epoch_seed)
        generator = getattr(self.loader, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(epoch_seed)
        try:
            self.it = iter(self.loader)
            for _ in range(self.index):
                next(self.it)
            self.pending = [next(self.it)]
        except StopIteration:
            if self.index == 0:
                raise ValueError("the training loader yielded no batch") from None
            self.epoch, self.index = self.epoch + 1, 0  # resumed exactly at the end of an epoch
            self._start_epoch()
        finally:
            torch.set_rng_state(rng)

    def next(self) -> Any:
        if self.it is None:
            self._start_epoch()
        if self.pending:
            batch = self.pending.pop()
        else:
            try:
                batch = next(self.it)
            except StopIteration:
                self.epoch, self.index = self.epoch + 1, 0
                self._start_epoch()
                batch = self.pending.pop()
        self.index += 1
        return batch


class _Run:
    """The run directory: metrics log, TensorBoard (if installed), checkpoints."""

    def __init__(self, directory: Path | None, keep: int, write: bool = True):
        self.dir, self.keep, self.restore_rng, self.write = directory, keep, None, write
        self.ckpt_dir = directory / "checkpoints" if directory is not None else None
        self.writer = None
        if directory is not None and write:
            directory.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(ImportError):
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(str(directory / "tensorboard"))

    def log(self, record: dict) -> None:
        if self.dir is None or not self.write:
            return
        with open(self.dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self.writer.add_scalar(k, v, record["step"])

    def truncate_log(self, step: int) -> None:
        """Drop log lines of steps after ``step`` (written after the checkpoint a run resumes from)."""
        path = self.dir / "metrics.jsonl"
        if self.write and path.exists():
            lines = [ln for ln in path.read_text().splitlines() if _logged_step(ln) <= step]
            path.write_text("".join(ln + "\n" for ln in lines))

    def save(self, supernet: Supernet, model: torch.nn.Module | None, state: dict) -> Path:
        if not self.write:  # another rank (0) writes it
            return self.ckpt_dir / ckpt.name_for(state["step"])
        path = ckpt.save(self.ckpt_dir / ckpt.name_for(state["step"]), supernet, state, model)
        for old in ckpt.checkpoints(self.ckpt_dir)[:-self.keep]:
            old.unlink()
        return path

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _logged_step(line: str) -> float:
    """The step of a metrics line; a line cut short by a crash counts as after every checkpoint."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf
