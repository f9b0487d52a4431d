"""``Arch``: one point of a search space — a width per group and keep/drop per removable unit."""
from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Arch:
    """``width[group key]`` = channels (or heads) kept; ``depth[unit key]`` = True to keep the unit."""
    width: dict[str, int] = field(default_factory=dict)
    depth: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # NumPy / 0-d tensor scalars (an arch built from a search library's arrays) as Python ints and
        # bools, so the arch's key and JSON stay those of the same choices given as Python values
        self.width = {k: _plain(v) for k, v in self.width.items()}
        self.depth = {k: _plain(v) for k, v in self.depth.items()}

    def to_json(self) -> dict:
        return {"width": dict(self.width), "depth": dict(self.depth)}

    @classmethod
    def from_json(cls, data: dict | str) -> "Arch":
        if isinstance(data, str):
            data = json.loads(data)
        unknown = set(data) - {"width", "depth"}
        if unknown:
            raise ValueError(f"unknown Arch keys {sorted(unknown)}; an Arch has 'width' and 'depth'")
        return cls({str(k): int(v) for k, v in data.get("width", {}).items()},
                   {str(k): bool(v) for k, v in data.get("depth", {}).items()})

    def key(self) -> str:
        """A stable string identifying this arch (for caches and result tables)."""
        return json.dumps(self.to_json(), sort_keys=True)

    def __hash__(self) -> int:
        return hash(self.key())


def _plain(value: object) -> object:
    """A NumPy or 0-d tensor scalar as its Python value, an integral float as an int; anything else as
    it is (``SearchSpace.validate`` names what is not a choice)."""
    if type(value) is int or type(value) is bool:  # nearly every arch: nothing to convert
        return value
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", None) == 0:
        value = item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
