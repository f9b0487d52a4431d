"""Search: exact costs (``CostModel``), measured and predicted latency (``LatencyModel``, ``LatencyTable``),
multi-objective search under budgets (``search``) and its result (``Front``)."""
from ..space.costs import CostModel
from .front import Front, InfeasibleBudget, Point
from .latency import LatencyModel, LatencyTable
from .search import search

__all__ = ["CostModel", "LatencyModel", "LatencyTable", "search", "Front", "Point", "InfeasibleBudget"]
