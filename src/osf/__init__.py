"""osf — turn any PyTorch model into a once-for-all weight-sharing supernet.

Stage 1 (this release): ``osf.trace`` captures a model into a hierarchical graph IR that rebuilds an
exact executable model (``ir.build()``) and saves without pickling (``ir.save`` / ``osf.load_ir``).
"""
from .ir import IR, FormatError, InputError, OsfError, TraceError, load_ir, trace

__version__ = "0.1.0"
__all__ = ["trace", "IR", "load_ir", "TraceError", "FormatError", "InputError", "OsfError", "__version__"]
