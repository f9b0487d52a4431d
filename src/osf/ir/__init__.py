"""osf.ir — capture a model into a hierarchical graph IR, rebuild it, save and load it."""
from .capture import trace
from .errors import FormatError, InputError, ModuleReplacedError, OsfError, TraceError
from .graph import IR, Graph, ModuleNode, OpNode, Placeholder
from .io import load_ir, save_ir

__all__ = ["trace", "IR", "Graph", "ModuleNode", "OpNode", "Placeholder", "load_ir", "save_ir",
           "TraceError", "FormatError", "InputError", "ModuleReplacedError", "OsfError"]
