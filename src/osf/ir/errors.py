"""Errors raised by osf; each names the module, op or key at fault and says what to do."""
from __future__ import annotations

import os
import sys

_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def user_stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` called right after this that shows the first caller outside
    osf (the user's line), however deep inside osf the warning is raised."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


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
