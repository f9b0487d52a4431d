"""``Arch``: one point of a search space — a width per group and keep/drop per removable unit."""
from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class Arch:
    """``width[group key]`` = channels (or heads) kept; ``depth[unit key]`` = True to keep the unit."""
    width: dict[str, int] = field(default_factory=dict)
    depth: dict[str, bool] = field(default_factory=dict)

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
