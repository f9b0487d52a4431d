"""ONNX functions for ops that torch.onnx has none for, handed to every ONNX export as its
``custom_translation_table``. Each is written with onnxscript's opset-18 ops and traced by torch.onnx with
the op's arguments (tensors as symbolic values, the other arguments as Python values)."""
from __future__ import annotations

from typing import Any, Callable

import torch

# ops the ONNX exporter is handed functions for, by qualified name: those of libraries not imported are skipped
_GROUPED_MATMULS = ("aten::_grouped_mm", "transformers::grouped_mm_fallback")


def onnx_functions() -> dict[Any, Callable]:
    """The translation table: op overload -> ONNX function."""
    import onnx
    from onnxscript import opset18 as op
    int64, boolean = onnx.TensorProto.INT64, onnx.TensorProto.BOOL

    def is_all_true(x):
        """``aten._is_all_true`` (what ``torch._check_tensor_all`` records; transformers' checks when traced):
        the least of the flags as integers; an empty tensor gives the reduction's identity, true."""
        return op.Cast(op.ReduceMin(op.Cast(x, to=int64), keepdims=0), to=boolean)

    def grouped_matmul(a, b, offs=None, bias=None, out_dtype=None):
        """A mixture of experts' matmul: ``a`` (rows, K) sorted by expert, ``b`` (experts, K, N), ``offs`` the
        cumulative row count at the end of each expert's rows, ``bias`` (experts, N). Row r gives
        ``a[r] @ b[expert of r] + bias[expert of r]``; rows past the last offset give zeros, as in eager. One
        ``MatMul`` per expert (the number of experts is static)."""
        if offs is None:
            out = op.MatMul(a, b)
        else:
            if len(a.shape) != 2 or len(b.shape) != 3 or not isinstance(b.shape[0], int):
                raise NotImplementedError(f"a grouped matmul of shapes {a.shape} and {b.shape} with offsets (only a "
                                          "2-D input with a static number of 3-D expert weights is written to ONNX)")
            ends, start, pieces = op.Cast(offs, to=int64), op.Constant(value_ints=[0]), []
            axis0 = op.Constant(value_ints=[0])
            for expert in range(b.shape[0]):
                end = op.Slice(ends, op.Constant(value_ints=[expert]), op.Constant(value_ints=[expert + 1]), axis0)
                index = op.Constant(value_int=expert)
                piece = op.MatMul(op.Slice(a, start, end, axis0), op.Gather(b, index, axis=0))
                pieces.append(piece if bias is None else op.Add(piece, op.Gather(bias, index, axis=0)))
                start = end
            out = op.Concat(*pieces, axis=0)
            missing = op.Sub(op.Shape(a, start=0, end=1), start)  # rows after the last offset
            zero = op.Constant(value_ints=[0])
            out = op.Pad(out, op.Concat(zero, zero, missing, zero, axis=0))
        if offs is None and bias is not None:
            out = op.Add(out, bias)
        if out_dtype is not None and out_dtype != -1:
            out = op.Cast(out, to=out_dtype)
        return out

    def cdist(x1, x2, p=2.0, compute_mode=None):
        """``torch.cdist``: the p-norm distance of every row of ``x1`` (..., P, M) to every row of ``x2``
        (..., R, M), from their differences (..., P, R, M); ``compute_mode`` only picks eager's kernel."""
        diff = op.Sub(op.Unsqueeze(x1, op.Constant(value_ints=[-2])), op.Unsqueeze(x2, op.Constant(value_ints=[-3])))
        last = op.Constant(value_ints=[-1])
        if p == 0:  # how many coordinates differ
            return op.ReduceSum(op.CastLike(op.Not(op.Equal(diff, op.CastLike(0, diff))), diff), last, keepdims=0)
        if p == 1:
            return op.ReduceSum(op.Abs(diff), last, keepdims=0)
        if p == 2:
            return op.Sqrt(op.ReduceSum(op.Mul(diff, diff), last, keepdims=0))
        if p == float("inf"):
            return op.ReduceMax(op.Abs(diff), last, keepdims=0)
        summed = op.ReduceSum(op.Pow(op.Abs(diff), op.CastLike(float(p), diff)), last, keepdims=0)
        return op.Pow(summed, op.CastLike(1.0 / p, diff))

    table: dict[Any, Callable] = {torch.ops.aten._is_all_true.default: is_all_true,
                                  torch.ops.aten._cdist_forward.default: cdist}
    for name in _GROUPED_MATMULS:
        overload = _registered(name)
        if overload is not None:
            table[overload] = grouped_matmul
    return table


def _registered(qualified: str) -> Any:
    """The default overload of op ``namespace::name``, or None where no library imported so far defines it."""
    namespace, name = qualified.split("::")
    try:
        return getattr(getattr(torch.ops, namespace), name).default
    except (AttributeError, RuntimeError):
        return None
