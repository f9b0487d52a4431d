"""Supernet training: samplers, distillation, BN recalibration, checkpoints and bit-identical resume,
and the errors a user meets."""
from __future__ import annotations

import copy
import json
import math
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import osf
from osf.cli.builtin import TinyViT
from osf.train import CheckpointError, accuracy
from osf.train.loop import _rows


class Net(nn.Module):
    def __init__(self, width=16, classes=5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(width, 2 * width, 1), nn.BatchNorm2d(2 * width),
                                                   nn.ReLU(), nn.Conv2d(2 * width, width, 1)) for _ in range(2)])
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(width, classes)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = x + b(x)
        return self.head(self.drop(x.mean((2, 3))))


def make(seed=0, **options) -> osf.Supernet:
    torch.manual_seed(seed)
    return osf.Supernet(Net().train(), (torch.randn(2, 3, 8, 8),), multiple_of=4, **options)


def data(n=40, batch=8, seed=1) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0].mean((1, 2)) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True)


def opt_and_sched(sn):
    opt = torch.optim.SGD(sn.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)


def test_training_reduces_the_loss_of_every_role():
    sn = make()
    opt, sched = opt_and_sched(sn)
    result = osf.train(sn, data(), optimizer=opt, scheduler=sched, loss_fn=F.cross_entropy, steps=40,
                       progress=False)
    first, last = result.history[:5], result.history[-5:]
    for role in ("loss/max", "loss/min", "loss/random"):
        assert sum(r[role] for r in last) < sum(r[role] for r in first), role
    assert result.step == 40 and len(result.history) == 40


def test_the_progress_bar_is_redrawn_now_and_then_in_a_log_not_at_every_step(capsys):
    """Where stderr is no terminal (a log file, CI, nohup), the bar is redrawn every 10 s at most, and the
    postfix (loss per role, throughput) rides on those redraws: it used to draw twice a step."""
    sn = make()
    opt, _ = opt_and_sched(sn)
    steps = 60
    osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=steps,
              validate=osf.Validation(data(n=8), every=1))  # whose "(validating)" is no redraw of its own either
    err = capsys.readouterr().err
    last = err.split("\r")[-1]
    assert f"{steps}/{steps}" in last and "max=" in last and "samples/s=" in last, last  # the final state, whole
    assert err.count("\r") < steps // 4, err.count("\r")


def _resume_equals(reference: osf.Supernet, loader: DataLoader, run_dir: Path, checkpoint_every: int,
                   resumed_from: int) -> None:
    """Training 13 steps in ``run_dir`` resumes at ``resumed_from`` and ends with ``reference``'s weights."""
    resumed = make(seed=5)  # a fresh process would start from other weights: the checkpoint replaces them
    opt, sched = opt_and_sched(resumed)
    result = osf.train(resumed, loader, optimizer=opt, scheduler=sched, loss_fn=F.cross_entropy, steps=13,
                       run_dir=run_dir, checkpoint_every=checkpoint_every, progress=False)
    assert result.resumed_from == resumed_from
    for k, t in reference.tensors().items():
        assert torch.equal(t, resumed.tensors()[k]), k


def test_resume_after_a_crash_gives_bit_identical_weights(tmp_path):
    loader = data()
    sn = make()
    opt, sched = opt_and_sched(sn)
    osf.train(sn, loader, optimizer=opt, scheduler=sched, loss_fn=F.cross_entropy, steps=13,
              run_dir=tmp_path / "a", checkpoint_every=4, progress=False)

    calls = {"n": 0}

    def crashing_loss(out, target):
        calls["n"] += 1
        if calls["n"] > 4 * 7:  # 4 subnets per step: dies during step 8, after the checkpoint of step 4
            raise KeyboardInterrupt
        return F.cross_entropy(out, target)

    crashed = make()
    opt, sched = opt_and_sched(crashed)
    with pytest.raises(KeyboardInterrupt):
        osf.train(crashed, loader, optimizer=opt, scheduler=sched, loss_fn=crashing_loss, steps=13,
                  run_dir=tmp_path / "b", checkpoint_every=4, progress=False)
    _resume_equals(sn, loader, tmp_path / "b", checkpoint_every=4, resumed_from=4)
    log = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == list(range(1, 14))
    ckpts = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir())
    assert ckpts == ["step-000000008.safetensors", "step-000000012.safetensors", "step-000000013.safetensors"]


def test_validation_while_training_logs_scores_and_leaves_training_as_it_was(tmp_path):
    """Scores of the max and min subnets every 5 steps and after the last, equal to osf.evaluate's on the weights
    of those steps; training's BatchNorm statistics, random draws (dropout, a shuffled validation loader drawing
    from the global generator) and data order are untouched: the same weights as a run without validation."""
    loader, val = data(), data(n=24, seed=7)
    plain = make()
    opt, sched = opt_and_sched(plain)
    osf.train(plain, loader, optimizer=opt, scheduler=sched, loss_fn=F.cross_entropy, steps=13, progress=False)
    plain_rng = torch.get_rng_state()
    sn = make()
    opt, sched = opt_and_sched(sn)
    result = osf.train(sn, loader, optimizer=opt, scheduler=sched, loss_fn=F.cross_entropy, steps=13,
                       validate=osf.Validation(val, every=5), run_dir=tmp_path, checkpoint_every=100, progress=False)
    for k, t in plain.tensors().items():
        assert torch.equal(t, sn.tensors()[k]), k
    assert torch.equal(torch.get_rng_state(), plain_rng)
    scored = {r["step"]: r for r in result.history if "val_accuracy/max" in r}
    assert sorted(scored) == [5, 10, 13]
    assert all(0 <= r[f"val_accuracy/{n}"] <= 1 for r in scored.values() for n in ("max", "min"))
    for name, arch in (("max", sn.space.max()), ("min", sn.space.min())):
        assert scored[13][f"val_accuracy/{name}"] == osf.evaluate(sn, arch, val, calib_loader=loader)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in logged if "val_accuracy/min" in r] == list(scored.values())
    # the scores of step 5 are those of the weights of step 5
    five = make()
    opt, sched = opt_and_sched(five)
    osf.train(five, loader, optimizer=opt, scheduler=sched, loss_fn=F.cross_entropy, steps=5, progress=False)
    assert scored[5]["val_accuracy/min"] == osf.evaluate(five, five.space.min(), val, calib_loader=loader)


def test_validation_by_a_metric_function_on_chosen_archs_and_its_errors(tmp_path):
    loader, val = data(), data(n=16, seed=7)
    sn = make()
    half = sn.space.sample(3)

    def neg_loss(out, target):
        return -F.cross_entropy(out, target).item()

    opt, _ = opt_and_sched(sn)
    result = osf.train(sn, loader, optimizer=opt, loss_fn=F.cross_entropy, steps=3, progress=False,
                       validate=osf.Validation(val, archs={"mid": half}, metric=neg_loss, calib_batches=2))
    assert [k for k in result.history[-1] if k.startswith("val_")] == ["val_neg_loss/mid"]
    assert not any(k.startswith("val_") for r in result.history[:-1] for k in r)  # every=None: after the last step
    assert result.history[-1]["val_neg_loss/mid"] == osf.evaluate(sn, half, val, metric=neg_loss,
                                                                     calib_loader=loader, calib_batches=2)
    for bad, said in ((dict(every=0), "every must be"), (dict(metric="top5"), "top5"),
                      (dict(metric=3), "metric must be"), (dict(archs={"a": {"x": 1}}), "not an osf.Arch"),
                      (dict(archs=[sn.space.max()]), "dict of name")):
        with pytest.raises(ValueError, match=said):
            osf.train(sn, loader, optimizer=opt, loss_fn=F.cross_entropy, steps=1, progress=False,
                      validate=osf.Validation(val, **bad))
    # every="epoch": after each pass over the training loader (5 batches: 5 steps, or 2 of 2 batches each)
    for accumulate, steps, expected in ((1, 12, [5, 10, 12]), (2, 5, [2, 4, 5])):
        result = osf.train(sn, loader, optimizer=opt, loss_fn=F.cross_entropy, steps=steps, progress=False,
                           accumulate=accumulate, validate=osf.Validation(val, every="epoch", calib_batches=1))
        assert [r["step"] for r in result.history if "val_accuracy/max" in r] == expected
    with pytest.raises(ValueError, match=r"Validation\(every='epoch'\) needs a training loader with a length"):
        osf.train(sn, (b for b in loader), optimizer=opt, loss_fn=F.cross_entropy, steps=1, progress=False,
                  validate=osf.Validation(val, every="epoch", calib_loader=loader))
    for bad in ("week", 1.5, True):
        with pytest.raises(ValueError, match="every must be a whole number of steps >= 1, 'epoch'"):
            osf.Validation(val, every=bad)
    with pytest.raises(ValueError, match="iterator"):
        osf.Validation(iter(val))
    with pytest.raises(ValueError, match="training loader .* iterator"):
        osf.train(sn, iter(loader), optimizer=opt, loss_fn=F.cross_entropy, steps=1, progress=False,
                  validate=osf.Validation(val))
    workers = DataLoader(loader.dataset, batch_size=8, num_workers=1, persistent_workers=True)
    with pytest.raises(ValueError, match="persistent workers"):
        osf.train(sn, workers, optimizer=opt, loss_fn=F.cross_entropy, steps=1, progress=False,
                  validate=osf.Validation(val))
    # a validation that fails keeps the step it followed: the run resumes after it
    before = {k: t.clone() for k, t in sn.tensors().items()}

    def broken(out, target):
        raise RuntimeError("metric bug")

    with pytest.raises(RuntimeError, match="metric bug") as caught:
        osf.train(sn, loader, optimizer=opt, loss_fn=F.cross_entropy, steps=2, progress=False, run_dir=tmp_path,
                  validate=osf.Validation(val, every=1, metric=broken))
    assert "validating after step 1" in "".join(caught.value.__notes__)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-000000001.safetensors"]
    assert any(not torch.equal(t, sn.tensors()[k]) for k, t in before.items())
    resumed = osf.train(sn, loader, optimizer=opt, loss_fn=F.cross_entropy, steps=2, progress=False,
                        run_dir=tmp_path)
    assert resumed.resumed_from == 1 and resumed.step == 2


def test_a_plateau_scheduler_steps_on_the_monitored_validation_score_and_resumes(tmp_path):
    """``ReduceLROnPlateau`` steps after each validation on ``Validation.monitor``'s score (not after every
    step): the logged rates replay from the logged scores; its state is checkpointed, so a run cut in two
    gives the same rates and weights. Refused without validate=, in mode 'min' for accuracy, and with a
    monitor that is never scored."""
    loader, val = data(), data(n=16, seed=7)

    def run(steps, run_dir=None, sn=None):
        sn = sn or make()
        opt = torch.optim.SGD(sn.parameters(), lr=0.1)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0)
        return sn, osf.train(sn, loader, optimizer=opt, scheduler=plateau, loss_fn=F.cross_entropy, steps=steps,
                             validate=osf.Validation(val, every=2, monitor="min", calib_batches=1), run_dir=run_dir,
                             progress=False)

    whole, result = run(10)
    lrs, expected, best, lr = [r["lr"] for r in result.history], [], None, 0.1
    for r in result.history:
        expected.append(lr)
        if "val_accuracy/min" in r:
            if best is None or r["val_accuracy/min"] > best * (1 + 1e-4):
                best = r["val_accuracy/min"]
            else:
                lr *= 0.5
    assert lrs == pytest.approx(expected) and min(lrs) < 0.1  # it did cut the rate
    halves, run_dir = make(), tmp_path / "run"
    run(6, run_dir, halves)
    resumed, second = run(10, run_dir, make(seed=5))  # other initial weights: all comes from the checkpoint
    assert second.resumed_from == 6 and [r["lr"] for r in second.history] == lrs[6:]
    assert all(torch.equal(t, resumed.tensors()[k]) for k, t in whole.tensors().items())
    sn = make()
    opt = torch.optim.SGD(sn.parameters(), lr=0.1)
    for plateau, validate, said in (
            (dict(mode="max"), None, "give validate="), (dict(mode="min"), {}, "mode='max'"),
            (dict(mode="max"), dict(monitor="nope"), "monitor 'nope' is not scored")):
        with pytest.raises(ValueError, match=said):
            osf.train(sn, loader, optimizer=opt, loss_fn=F.cross_entropy, steps=1, progress=False,
                      scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau(opt, **plateau),
                      validate=osf.Validation(val, **validate) if validate is not None else None)


def test_ema_averages_the_weights_with_warmup():
    layer = nn.Linear(2, 2)
    w0 = layer.weight.detach().clone()
    ema = osf.EMA(layer, decay=0.9)
    assert ema.rate() == pytest.approx(1 / 10)  # warm-up: (1 + n) / (10 + n) below decay
    with torch.no_grad():
        layer.weight.add_(1.0)
    ema.update()
    assert torch.allclose(ema.shadow["weight"], 0.1 * w0 + 0.9 * (w0 + 1))
    ema.updates = 1000
    assert ema.rate() == 0.9
    plain = osf.EMA(layer, decay=0.5, warmup=False)
    with torch.no_grad():
        layer.weight.add_(2.0)
    plain.update()
    assert torch.allclose(plain.shadow["weight"], w0 + 2) and plain.rate() == 0.5
    with plain.applied():
        assert torch.equal(layer.weight, plain.shadow["weight"])
    assert torch.allclose(layer.weight, w0 + 3)  # the trained weights are back
    for decay in (0, 1, 1.5, True):
        with pytest.raises(ValueError, match="decay must lie strictly between 0 and 1"):
            osf.EMA(layer, decay=decay)
    # bfloat16 weights: averaged in float32, where a step of 1e-4 x the change still counts
    half = nn.Linear(2, 2).to(torch.bfloat16)
    slow = osf.EMA(half, decay=0.9999, warmup=False)
    start = slow.shadow["weight"].clone()
    with torch.no_grad():
        half.weight.add_(1.0)
    slow.update()
    assert slow.shadow["weight"].dtype == torch.float32
    assert torch.allclose(slow.shadow["weight"] - start, torch.full_like(start, 1e-4), atol=2e-5)


def test_training_with_ema_resumes_bit_identically_and_validates_and_loads_the_averages(tmp_path, monkeypatch):
    loader, val = data(), data(n=16, seed=7)

    def run(run_dir, loss_fn=F.cross_entropy, ema_of=None, decay=0.8):
        sn = make()
        opt, sched = opt_and_sched(sn)
        ema = osf.EMA(ema_of or sn, decay=decay)
        return sn, ema, osf.train(sn, loader, optimizer=opt, scheduler=sched, loss_fn=loss_fn, steps=9, progress=False,
                                  run_dir=run_dir, checkpoint_every=4, ema=ema, validate=osf.Validation(val))

    sn, ema, result = run(tmp_path / "a")
    trained = {k: t.clone() for k, t in sn.tensors().items()}  # before evaluate recalibrates BatchNorm below
    assert ema.updates == 9 and any(not torch.equal(ema.shadow[n], p) for n, p in sn.named_parameters())
    last = result.history[-1]
    assert set(k for k in last if k.startswith("val_")) == {f"val_accuracy/{n}{e}" for n in ("max", "min")
                                                            for e in ("", "_ema")}
    with ema.applied():
        assert last["val_accuracy/min_ema"] == osf.evaluate(sn, sn.space.min(), val, calib_loader=loader)
    assert last["val_accuracy/min"] == osf.evaluate(sn, sn.space.min(), val, calib_loader=loader)

    calls = {"n": 0}

    def crashing_loss(out, target):
        calls["n"] += 1
        if calls["n"] > 4 * 6:  # dies in step 7, after the checkpoint of step 4
            raise KeyboardInterrupt
        return F.cross_entropy(out, target)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", crashing_loss)
    resumed, resumed_ema, again = run(tmp_path / "b")
    assert again.resumed_from == 4 and resumed_ema.updates == 9
    for n, t in ema.shadow.items():
        assert torch.equal(t, resumed_ema.shadow[n]), n
    for k, t in trained.items():
        assert torch.equal(t, resumed.tensors()[k]), k

    fresh = make(seed=3)
    assert osf.load_weights(fresh, tmp_path / "a", ema=True) == 9
    for n, p in fresh.named_parameters():
        assert torch.equal(p, ema.shadow[n]), n
    from osf.train import loop  # a resume under other versions is warned about, not refused
    real = loop._versions()
    monkeypatch.setattr(loop, "_versions", lambda: {**real, "torch": "9.9.9"})
    with pytest.warns(UserWarning, match=rf"written under other versions \(torch {re.escape(torch.__version__)} -> "
                                         r"9.9.9\): the steps from here may round otherwise"):
        run(tmp_path / "b", decay=0.8)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="ema 0.8|'decay': 0.8"):
        run(tmp_path / "a", decay=0.9)  # resumed with another decay
    plain = make()
    opt, _ = opt_and_sched(plain)
    osf.train(plain, loader, optimizer=opt, loss_fn=F.cross_entropy, steps=1, progress=False, run_dir=tmp_path / "c")
    with pytest.raises(CheckpointError, match="holds no moving averages"):
        osf.load_weights(plain, tmp_path / "c", ema=True)
    with pytest.raises(ValueError, match="ema= averages a Linear, not the module this run trains"):
        run(None, ema_of=nn.Linear(2, 2))


class MLP(nn.Module):  # no BatchNorm, no dropout: a batch's mean loss is the mean of its halves' mean losses
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.c(torch.relu(self.b(torch.relu(self.a(x)))))


class _StopsAtBatch:
    """A loader whose worker processes a Ctrl-C stops while it reads batch ``at`` (counted over epochs)."""

    def __init__(self, loader: DataLoader, at: int):
        self.loader, self.at, self.read = loader, at, 0
        self.generator = loader.generator  # reseeded per epoch by osf.train, as the loader's own

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.read += 1
            if self.read == self.at:
                signal.raise_signal(signal.SIGINT)
                raise RuntimeError("DataLoader worker (pid 123) exited unexpectedly")
            yield batch


def _accumulated(batch: int, accumulate: int, steps: int = 4, run_dir=None, loss_fn=F.cross_entropy,
                 stop_at: int | None = None, **kw):
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(3))
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    torch.manual_seed(0)
    sn = osf.Supernet(MLP(), (x[:2],), multiple_of=4)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, generator=torch.Generator())
    loader = _StopsAtBatch(loader, stop_at) if stop_at is not None else loader
    result = osf.train(sn, loader, optimizer=torch.optim.SGD(sn.parameters(), lr=0.1, momentum=0.9), loss_fn=loss_fn,
                       steps=steps, accumulate=accumulate, run_dir=run_dir, progress=False, **kw)
    return sn, result


def test_accumulating_batches_trains_as_one_larger_batch_and_resumes_bit_identically(tmp_path, ctrl_c):
    whole, _ = _accumulated(16, 1)
    split, result = _accumulated(8, 2)
    for (name, a), b in zip(whole.state_dict().items(), split.state_dict().values()):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-5, msg=lambda m: f"{name}: {m}")
    assert [r["step"] for r in result.history] == [1, 2, 3, 4]
    uninterrupted, _ = _accumulated(8, 2, steps=6, run_dir=tmp_path / "a", checkpoint_every=2)
    calls = {"n": 0}

    def crashing(out, target):  # 4 subnets on 2 batches per step: dies in step 4's second batch
        calls["n"] += 1
        if calls["n"] > 8 * 3 + 5:
            raise KeyboardInterrupt
        return F.cross_entropy(out, target)
    with pytest.raises(KeyboardInterrupt):
        _accumulated(8, 2, steps=6, run_dir=tmp_path / "b", checkpoint_every=2, loss_fn=crashing)
    resumed, result = _accumulated(8, 2, steps=6, run_dir=tmp_path / "b", checkpoint_every=2)
    assert result.resumed_from == 2
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(osf.TrainingInterrupted) as info:  # stopped reading step 4's second batch
        _accumulated(8, 2, steps=6, run_dir=tmp_path / "c", checkpoint_every=5, stop_at=8)
    assert info.value.step == 3  # checkpointed where step 4's first batch is read again
    resumed, result = _accumulated(8, 2, steps=6, run_dir=tmp_path / "c", checkpoint_every=5)
    assert result.resumed_from == 3
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(CheckpointError, match="accumulate 2 and ema None; this run has .* accumulate 1"):
        _accumulated(8, 1, steps=8, run_dir=tmp_path / "b")
    with pytest.raises(ValueError, match="epochs=1 of 8 batches make no step of accumulate=9 batches"):
        _accumulated(8, 9, steps=None, epochs=1)
    with pytest.raises(ValueError, match="accumulate must be a positive number"):
        _accumulated(8, 0)


def _interrupting_loss(*calls: int):
    """Cross-entropy that sends this process a SIGINT (Ctrl-C) at the given calls (4 per step)."""
    count = {"n": 0}

    def loss(out, target):
        count["n"] += 1
        if count["n"] in calls:
            signal.raise_signal(signal.SIGINT)
        return F.cross_entropy(out, target)
    return loss


def test_ctrl_c_finishes_the_step_saves_it_and_the_rerun_resumes_bit_identically(tmp_path, ctrl_c):
    """The first Ctrl-C lets the step under way finish, checkpoints it (between the periodic ones) and raises
    ``osf.TrainingInterrupted``; training again resumes there and ends as an uninterrupted run. A second
    Ctrl-C stops at once (a plain ``KeyboardInterrupt``, nothing saved); Python's handler is back after."""
    loader = data()
    sn = make()
    opt, sched = opt_and_sched(sn)
    osf.train(sn, loader, optimizer=opt, scheduler=sched, loss_fn=F.cross_entropy, steps=13,
              run_dir=tmp_path / "a", checkpoint_every=10, progress=False)

    stopped = make()
    opt, sched = opt_and_sched(stopped)
    with pytest.raises(osf.TrainingInterrupted) as info:  # during step 7's second subnet
        osf.train(stopped, loader, optimizer=opt, scheduler=sched, loss_fn=_interrupting_loss(4 * 6 + 2), steps=13,
                  run_dir=tmp_path / "b", checkpoint_every=10, progress=False)
    assert isinstance(info.value, KeyboardInterrupt)
    assert (info.value.step, info.value.steps) == (7, 13)
    assert info.value.checkpoint == tmp_path / "b" / "checkpoints" / "step-000000007.safetensors"
    assert info.value.checkpoint.is_file() and "train again with the same run_dir" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    _resume_equals(sn, loader, tmp_path / "b", checkpoint_every=10, resumed_from=7)

    twice = make()
    opt, sched = opt_and_sched(twice)
    with pytest.raises(KeyboardInterrupt) as info:
        osf.train(twice, loader, optimizer=opt, scheduler=sched, loss_fn=_interrupting_loss(5, 6), steps=13,
                  run_dir=tmp_path / "c", checkpoint_every=10, progress=False)
    assert not isinstance(info.value, osf.TrainingInterrupted)
    assert not list((tmp_path / "c" / "checkpoints").glob("*"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    class DiesOnCtrlC:  # a loader whose worker processes Ctrl-C stopped (started without osf's handler)
        def __len__(self):
            return len(loader)

        def __iter__(self):
            signal.raise_signal(signal.SIGINT)
            raise RuntimeError("DataLoader worker (pid 123) exited unexpectedly")
    first, again, alone = make(), make(), make()
    osf.train(first, loader, optimizer=opt_and_sched(first)[0], loss_fn=F.cross_entropy, steps=5,
              run_dir=tmp_path / "d", progress=False)
    with pytest.raises(osf.TrainingInterrupted) as info:  # resumed at step 5, stopped before a step: its checkpoint
        osf.train(again, DiesOnCtrlC(), optimizer=opt_and_sched(again)[0], loss_fn=F.cross_entropy, steps=13,
                  run_dir=tmp_path / "d", progress=False)
    assert info.value.checkpoint == tmp_path / "d" / "checkpoints" / "step-000000005.safetensors"
    with pytest.raises(osf.TrainingInterrupted) as info:  # no run directory: stopped, nothing saved
        osf.train(alone, loader, optimizer=opt_and_sched(alone)[0], loss_fn=_interrupting_loss(3), steps=13,
                  progress=False)
    assert (info.value.step, info.value.checkpoint) == (1, None)


class Detector(nn.Module):
    """A model that runs the supernet inside it, with parts osf does not trace: a head with its own
    BatchNorm, and a forward that takes the targets and returns its losses (as torchvision detectors do)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone, self.norm, self.head = backbone, nn.BatchNorm1d(5), nn.Linear(5, 5)

    def forward(self, x, target):
        logits = self.head(self.norm(self.backbone(x)))
        return {"loss_classifier": F.cross_entropy(logits, target), "loss_scale": logits.pow(2).mean() * 1e-3}


def _train_inside(sn, run_dir, loss_fn=None, **kw):
    detector = Detector(sn)
    opt = torch.optim.SGD(detector.parameters(), lr=0.05, momentum=0.9)
    result = osf.train(sn, data(), optimizer=opt, model=detector, steps=9, run_dir=run_dir, checkpoint_every=3,
                       batch_fn=lambda b: ((b[0], b[1]), {}, None), progress=False,
                       loss_fn=loss_fn or (lambda losses, _: sum(losses.values())), **kw)
    return detector, result


def test_a_supernet_inside_a_larger_model_trains_with_its_losses_and_resumes(tmp_path):
    """model=: each subnet's loss comes from the enclosing model's forward; the model's own weights train
    along, and a checkpoint holds them, so a resumed run ends bit-identical to an uninterrupted one."""
    torch.manual_seed(3)
    head_before = Detector(make()).head.weight.detach().clone()
    torch.manual_seed(3)
    whole, result = _train_inside(make(), tmp_path / "a")
    assert not torch.equal(whole.head.weight, head_before) and whole.norm.num_batches_tracked > 0
    assert set(result.history[0]) >= {"loss/max", "loss/min", "loss/random"}
    calls = {"n": 0}

    def crashing(losses, _):
        calls["n"] += 1
        if calls["n"] > 4 * 5:  # dies during step 6, after the checkpoint of step 3
            raise KeyboardInterrupt
        return sum(losses.values())

    torch.manual_seed(3)
    with pytest.raises(KeyboardInterrupt):
        _train_inside(make(), tmp_path / "b", loss_fn=crashing)
    torch.manual_seed(4)  # another process: other initial weights, head included; the checkpoint replaces them
    resumed, result = _train_inside(make(seed=5), tmp_path / "b")
    assert result.resumed_from == 3
    want, got = whole.state_dict(), resumed.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    alone = make()
    with pytest.raises(CheckpointError, match=r"holds the weights of an enclosing Detector model.*no model="):
        osf.train(alone, data(), optimizer=torch.optim.SGD(alone.parameters(), lr=0.1), loss_fn=F.cross_entropy,
                  steps=9, run_dir=tmp_path / "b", progress=False)
    assert osf.load_weights(alone, tmp_path / "b") == 9  # the supernet's weights alone, for a search or an export
    assert all(torch.equal(t, got[f"backbone.{k}"]) for k, t in alone.state_dict().items())
    images = [torch.randn(3, 20, 30), torch.randn(3, 24, 16)]  # a detector's batch: a list of images
    assert _rows((images, [{}, {}]), {}, resumed) == 2 and _rows((torch.randn(5, 3),), {}, resumed) == 5
    lonely = make()
    with pytest.warns(UserWarning, match=r"parameters of the model around the supernet are not in the optimizer"):
        osf.train(lonely, data(), optimizer=torch.optim.SGD(lonely.parameters(), lr=0.1), model=Detector(lonely),
                  batch_fn=lambda b: ((b[0], b[1]), {}, None), loss_fn=lambda losses, _: sum(losses.values()),
                  steps=1, progress=False)
    with pytest.raises(ValueError, match="must hold the supernet as a submodule"):
        osf.train(make(), data(), optimizer=torch.optim.SGD(make().parameters(), lr=0.1), loss_fn=F.cross_entropy,
                  steps=1, model=Detector(make()), progress=False)


@pytest.mark.slow
def test_detection_docs_example_runs():
    """docs/detection_example.py: a torchvision detector's backbone trained as a supernet with ``model=``."""
    example = Path(__file__).parents[1] / "docs" / "detection_example.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, check=True).stdout
    losses = json.loads(out.split("losses of the last step: ")[1].splitlines()[0].replace("'", '"'))
    assert set(losses) == {"loss/max", "loss/min", "loss/random"} and all(math.isfinite(v) for v in losses.values())
    assert "same detections as on the shared weights: True" in out
    kept, total = (int(n.replace(",", "")) for n in re.findall(r"([\d,]+) of ([\d,]+) parameters", out)[0])
    assert kept < total


@pytest.mark.slow
def test_segmentation_docs_example_runs(tmp_path):
    """docs/segmentation_example.py: labels per pixel, mIoU as the searched score, the export scoring the same."""
    example = Path(__file__).parents[1] / "docs" / "segmentation_example.py"
    out = subprocess.run([sys.executable, str(example), str(tmp_path / "run")], capture_output=True, text=True,
                         check=True).stdout
    scores = dict(re.findall(r"(max|min) subnet: mIoU ([\d.]+)", out))
    assert float(scores["max"]) > 0.5 and float(scores["min"]) > 0.2
    assert "\n#    mIoU  params  FLOPs" in out
    exported, front = re.findall(r"mIoU ([\d.]+) \(front: ([\d.]+)\)", out)[0]
    assert exported == front


def test_checkpoint_errors(tmp_path):
    sn = make()
    opt, _ = opt_and_sched(sn)
    osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=2, run_dir=tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="resume=True"):
        osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=2, run_dir=tmp_path, resume=False,
                  progress=False)
    other = osf.Supernet(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (torch.randn(2, 4),))
    with pytest.raises(CheckpointError, match="another supernet"):
        osf.train(other, data(), optimizer=torch.optim.SGD(other.parameters(), lr=0.1),
                  loss_fn=F.cross_entropy, steps=3, run_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="seed"):
        osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=3, run_dir=tmp_path, seed=7,
                  progress=False)
    last = sorted((tmp_path / "checkpoints").iterdir())[-1]
    last.write_bytes(last.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=3, run_dir=tmp_path, progress=False)


def test_bad_input_errors():
    sn = make()
    opt, _ = opt_and_sched(sn)
    with pytest.raises(FloatingPointError, match=r"step 1 for the max subnet; arch: \{"):
        osf.train(sn, data(), optimizer=opt, loss_fn=lambda out, y: out.sum() * float("nan"), steps=2,
                  progress=False)
    calls = []

    def fails_in_step_3(out, y):  # the third step's second subnet, the min one of the sandwich
        calls.append(1)
        if len(calls) == 10:
            raise IndexError("index 50 is out of bounds")
        return F.cross_entropy(out, y)
    with pytest.raises(IndexError, match="index 50") as info:
        osf.train(sn, data(), optimizer=opt, loss_fn=fails_in_step_3, steps=4, progress=False)
    assert info.value.__notes__ == [f"osf.train: in step 3, running the min subnet; its arch: {sn.space.min().key()}"]
    with pytest.raises(ValueError, match="yielded no batch"):
        osf.train(sn, [], optimizer=opt, loss_fn=F.cross_entropy, steps=2, progress=False)
    with pytest.raises(ValueError, match="exactly one of steps= or epochs="):
        osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, progress=False)
    with pytest.raises(ValueError, match="unknown width group"):
        sn.set_arch(osf.Arch(width={"fc.weight[0]": 8}))
    with pytest.raises(ValueError, match="another search space"):
        osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=1, progress=False,
                  sampler=osf.SandwichSampler(make().space))
    with pytest.raises(TypeError, match="batch_fn"):
        osf.train(sn, [(torch.randn(2, 3, 8, 8),) * 3], optimizer=opt, loss_fn=F.cross_entropy, steps=1,
                  progress=False)
    x, y = next(iter(data()))
    named = [{"x": x, "label": y}]  # the target under another name than 'labels' went to the model
    dict_rule = "unexpected.*The batch is a dict: its 'labels' entry is the target"
    with pytest.raises(osf.InputError, match=dict_rule) as info:
        osf.train(sn, named, optimizer=opt, loss_fn=F.cross_entropy, steps=1, progress=False)
    assert info.value.__notes__[0].startswith("osf.train: in step 1, running the max subnet")
    with pytest.raises(osf.InputError, match=r"\('x', 'label'\); if the target has another name"):
        osf.evaluate(sn, sn.space.max(), named, calib_loader=data())
    for setting, message in [(dict(steps=-3), "steps must be a positive number, got -3"),  # trained 0 steps
                             (dict(clip_grad_norm=-1.0), "clip_grad_norm must be a positive"),  # flipped the grads
                             (dict(keep_checkpoints=0), "keep_checkpoints must be a positive"),  # kept them all
                             (dict(checkpoint_every=2.5), "checkpoint_every must be a whole number"),
                             (dict(amp="float16"), "amp must be True, False or a torch.dtype")]:  # took bfloat16
        with pytest.raises(ValueError, match=message):
            osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, **{"steps": 1, **setting}, progress=False)
    other = torch.optim.SGD(make().parameters(), lr=0.1)
    for scheduler, message in [(torch.optim.lr_scheduler.StepLR(other, 5), "built for another optimizer"),
                               (torch.optim.lr_scheduler.ReduceLROnPlateau(opt), "ReduceLROnPlateau steps on a")]:
        with pytest.raises(ValueError, match=message):
            osf.train(sn, data(), optimizer=opt, scheduler=scheduler, loss_fn=F.cross_entropy, steps=1, progress=False)
    for loss_fn, error, message in [  # torch's messages named neither the loss nor what to return
            (lambda out, y: F.cross_entropy(out, y, reduction="none"), ValueError, r"shaped \[8\]; return one number"),
            (lambda out, y: F.cross_entropy(out, y).item(), TypeError, "loss_fn returned a float"),
            (lambda out, y: (out.argmax(-1) != y).float().mean(), ValueError, "a tensor without gradients")]:
        with pytest.raises(error, match=message):
            osf.train(sn, data(), optimizer=opt, loss_fn=loss_fn, steps=1, progress=False)
    with pytest.raises(ValueError, match="accuracy needs class labels, but the batch's target is NoneType"):
        osf.evaluate(sn, sn.space.max(), [torch.randn(4, 3, 8, 8)], calib_loader=data())  # was AttributeError
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    early = torch.optim.SGD(model.parameters(), lr=0.1)  # made before the supernet copied the weights
    copied = osf.Supernet(model, (torch.randn(2, 6),))
    rows = DataLoader(TensorDataset(torch.randn(8, 6), torch.randint(0, 3, (8,))), batch_size=4)
    with pytest.raises(ValueError, match=r"holds none of the supernet's parameters, so training would change "
                                         r"nothing .*build it from supernet.parameters\(\)"):
        osf.train(copied, rows, optimizer=early, loss_fn=F.cross_entropy, steps=1, progress=False)  # was silent
    first_layer = torch.optim.SGD(list(copied.parameters())[:2], lr=0.1)
    with pytest.warns(UserWarning, match=r"2 trainable parameters of the supernet are not in the optimizer"):
        osf.train(copied, rows, optimizer=first_layer, loss_fn=F.cross_entropy, steps=1, progress=False)


def test_samplers_are_deterministic_and_follow_their_rule():
    sn = make()
    space = sn.space
    sandwich = osf.SandwichSampler(space, k=4, seed=3)
    picks = sandwich.sample(7)
    assert [r for r, _ in picks] == ["max", "min", "random", "random"]
    assert picks[0][1] == space.max() and picks[1][1] == space.min()
    assert [a for _, a in sandwich.sample(7)] == [a for _, a in picks]
    assert [a for _, a in sandwich.sample(8)] != [a for _, a in picks]
    uniform = osf.UniformSampler(space, k=3, seed=0)
    assert len(uniform.sample(0)) == 3
    motif, plain = osf.MotifSampler(sn, k=6, seed=0), osf.SandwichSampler(space, k=6, seed=0)
    for (role, arch), (_, drawn) in zip(motif.sample(1)[2:], plain.sample(1)[2:]):
        assert role == "motif"
        space.validate(arch)
        assert space.signature(arch) == space.signature(drawn)  # the same motif, its salient member
    ps = osf.ProgressiveShrinking(space, total_steps=100, k=4, seed=0)
    assert [a for _, a in ps.sample(0)] == [space.max()]  # stage 1: the full network, once
    later = ps.sample(99)
    assert later[1][1] == space.min()
    mid = [a for _, a in ps.sample(60)]  # widths of at least half
    assert all(w >= g.size // 2 for a in mid for g in space.groups for w in [a.width[g.key]])


def test_warmup_trains_the_max_subnet_alone_then_hands_over(tmp_path):
    """``WarmupSampler``: the max subnet alone for its first steps, then the wrapped sampler's subnets;
    over a sandwich sampler it picks what two-stage progressive shrinking picks; its length is part of
    the run's identity, so resuming with another warm-up is refused."""
    sn = make()
    space = sn.space
    total = 30
    warm = osf.WarmupSampler(osf.SandwichSampler(space, k=4, seed=2), steps=math.ceil(0.25 * total))
    staged = osf.ProgressiveShrinking(space, total, k=4, seed=2, stages=((0.0, 1.0, False), (0.25, 0.0, True)))
    for step in range(total):
        assert warm.sample(step) == staged.sample(step), step
    assert warm.sample(7) == [("max", space.max())] and len(warm.sample(8)) == 4
    motif = osf.WarmupSampler(osf.MotifSampler(sn, k=3, seed=0), steps=3)
    opt, _ = opt_and_sched(sn)
    result = osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=5, sampler=motif,
                       distill=osf.Distill("inplace", weight=0.5), run_dir=tmp_path, progress=False)
    assert [sorted(k for k in r if k.startswith("loss/")) for r in result.history] == \
        [["loss/max"]] * 3 + [["loss/max", "loss/min", "loss/motif"]] * 2
    with pytest.raises(CheckpointError, match="warmup_steps"):
        osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=6, progress=False, run_dir=tmp_path,
                  sampler=osf.WarmupSampler(osf.MotifSampler(sn, k=3, seed=0), steps=4))
    with pytest.raises(ValueError, match="steps >= 0"):
        osf.WarmupSampler(osf.SandwichSampler(space), steps=-1)


def test_arch_sampler_fine_tunes_one_subnet_and_touches_no_weight_outside_it(tmp_path):
    """``ArchSampler``: the named subnets at every step, logged under their names. Trained alone (plain SGD,
    no decay), a subnet's loss falls and only the weights it keeps move; the weights it drops stay as they
    were. Its archs are the run's identity: resuming with another subnet is refused."""
    sn = make()
    space = sn.space
    arch = space.sample(4)
    assert arch != space.max()
    before = {k: v.clone() for k, v in sn.tensors().items()}
    kept = {k: v.clone() for k, v in sn.extract(arch).state_dict().items()}
    opt = torch.optim.SGD(sn.parameters(), lr=0.05)
    sampler = osf.ArchSampler(space, {"picked": arch})
    assert sampler.sample(0) == sampler.sample(9) == [("picked", arch)]
    result = osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=12, sampler=sampler,
                       run_dir=tmp_path, progress=False)
    losses = [r["loss/picked"] for r in result.history]
    assert all(sorted(k for k in r if k.startswith("loss/")) == ["loss/picked"] for r in result.history)
    assert sum(losses[-3:]) < sum(losses[:3])
    # the subnet's own weights moved, and writing them into the old supernet's slices gives the new one
    tuned = sn.extract(arch).state_dict()
    assert any(not torch.equal(tuned[k], kept[k]) for k in kept if tuned[k].is_floating_point())
    after = sn.tensors()
    changed = sum(int((after[k] != before[k]).sum()) for k in before)
    moved = sum(int((tuned[k] != kept[k]).sum()) for k in kept)
    assert 0 < changed <= moved  # nothing outside the subnet changed (a kept weight may be read twice)
    with pytest.raises(CheckpointError, match="picked"):
        osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=14, run_dir=tmp_path, progress=False,
                  sampler=osf.ArchSampler(space, {"picked": space.min()}))
    # fine-tuning a deep copy leaves the supernet as it was; the copy's forward and extraction use its own weights
    twin, kept = copy.deepcopy(sn), {k: t.clone() for k, t in sn.tensors().items()}
    osf.train(twin, data(), optimizer=torch.optim.SGD(twin.parameters(), lr=0.05), loss_fn=F.cross_entropy,
              steps=3, sampler=osf.ArchSampler(twin.space, {"picked": arch}), progress=False)
    assert all(torch.equal(t, kept[k]) for k, t in sn.tensors().items())
    assert any(not torch.equal(t, kept[k]) for k, t in twin.tensors().items())
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad(), twin.set_arch(arch):
        assert torch.allclose(twin.eval()(x), twin.extract(arch).eval()(x), atol=1e-5)
    with pytest.raises(ValueError, match="at least one subnet"):
        osf.ArchSampler(space, {})
    with pytest.raises(ValueError, match="subnet 'x': unknown width group 'nope'"):
        osf.ArchSampler(space, {"x": osf.Arch({"nope": 4})})
    with pytest.raises(TypeError, match="subnet 'x': expected an osf.Arch"):
        osf.ArchSampler(space, {"x": arch.to_json()})
    with pytest.raises(ValueError, match="'max' is kept for space.max"):
        osf.ArchSampler(space, {"max": arch})
    with pytest.raises(ValueError, match="needs the max subnet first"):
        osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=1, sampler=sampler, progress=False,
                  distill=osf.Distill("inplace"))


def test_progressive_shrinking_never_trains_a_subnet_cut_off_from_its_input():
    """A ViT without blocks classifies its class token alone: the last stage's smallest subnet is
    ``space.min()`` (one block kept) and every stage's smallest sits at that stage's width floor."""
    vit = TinyViT(1, 10, dims=2, size=8, patch=2, dim=16, depth=3, heads=2, mlp=32)
    space = osf.Supernet(vit, (torch.randn(2, 1, 8, 8),), multiple_of=4).space
    ps = osf.ProgressiveShrinking(space, total_steps=100, k=8, seed=0)
    assert ps.sample(99)[1][1] == space.min() and not space.cut_outputs(space.min())
    assert any(space.min().depth.values())
    smallest = ps.sample(60)[1][1]  # width floor 1/2
    assert smallest.depth == space.min().depth
    assert all(smallest.width[g.key] == min(c for c in g.choices if c >= g.size / 2) for g in space.groups)
    for step in (30, 60, 99):
        for _, arch in ps.sample(step):
            space.validate(arch)
    group = space.groups[0]
    with pytest.raises(ValueError, match=re.escape(f"widths['{group.key}'] is [3]")):
        space.sample(0, widths={group.key: [3]})
    with pytest.raises(ValueError, match="unknown width group 'nope'"):
        space.sample(0, widths={"nope": [8]})


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Linear(32, 16))
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.body(x)
        return {"logits": self.head(h), "features": h}


@pytest.mark.parametrize("mode,loss,field", [("inplace", "kl", None), ("teacher", "mse", "features"),
                                             ("teacher", "cosine", "features")])
def test_distillation(mode, loss, field):
    torch.manual_seed(0)
    teacher = DictOut().eval()
    sn = osf.Supernet(DictOut(), (torch.randn(2, 6),), multiple_of=4)
    x = torch.randn(64, 6)
    y = teacher(x)["logits"].argmax(-1)
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    distill = osf.Distill(mode=mode, teacher=teacher if mode == "teacher" else None, loss=loss, field=field,
                          temperature=2.0, weight=1.0 if mode == "teacher" else 0.5)
    task = (lambda out, t: F.cross_entropy(out["logits"], t)) if mode == "inplace" else None
    opt = torch.optim.Adam(sn.parameters(), lr=3e-3)
    result = osf.train(sn, loader, optimizer=opt, loss_fn=task, distill=distill, epochs=15, progress=False)
    first, last = result.history[0], result.history[-1]
    role = "loss/min"
    assert last[role] < first[role]
    if mode == "teacher":  # every subnet learns to imitate the frozen teacher's features
        assert last["loss/max"] < 0.5 * first["loss/max"]


def test_a_teacher_in_training_mode_teaches_as_in_eval_mode_and_is_left_unchanged():
    """A teacher left in training mode (as torchvision builds models) ran with dropout and moved its BatchNorm
    statistics at every step; it runs in eval mode, its own mode given back."""
    torch.manual_seed(0)
    teacher = Net().train()
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    runs = []
    for mode in ("train", "eval"):
        teacher.train(mode == "train")
        sn = make(seed=1)
        opt = torch.optim.SGD(sn.parameters(), lr=0.05)
        result = osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=3, progress=False,
                           distill=osf.Distill("teacher", teacher=teacher, loss="mse"))
        runs.append((result.history, sn.state_dict()))
        assert teacher.training == (mode == "train")
        assert all(torch.equal(v, state[k]) for k, v in teacher.state_dict().items())  # statistics untouched
    (history_a, weights_a), (history_b, weights_b) = runs
    assert [h["loss/min"] for h in history_a] == [h["loss/min"] for h in history_b]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_distill_errors():
    with pytest.raises(ValueError, match="needs teacher="):
        osf.Distill(mode="teacher")
    for temperature in (0, -1.0, float("nan")):  # 0 made every distilled loss NaN
        with pytest.raises(ValueError, match="Distill.temperature must be > 0"):
            osf.Distill(temperature=temperature)
    d = osf.Distill(field="nope")
    with pytest.raises(ValueError, match="'nope' is not in the model's output"):
        d({"logits": torch.zeros(2, 3)}, torch.zeros(2, 3))
    sn = make()
    opt, _ = opt_and_sched(sn)
    with pytest.raises(ValueError, match="max subnet first"):
        osf.train(sn, data(), optimizer=opt, loss_fn=F.cross_entropy, steps=1, distill=osf.Distill(),
                  sampler=osf.UniformSampler(sn.space, 2), progress=False)


class TinySeg(nn.Module):  # one class score per pixel: [batch, classes, H, W]
    def __init__(self, classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        return self.head(self.body(x))


def test_class_dims_of_labels_per_sample_and_per_position():
    from osf.train.labels import class_dim
    long = dict(dtype=torch.long)
    assert class_dim(torch.zeros(2, 5), torch.zeros(2, **long)) == 1
    assert class_dim(torch.zeros(2, 5, 4, 6), torch.zeros(2, 4, 6, **long)) == 1  # segmentation (PyTorch layout)
    assert class_dim(torch.zeros(2, 4, 6, 5), torch.zeros(2, 4, 6, **long)) == 3  # channels last
    assert class_dim(torch.zeros(2, 7, 5), torch.zeros(2, 7, **long)) == 2  # tagging (Hugging Face layout)
    assert class_dim(torch.zeros(2, 7, 7), torch.zeros(2, 7, **long)) == 2  # both fit: sequences score last
    assert class_dim(torch.zeros(2, 4, 4, 4), torch.zeros(2, 4, 4, **long)) == 1  # both fit: images score at 1
    assert class_dim(torch.zeros(2, 1, 5), torch.zeros(2, **long)) is None


def test_accuracy_scores_labelled_positions_and_refuses_scores_it_cannot_read():
    """The default accuracy took argmax(-1) whatever the layout: a segmentation model's [B, C, H, W] against
    [B, H, W] labels failed with a broadcasting error (or compared wrong dims where C equalled H), a [B, 1, C]
    output against [B] labels broadcast to [B, B] and gave a number, and tagging counted padding positions
    (-100) as errors."""
    scores = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]])  # [1, tokens=3, classes=2]: predicts 0, 1, 0
    labels = torch.tensor([[0, 0, -100]])
    assert accuracy(scores, labels) == 0.5  # the padded third token left out
    seg = scores.permute(0, 2, 1)[..., None]  # [1, 2, 3, 1] against [1, 3, 1]
    assert accuracy(seg, labels[..., None]) == 0.5
    assert math.isnan(accuracy(scores, torch.full((1, 3), -100)))
    with pytest.raises(ValueError, match=r"class scores shaped \[4, 1, 5\] with labels shaped \[4\]"):
        accuracy(torch.zeros(4, 1, 5), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class labels, but the batch's target is torch.float32"):
        accuracy(torch.zeros(4, 1), torch.zeros(4))


def test_mean_iou_counts_every_class_over_all_batches():
    from osf.train.labels import Score
    scores = torch.zeros(2, 3, 2, 2)  # [batch, classes=3, 2, 2]
    predicted = torch.tensor([[[0, 0], [1, 1]], [[0, 1], [1, 1]]])
    scores.scatter_(1, predicted[:, None], 1.0)
    labels = torch.tensor([[[0, 1], [1, -100]], [[0, 0], [1, 1]]])
    score = Score("miou")
    score.add(scores[:1], labels[:1])
    score.add(scores[1:], labels[1:])
    labelled = labels != -100
    ious = [float(((predicted == c) & (labels == c) & labelled).sum() / (((predicted == c) | (labels == c)) & labelled).sum())
            for c in (0, 1)]  # class 2: neither labelled nor predicted, left out of the mean
    assert score.value() == pytest.approx(sum(ious) / 2)
    assert 0 < score.value() < 1
    with pytest.raises(ValueError, match="unknown score 'iou'; scores: accuracy, miou"):
        Score("iou")
    with pytest.raises(ValueError, match="mIoU: labels run from 0 to 3, but the scores are of 3 classes"):
        Score("miou").add(scores, labels.clamp(max=3) + (labels == 1).long() * 2)


def test_segmentation_trains_with_labels_per_pixel_and_is_evaluated_over_labelled_pixels():
    torch.manual_seed(0)
    x = torch.rand(48, 1, 6, 6)
    y = (x[:, 0] > 0.66).long() + (x[:, 0] > 0.33).long()  # a class per pixel, from its own value
    y[:, 0] = -100  # an unlabelled first row
    loader = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
    test = DataLoader(TensorDataset(x, y), batch_size=20)  # batches of unequal size: pixels counted exactly
    sn = osf.Supernet(TinySeg(), (x[:2],), multiple_of=4)
    before = osf.evaluate(sn, sn.space.max(), test)
    opt = torch.optim.Adam(sn.parameters(), lr=1e-2)
    osf.train(sn, loader, optimizer=opt, loss_fn=F.cross_entropy, epochs=15, progress=False,
              distill=osf.Distill("inplace", weight=0.5))
    for arch in (sn.space.max(), sn.space.min()):
        got = osf.evaluate(sn, arch, test)
        model = sn.extract(arch).eval()
        with torch.no_grad():
            hits = (model(x).argmax(1) == y)[:, 1:]
        assert got == pytest.approx(float(hits.float().mean()), abs=1e-6)
    assert osf.evaluate(sn, sn.space.max(), test) > max(0.9, before)
    model = sn.extract(sn.space.max()).eval()
    with torch.no_grad():
        predicted, truth = model(x).argmax(1)[:, 1:], y[:, 1:]
    ious = [float(((predicted == c) & (truth == c)).sum() / ((predicted == c) | (truth == c)).sum()) for c in range(3)]
    assert osf.evaluate(sn, sn.space.max(), test, metric="miou") == pytest.approx(sum(ious) / 3, abs=1e-6)


def test_kl_distillation_softmaxes_over_the_class_dim_the_labels_tell():
    """The KL softmaxed over the last dim: for segmentation scores [B, C, H, W], over the image's width."""
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    per_pixel = F.kl_div(F.log_softmax(student, 1), F.log_softmax(teacher, 1), log_target=True,
                         reduction="sum") / (2 * 4 * 5)
    labels = torch.zeros(2, 4, 5, dtype=torch.long)
    torch.testing.assert_close(osf.Distill()(student, teacher, labels), per_pixel)
    torch.testing.assert_close(osf.Distill(dim=1)(student, teacher), per_pixel)
    assert not torch.allclose(osf.Distill()(student, teacher), per_pixel)  # no labels, no dim: the last
    tagging = torch.randn(2, 7, 3), torch.randn(2, 7, 3)
    torch.testing.assert_close(osf.Distill()(*tagging, torch.zeros(2, 7, dtype=torch.long)),
                               osf.Distill()(*tagging))
    padded = torch.zeros(2, 7, dtype=torch.long)
    padded[0, 4:] = padded[1, 6:] = -100  # padding tokens: left out of the distillation as of the task loss
    kept = padded != -100
    torch.testing.assert_close(osf.Distill()(*tagging, padded), osf.Distill()(tagging[0][kept], tagging[1][kept]))
    features = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(osf.Distill(loss="cosine", dim=1)(*features),
                               1 - F.cosine_similarity(*features, dim=1).mean())
    with pytest.raises(ValueError, match="Distill.dim is 4, but the compared outputs have 4 dims"):
        osf.Distill(dim=4)(student, teacher)


def test_recalibration_gives_the_plain_average_of_batch_statistics():
    sn = make()
    arch = sn.space.sample(2)
    loader = data(n=24, batch=8)
    with torch.no_grad():
        w = sn.tensors()["stem.0.weight"]
        b = sn.tensors()["stem.0.bias"]
        k = arch.width.get(next(g.key for g in sn.space.groups if ("stem.0.weight", 0) in g.members), w.shape[0])
        means = [F.conv2d(x, w[:k], b[:k], padding=1).mean((0, 2, 3)) for x, _ in loader]
    assert sn.recalibrate(arch, loader, batches=10) == 3
    torch.testing.assert_close(sn.tensors()["stem.1.running_mean"][:k], torch.stack(means).mean(0))
    with pytest.raises(ValueError, match="calib_loader"):
        osf.evaluate(sn, arch, loader)
    acc = osf.evaluate(sn, arch, loader, calib_loader=loader)
    assert 0.0 <= acc <= 1.0


def test_load_weights_reads_a_run_back_into_a_supernet_of_another_process(tmp_path):
    """What a search or an export in a new script needs: the trained weights in a supernet built again from
    the model (here from another initialisation, so its salience order differs before loading)."""
    sn = make()
    opt, sched = opt_and_sched(sn)
    osf.train(sn, data(), optimizer=opt, scheduler=sched, loss_fn=F.cross_entropy, steps=6, run_dir=tmp_path,
              checkpoint_every=4, progress=False)
    again = make(seed=5)
    x = torch.randn(3, 3, 8, 8)
    assert not torch.equal(again.extract(again.space.max()).eval()(x), sn.extract(sn.space.max()).eval()(x))
    assert osf.load_weights(again, tmp_path) == 6  # the newest checkpoint of the run
    sn.eval(), again.eval()
    for arch in (sn.space.max(), sn.space.min(), sn.space.sample(3)):
        torch.testing.assert_close(again.extract(arch).eval()(x), sn.extract(arch).eval()(x), rtol=0, atol=0)
        with again.set_arch(arch), sn.set_arch(arch):
            torch.testing.assert_close(again(x), sn(x), rtol=0, atol=0)
    first = tmp_path / "checkpoints" / "step-000000004.safetensors"
    assert osf.load_weights(again, first) == 4
    with pytest.raises(CheckpointError, match="written for another supernet"):
        osf.load_weights(make(depth=False), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty holds no osf checkpoint"):
        osf.load_weights(again, tmp_path / "empty")
