"""``Front``: the result of a search — every evaluated subnet with its metrics, the Pareto-optimal ones
marked — as a plain object that saves to JSON, prints as a table and plots as a PNG."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from ..ir.errors import FormatError, OsfError
from ..space.arch import Arch
from .files import read_json, write_atomic, write_json_atomic

COSTS = ("params", "flops", "latency")
METRICS = ("accuracy",) + COSTS


class InfeasibleBudget(OsfError, ValueError):
    """No subnet meets a budget; the message states the smallest achievable value."""


@dataclass
class Point:
    """One evaluated subnet: its arch, ``accuracy`` (the user's metric, higher is better), ``params``,
    ``flops``, ``latency`` (seconds, or None when not measured), whether it is Pareto-optimal for the
    search objectives, and a short ``summary`` of the arch."""
    arch: Arch
    accuracy: float
    params: int
    flops: int
    latency: float | None = None
    pareto: bool = False
    summary: str = ""

    def value(self, metric: str) -> float:
        v = getattr(self, metric) if metric in METRICS else None
        if v is None:
            raise KeyError(f"metric '{metric}' is not recorded for this point; metrics: "
                           f"{[m for m in METRICS if getattr(self, m) is not None]}")
        return v

    def to_json(self) -> dict:
        return {"arch": self.arch.to_json(), "accuracy": self.accuracy, "params": self.params, "flops": self.flops,
                "latency": self.latency, "pareto": self.pareto, "summary": self.summary}

    @classmethod
    def from_json(cls, data: dict) -> "Point":
        return cls(Arch.from_json(data["arch"]), float(data["accuracy"]), int(data["params"]), int(data["flops"]),
                   None if data.get("latency") is None else float(data["latency"]), bool(data.get("pareto", False)),
                   str(data.get("summary", "")))


@dataclass
class Front:
    """Every evaluated point (in evaluation order), the search ``objectives`` and ``constraints`` (as given
    and as absolute limits), the ``reference`` costs of the full model (what ``"50%"`` budgets refer to)
    and ``info`` about the run (algorithm, seed, budget, evaluations, cache hits, time)."""
    points: list[Point]
    objectives: tuple[str, ...] = ("accuracy", "flops")
    constraints: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.objectives = tuple(self.objectives)
        for o in self.objectives:
            if o not in METRICS:
                raise ValueError(f"unknown objective '{o}'; objectives: {METRICS}")
        mark_pareto(self.points, self.objectives)

    @property
    def score_name(self) -> str:
        """What the ``accuracy`` objective measures, as the search was told (``osf.search(score_name=)``)."""
        return str(self.info.get("score", "accuracy"))

    def _first_cost(self) -> str | None:
        """The first objective other than accuracy (what the front is ordered and plotted by), if any."""
        return next((o for o in self.objectives if o != "accuracy"), None)

    @property
    def pareto(self) -> list[Point]:
        """The Pareto-optimal points, by increasing cost (the first cost objective; accuracy decreasing on
        ties or when accuracy is the only objective)."""
        cost = self._first_cost()
        key = (lambda p: (p.value(cost), -p.accuracy)) if cost is not None else (lambda p: -p.accuracy)
        return sorted((p for p in self.points if p.pareto), key=key)

    def best(self, **budgets: float | str) -> Point:
        """The most accurate point within every budget, e.g. ``best(flops=2e8)``, ``best(params="25%")``
        (of the full model's value) or ``best(latency=0.004)``; ties go to the fewest FLOPs, then params.
        ``InfeasibleBudget`` if none fits."""
        limits = {k: resolve_budget(k, v, self.reference) for k, v in budgets.items()}
        if not self.points:
            raise InfeasibleBudget("this front has no evaluated subnet (the search found none within its "
                                   "constraints); search again with a larger budget or looser constraints")
        fits = [p for p in self.points if all(_fits(p, k, lim) for k, lim in limits.items())]
        if not fits:
            parts = []
            for k, lim in limits.items():
                values = [getattr(p, k) for p in self.points if getattr(p, k) is not None]
                smallest = min(values) if values else None
                parts.append(f"{k} <= {format_metric(k, lim)} (smallest in this front: "
                             f"{format_metric(k, smallest) if smallest is not None else 'not measured'})")
            raise InfeasibleBudget(f"no evaluated subnet meets {' and '.join(parts)}; relax the budget or search "
                                   "with it as a constraint")
        return max(fits, key=lambda p: (p.accuracy, -p.flops, -p.params))

    def hypervolume(self, cost: str | None = None) -> float:
        """The area this front dominates in the plane of ``cost`` (default: the first cost objective) as a
        fraction of the full model's, minimised, against accuracy, maximised, from the reference point
        (1, 0): between 0 and 1 (a free subnet of accuracy 1), a single number to compare search runs or
        supernets by. Every evaluated point counts; those costlier than the full model add nothing."""
        cost = cost or self._first_cost() or "flops"
        if not self.reference.get(cost):
            raise ValueError(f"this front holds no full-model {cost} to scale by (reference: {sorted(self.reference)}); "
                             f"pick one of those")
        points = [(p.value(cost) / self.reference[cost], p.accuracy) for p in self.points
                  if getattr(p, cost) is not None]
        staircase: list[tuple[float, float]] = []  # the points no cheaper one beats, by increasing cost
        for c, a in sorted(points, key=lambda ca: (ca[0], -ca[1])):
            if c <= 1 and (not staircase or a > staircase[-1][1]):
                staircase.append((c, a))
        ends = [c for c, _ in staircase[1:]] + [1.0]
        return sum((end - c) * max(a, 0.0) for (c, a), end in zip(staircase, ends))

    # ----- files -----
    def to_json(self) -> dict:
        return {"format": "osf-front", "version": 1, "objectives": list(self.objectives),
                "constraints": self.constraints, "limits": self.limits, "reference": self.reference,
                "info": self.info, "points": [p.to_json() for p in self.points]}

    @classmethod
    def from_json(cls, data: dict) -> "Front":
        if not isinstance(data, dict) or data.get("format") != "osf-front":
            raise FormatError("not an osf front (expected a JSON object with format 'osf-front')")
        if data.get("version") != 1:
            raise FormatError(f"osf front version {data.get('version')} is not supported (this osf reads 1)")
        try:
            points = [Point.from_json(p) for p in data["points"]]
            return cls(points, tuple(data["objectives"]), data.get("constraints", {}), data.get("limits", {}),
                       data.get("reference", {}), data.get("info", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"damaged osf front: {type(e).__name__}: {e}") from None

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write JSON to ``path`` atomically; an existing file raises unless ``overwrite=True``."""
        write_json_atomic(path, self.to_json(), overwrite=overwrite)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Front":
        try:
            return cls.from_json(read_json(path))
        except FormatError as e:
            raise FormatError(f"{path}: {e}") from None

    # ----- reports -----
    def table(self, *, all_points: bool = False) -> str:
        """An aligned text table of the Pareto front (``all_points=True``: every point, front marked ``*``),
        ordered as ``pareto``."""
        rows = self.pareto if not all_points else sorted(self.points, key=lambda p: (not p.pareto, -p.accuracy))
        show_latency = any(p.latency is not None for p in self.points)
        head = ["#", self.score_name, "params", "FLOPs"] + (["latency"] if show_latency else []) + ["arch"]
        body = []
        for i, p in enumerate(rows, 1):
            cells = [f"{i}{'*' if all_points and p.pareto else ''}", f"{p.accuracy:.4f}",
                     format_metric("params", p.params), format_metric("flops", p.flops)]
            if show_latency:
                cells.append(format_metric("latency", p.latency) if p.latency is not None else "-")
            body.append(cells + [p.summary])
        widths = [max(len(r[c]) for r in [head] + body) for c in range(len(head))]
        lines = ["  ".join(cell.ljust(w) if c == len(head) - 1 else cell.rjust(w)
                           for c, (cell, w) in enumerate(zip(r, widths))).rstrip() for r in [head] + body]
        title = (f"Pareto front: {len(self.pareto)} of {len(self.points)} evaluated subnets; objectives "
                 f"{', '.join(self.score_name if o == 'accuracy' else o for o in self.objectives)}")
        if self.limits:
            title += "; constraints " + ", ".join(f"{k} <= {format_metric(k, v)}" for k, v in self.limits.items())
        cost = self._first_cost()
        if cost is not None and self.reference.get(cost):
            title += f"; hypervolume {self.hypervolume(cost):.4f} ({cost})"
        stopped, budget = self.info.get("stopped"), self.info.get("budget")
        if stopped and stopped != "budget reached" and budget:  # say why fewer subnets than asked were evaluated
            title += f"; stopped before the budget of {budget}: {stopped}"
        return "\n".join([title] + lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Front({len(self.points)} points, {len(self.pareto)} Pareto-optimal, objectives={self.objectives})"

    def plot(self, path: str | os.PathLike, x: str = "flops", y: str = "accuracy", *, overwrite: bool = False,
             marked: dict[str, Point] | None = None) -> None:
        """A PNG of every evaluated point (grey) and the Pareto front of ``x`` against ``y`` (a step line),
        written atomically; an existing file raises unless ``overwrite=True``. ``marked``: points to ring
        and label (e.g. the subnets you export), by label."""
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError("Front.plot needs matplotlib: pip install matplotlib") from None

        for axis in (x, y):
            if axis not in METRICS:
                raise ValueError(f"cannot plot '{axis}'; metrics: {METRICS}")
        points = [p for p in self.points if getattr(p, x) is not None and getattr(p, y) is not None]
        if not points:
            raise ValueError(f"no point has both {x} and {y}")
        both = points + list((marked or {}).values())  # marked points share the axes' units
        (xs, xlabel), (ys, ylabel) = _axis(x, both, self.score_name), _axis(y, both, self.score_name)
        xs, mxs, ys, mys = xs[:len(points)], xs[len(points):], ys[:len(points)], ys[len(points):]
        fig = Figure(figsize=(6.4, 4.4), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.scatter(xs, ys, s=14, color="0.65", label=f"evaluated ({len(points)})", zorder=2)
        front = sorted(mark_pareto(list(points), (x, y), inplace=False), key=lambda i: (xs[i], ys[i]))
        fx, fy = [xs[i] for i in front], [ys[i] for i in front]
        # best y reachable at a cost <= x holds until the next front point (the reverse when x is accuracy)
        ax.step(fx, fy, where="pre" if x == "accuracy" else "post", color="C0", linewidth=1.8, zorder=3)
        ax.scatter(fx, fy, s=26, color="C0", zorder=4, label=f"Pareto front ({len(front)})")
        for label, px, py in zip(marked or {}, mxs, mys):
            ax.scatter([px], [py], s=90, facecolors="none", edgecolors="C3", linewidths=1.6, zorder=5)
            ax.annotate(label, (px, py), xytext=(6, -12), textcoords="offset points", fontsize="small", color="C3")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        ax.set_title(f"{ylabel.split(' (')[0]} vs {xlabel.split(' (')[0]}", fontsize="medium")
        fig.tight_layout()
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"), overwrite=overwrite)


def mark_pareto(points: list[Point], objectives: tuple[str, ...], *, inplace: bool = True) -> list[int]:
    """Indices of the non-dominated points (accuracy maximised, costs minimised; of several points with
    equal values only the cheapest, by FLOPs then params); with ``inplace`` also sets each point's ``pareto`` flag. Points missing
    an objective are never optimal."""
    vectors = []
    for p in points:
        values = [getattr(p, o) for o in objectives]
        vectors.append(None if any(v is None for v in values) else
                       tuple(-v if o == "accuracy" else v for o, v in zip(objectives, values)))
    best: dict[tuple, int] = {}  # of points with equal objective values, the cheapest (then the first) is kept
    for i, a in enumerate(vectors):
        if a is not None and not any(b is not None and dominates(b, a) for b in vectors):
            if a not in best or _cheaper(points[i], points[best[a]]):
                best[a] = i
    optimal = sorted(best.values())
    if inplace:
        chosen = set(optimal)
        for i, p in enumerate(points):
            p.pareto = i in chosen
    return optimal


def _cheaper(a: Point, b: Point) -> bool:
    return (a.flops, a.params) < (b.flops, b.params)


def dominates(a: tuple, b: tuple) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere (all minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def resolve_budget(metric: str, value: float | str, reference: dict[str, float]) -> float:
    """An absolute limit from ``3e6`` or ``"50%"`` (of ``reference[metric]``, the full model's value)."""
    if metric not in COSTS:
        raise ValueError(f"cannot budget '{metric}'; budgets apply to {COSTS}")
    if isinstance(value, str):
        text = value.strip()
        if not text.endswith("%"):
            raise ValueError(f"{metric} budget {value!r}: give a number or a percentage such as '50%'")
        try:
            fraction = float(text[:-1]) / 100
        except ValueError:
            fraction = math.nan
        if not math.isfinite(fraction) or fraction < 0:  # nan would compare false: no limit at all
            raise ValueError(f"{metric} budget {value!r} is not a percentage such as '50%'")
        if metric not in reference:
            raise ValueError(f"{metric} budget {value!r} is relative, but the full model's {metric} is unknown "
                             "(pass an absolute value)")
        return fraction * reference[metric]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{metric} budget {value!r} must be a non-negative number or a percentage string")
    return float(value)


def _fits(p: Point, metric: str, limit: float) -> bool:
    v = getattr(p, metric)
    return v is not None and v <= limit


def format_metric(metric: str, value: float) -> str:
    """A metric's value for people: latency in ms, accuracy to 4 places, counts with K/M/G/T."""
    if metric == "latency":
        return f"{value * 1e3:.3g} ms"
    if metric == "accuracy":
        return f"{value:.4f}"
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}"


def _axis(metric: str, points: list[Point], score_name: str = "accuracy") -> tuple[list[float], str]:
    values = [float(getattr(p, metric)) for p in points]
    if metric == "accuracy":
        return values, ("accuracy (your metric; higher is better)" if score_name == "accuracy"
                        else f"{score_name} (higher is better)")
    if metric == "latency":
        return [v * 1e3 for v in values], "latency (ms per forward)"
    top = max(abs(v) for v in values)
    div, prefix = next(((d, s) for d, s in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")) if top >= d), (1, ""))
    unit = f"{prefix}FLOPs" if metric == "flops" else (f"{prefix} parameters" if prefix else "parameters")
    if metric == "flops":
        return [v / div for v in values], f"FLOPs ({unit}, 1 multiply-add = 2)"
    return [v / div for v in values], f"parameters ({unit.strip()})"
