"""Stage 2: the search space derived from the IR — width groups (dimension analysis), removable units
(edge contraction), salience, motifs and ``Arch``."""
from .arch import Arch
from .space import SearchSpace

__all__ = ["Arch", "SearchSpace"]
