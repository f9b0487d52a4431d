"""osf — turn any PyTorch model into a once-for-all weight-sharing supernet.

``osf.trace`` captures a model into a hierarchical graph IR that rebuilds an exact executable model
(``ir.build()``) and saves without pickling (``ir.save`` / ``osf.load_ir``). ``osf.SearchSpace`` derives
width groups and removable units from the IR; ``osf.Supernet`` extracts any ``osf.Arch`` as a standalone,
smaller model and costs it.
"""
from .ir import IR, FormatError, InputError, OsfError, TraceError, load_ir, trace
from .space import Arch, SearchSpace
from .supernet import Supernet

__version__ = "0.1.0"
__all__ = ["trace", "IR", "load_ir", "Arch", "SearchSpace", "Supernet", "TraceError", "FormatError", "InputError", "OsfError", "__version__"]
