"""osf — turn any PyTorch model into a once-for-all weight-sharing supernet.

``osf.trace`` captures a model into a hierarchical graph IR that rebuilds an exact executable model
(``ir.build()``) and saves without pickling (``ir.save`` / ``osf.load_ir``). ``osf.SearchSpace`` derives
width groups and removable units from the IR; ``osf.Supernet`` extracts any ``osf.Arch`` as a standalone,
smaller model and costs it, and runs any subnet on its shared weights (``set_arch``); ``osf.train``
trains those weights (sandwich / motif sampling, distillation, checkpoints, ``osf.Validation`` while it
trains, an ``osf.EMA`` of the weights; ``osf.load_weights`` reads them back in another process) and
``osf.evaluate`` scores a
subnet with inherited weights; ``osf.export`` writes a subnet as ``.pt2`` / ONNX / safetensors with a
model card, loadable with plain PyTorch; ``osf.search`` finds the Pareto front of accuracy against params,
FLOPs (``osf.CostModel``) and latency (``osf.LatencyModel``) under hard budgets (``osf.Front``).
"""
from .ir import IR, FormatError, InputError, ModuleReplacedError, OsfError, TraceError, load_ir, trace
from .space import Arch, SearchSpace
from .supernet import Supernet
from .export import ExportError, export
from .search import CostModel, Front, InfeasibleBudget, LatencyModel, LatencyTable, search
from .train import (EMA, ArchSampler, Distill, MotifSampler, ProgressiveShrinking, Sampler, SandwichSampler,
                    TrainingInterrupted, UniformSampler, Validation, WarmupSampler, evaluate, load_weights, train)

__version__ = "0.1.0"
__all__ = ["trace", "IR", "load_ir", "Arch", "SearchSpace", "Supernet", "train", "load_weights", "evaluate", "Distill", "Sampler", "SandwichSampler",
           "ArchSampler", "UniformSampler", "MotifSampler", "ProgressiveShrinking", "WarmupSampler", "Validation", "EMA", "export", "ExportError", "TraceError", "FormatError", "InputError", "ModuleReplacedError", "OsfError", "TrainingInterrupted", "__version__",
           "search", "Front", "CostModel", "LatencyModel", "LatencyTable", "InfeasibleBudget"]
