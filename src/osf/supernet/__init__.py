"""Stage 3: supernets — any arch of a search space as a standalone model, costs from the IR."""
from .supernet import Supernet

__all__ = ["Supernet"]
