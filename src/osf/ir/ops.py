"""Per-op rules the IR needs (independent of any architecture): which ops mutate, which carry a
training flag that must follow the owner module's ``.training``, and which have side effects."""
from __future__ import annotations

from .errors import FormatError
from .serial import resolve_target

# op target -> index of the argument that is the training flag
TRAINING_FLAG_ARG = {
    "aten.dropout.default": 2,
    "aten.dropout_.default": 2,
    "aten.feature_dropout.default": 2,
    "aten.feature_dropout_.default": 2,
    "aten.alpha_dropout.default": 2,
    "aten.alpha_dropout_.default": 2,
    "aten.feature_alpha_dropout.default": 2,
    "aten.feature_alpha_dropout_.default": 2,
    "aten.native_dropout.default": 2,
    "aten.rrelu.default": 3,
    "aten.rrelu_.default": 3,
    # batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps, cudnn)
    "aten.batch_norm.default": 5,
    # instance_norm(input, weight, bias, running_mean, running_var, use_input_stats, ...)
    "aten.instance_norm.default": 5,
}
# normalisations whose flag stays True when there are no running statistics (arg 3 is None)
STATS_OPTIONAL = {"aten.batch_norm.default", "aten.instance_norm.default"}
# op target -> (index, name) of a dropout probability that only applies in training
TRAINING_ONLY_PROB = {
    "aten.scaled_dot_product_attention.default": (4, "dropout_p"),
}
# ops that never change values (only memory layout): ignored when comparing train and eval graphs
LAYOUT_ONLY = {"aten.contiguous.default", "aten.alias.default", "aten.clone.default"}
_SCALAR_CHECKS = ("aten._assert_scalar.", "aten._assert_async.", "aten.sym_constrain_range")
_SIDE_EFFECT_PREFIXES = ("aten._assert", "aten.sym_constrain_range", "aten.copy_.", "aten._print")


def is_scalar_check(target: str) -> bool:
    """A run-time assertion on sizes or scalars (export adds them for data-dependent sizes): no tensor dims."""
    return target.startswith(_SCALAR_CHECKS)


def functional_form(target: str) -> str | None:
    """The out-of-place op of in-place ``target`` (``aten.relu_.default`` -> ``aten.relu.default``), called
    with the same arguments in its place; None where torch has no such op."""
    _, packet, overload = target.split(".")
    functional = f"aten.{packet.rstrip('_')}.{overload}"
    try:
        inplace, pure = resolve_target(target)._schema.arguments, resolve_target(functional)._schema.arguments
    except FormatError:
        return None
    same = len(inplace) == len(pure) and [a.name for a in inplace if a.kwarg_only] == \
        [a.name for a in pure if a.kwarg_only]
    return functional if same else None


def is_inplace(target: str) -> bool:
    """In-place ATen op (name ends in ``_``, e.g. ``aten.add_.Tensor``) or an explicit copy."""
    if not target.startswith("aten."):
        return False
    packet = target.split(".")[1]
    return packet.endswith("_") and not packet.startswith("_") or packet in ("copy_", "index_put_")


def has_side_effect(target: str) -> bool:
    return is_inplace(target) or target.startswith(_SIDE_EFFECT_PREFIXES)
