"""Export a subnet as plain PyTorch artifacts: ``.pt2`` (``torch.export``), ONNX, safetensors weights and
a model card. Nothing written needs osf to load."""
from .writer import FORMATS, ExportError, export

__all__ = ["FORMATS", "ExportError", "export"]
