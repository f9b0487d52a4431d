"""Shared round-trip checks: trace -> build -> same outputs, loss, gradients, state; save -> load."""
from __future__ import annotations

import copy

import torch
import torch.utils._pytree as pytree

import osf

ATOL, RTOL = 1e-5, 1e-4


def tensors(out) -> list[torch.Tensor]:
    return [x for x in pytree.tree_leaves(out) if isinstance(x, torch.Tensor)]


def assert_same(a, b, what: str, atol: float = ATOL, rtol: float = RTOL) -> None:
    ta, tb = tensors(a), tensors(b)
    assert len(ta) == len(tb), f"{what}: {len(ta)} vs {len(tb)} output tensors"
    for i, (x, y) in enumerate(zip(ta, tb)):
        assert x.shape == y.shape, f"{what}[{i}]: shape {x.shape} vs {y.shape}"
        if x.is_floating_point():
            torch.testing.assert_close(y, x, atol=atol, rtol=rtol, msg=lambda m: f"{what}[{i}]: {m}")
        else:
            assert torch.equal(x, y), f"{what}[{i}] differs"


def loss_of(out) -> torch.Tensor:
    return sum(t.float().square().mean() for t in tensors(out) if t.is_floating_point() and t.requires_grad)


def round_trip(model, args=(), kwargs=None, *, tmp_path=None, train=True, other_batch=None, grad_atol=1e-4,
               **trace_options) -> osf.IR:
    """Run every IR promise on one model and return its IR."""
    kwargs = kwargs or {}
    model = model.eval()
    ref = copy.deepcopy(model)  # tracing must not change the model
    ir = osf.trace(model, args, kwargs, **trace_options)
    rebuilt = ir.build().eval()
    assert list(rebuilt.state_dict()) == list(model.state_dict()), "state_dict keys differ"
    rebuilt.load_state_dict(model.state_dict())  # a user's checkpoint loads
    with torch.no_grad():
        expected = model(*args, **kwargs)
        assert_same(expected, rebuilt(*args, **kwargs), "eval outputs")
        assert_same(expected, ref(*args, **kwargs), "model unchanged by tracing")
    if other_batch is not None:
        o_args, o_kwargs = other_batch
        with torch.no_grad():
            assert_same(model(*o_args, **o_kwargs), rebuilt(*o_args, **o_kwargs), "other batch size")
    if train:
        model.train(), rebuilt.train()
        torch.manual_seed(1)
        loss_a = loss_of(model(*args, **kwargs))
        loss_a.backward()
        torch.manual_seed(1)
        loss_b = loss_of(rebuilt(*args, **kwargs))
        loss_b.backward()
        torch.testing.assert_close(loss_b, loss_a, atol=ATOL, rtol=RTOL)
        grads = dict(rebuilt.named_parameters())
        for name, p in model.named_parameters():
            if p.grad is None:
                assert grads[name].grad is None or not grads[name].grad.any(), name
                continue
            torch.testing.assert_close(grads[name].grad, p.grad, atol=grad_atol, rtol=1e-3,
                                       msg=lambda m: f"grad of {name}: {m}")
        buffers = dict(rebuilt.named_buffers())
        for name, b in model.named_buffers():
            torch.testing.assert_close(buffers[name], b, atol=ATOL, rtol=RTOL, msg=lambda m: f"buffer {name}: {m}")
        model.zero_grad(), model.eval()
    if tmp_path is not None:
        ir.save(tmp_path / "ir")
        loaded = osf.load_ir(tmp_path / "ir").build().eval()
        loaded.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert_same(model(*args, **kwargs), loaded(*args, **kwargs), "outputs after save/load")
    return ir
