"""Errors raised by osf; each names the module, op or key at fault and says what to do."""
from __future__ import annotations


class OsfError(Exception):
    """Base class of every error osf raises on purpose."""


class TraceError(OsfError):
    """The model could not be captured into an IR."""

    def __init__(self, message: str, *, module: str | None = None, op: str | None = None,
                 suggestion: str | None = None):
        self.module, self.op, self.suggestion = module, op, suggestion
        parts = [message]
        if module is not None:
            parts.append(f"in module '{module or '<root>'}'")
        if op:
            parts.append(f"at: {op}")
        text = "; ".join(parts)
        if suggestion:
            text += f". What to do: {suggestion}"
        super().__init__(text)


class FormatError(OsfError):
    """A saved IR (or other osf file) is corrupt, truncated or not an osf file."""


class InputError(OsfError, TypeError):
    """A rebuilt model was called with inputs that differ from the traced ones."""


class ModuleReplacedError(OsfError, TypeError):
    """A submodule of a model rebuilt by osf was replaced or removed: its generated forward calls the ops
    of every module itself, so it would go on computing what it did."""
