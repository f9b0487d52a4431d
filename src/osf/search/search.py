"""``osf.search``: multi-objective search of a trained supernet under hard budgets (surrogate-assisted
evolution, NSGA-II through pymoo, or random search as the baseline), evaluating only motif
representatives, with BatchNorm recalibration, an evaluation cache that makes a search resumable, and a
``Front`` as the result."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import random
import time
import warnings
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ..ir.errors import user_stacklevel
from ..progress import progress_bar
from ..space.arch import Arch
from ..space.space import SearchSpace
from ..supernet.batches import BatchFn, seeded
from ..supernet.supernet import Supernet
from .archs import canonical, representative, summary
from ..space.costs import CostModel
from .files import EvaluationLog
from .front import COSTS, METRICS, Front, InfeasibleBudget, Point, format_metric, resolve_budget
from .latency import graph_fingerprint
from .surrogate import breed, features, fit_ridge, pick

ALGORITHMS = ("surrogate", "nsga2", "random")
_RETRIES = 16  # further mutations of an offspring that repeats an evaluated subnet
_BAD = 1e30  # objective value pymoo sees for a candidate rejected by a constraint (never evaluated)


def search(supernet: Supernet, evaluate: Callable[[nn.Module], float], *,
           objectives: Iterable[str] = ("accuracy", "flops"), constraints: dict[str, float | str] | None = None,
           budget: int = 100, algorithm: str = "surrogate", seed: int = 0, calib_loader: Iterable | None = None,
           calib_batches: int = 20, batch_fn: BatchFn | None = None, cache: str | os.PathLike | None = None,
           latency: Callable[[Arch], float] | None = None, population: int | None = None,
           score_name: str = "accuracy", progress: bool = True) -> Front:
    """Search ``supernet`` for the subnets that best trade ``objectives`` off, within ``constraints``.

    ``evaluate(model) -> float`` is your metric (higher is better), called with the supernet set to the
    subnet (``set_arch``) in eval mode; wrap its loop in ``torch.no_grad()``. Models with BatchNorm are first
    recalibrated on ``calib_batches`` batches of ``calib_loader`` (training data; ``batch_fn`` as in
    ``osf.train``); the shared weights and statistics are restored after every evaluation.

    - ``objectives``: ``"accuracy"`` (maximised) and any of ``"params"``, ``"flops"``, ``"latency"``
      (minimised). ``("accuracy",)`` with a constraint finds the best subnet under one budget.
    - ``constraints``: hard limits, e.g. ``{"flops": "50%"}`` (of the full model) or ``{"params": 3e6}``.
      A limit below the smallest subnet's cost raises ``InfeasibleBudget`` before anything is evaluated.
    - ``budget``: number of distinct subnets evaluated. Candidates are mapped to their motif's most salient
      member first, so equivalent subnets are evaluated once.
    - ``algorithm``: ``"surrogate"`` (default: NSGA-II's first generation, then rounds of ``population``
      subnets bred from the front and picked by the hypervolume their accuracy, predicted by a ridge
      regression on the evaluated subnets, would add), ``"nsga2"`` (pymoo; ``population`` per generation,
      default ``budget // 5`` within 8..50; the first generation holds the full and the smallest subnet) or
      ``"random"`` (uniform samples of the space, rejected on cost before evaluation). ``seed`` makes each
      reproducible.
    - ``cache``: a JSON-lines file; every evaluation is appended as it finishes, and a rerun (after a crash,
      or with a larger budget) reuses them instead of calling ``evaluate`` again. The file is tied to the
      supernet's weights, ``calib_batches`` and (with ``calib_loader``) ``seed``, which picks the
      calibration batches; use a new path when you change ``evaluate`` or its data.
    - ``latency``: a ``LatencyModel`` or ``LatencyTable`` (any ``arch -> seconds``); needed for a latency
      objective or constraint, and recorded for every point when given.
    - ``score_name``: what ``evaluate`` measures (``"mIoU"``, ``"cosine to the teacher"``), shown by the front's
      table and plot (``front.info["score"]``); the objective keeps its name, ``"accuracy"``.
    """
    objectives = _check_objectives(objectives)
    constraints = dict(constraints or {})
    for k in constraints:
        if k not in COSTS:
            raise ValueError(f"unknown constraint '{k}'; constraints apply to {COSTS}")
    if ("latency" in objectives or "latency" in constraints) and latency is None:
        raise ValueError("a latency objective or constraint needs latency=osf.LatencyModel(supernet) "
                         "(or a LatencyTable)")
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"budget must be a positive number of evaluations, got {budget!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown search algorithm '{algorithm}'; choose one of {ALGORITHMS}")
    if supernet.batch_norms() and calib_loader is None:
        raise ValueError("this supernet has BatchNorm layers, whose running statistics must be re-estimated for "
                         "every subnet before it is evaluated: pass calib_loader= (a loader of training data; "
                         "calib_batches= sets how many batches)")
    started = time.perf_counter()
    run = _Run(supernet, evaluate, objectives, latency, calib_loader if supernet.batch_norms() else None,
               calib_batches, batch_fn, seed)
    run.set_limits(constraints)  # an infeasible budget fails here, before anything is written or evaluated
    if cache is not None:
        run.open_cache(cache)
    with progress_bar(total=budget, desc=f"search ({algorithm})", unit="subnet", disable=not progress) as bar:
        run.bar = bar
        population = population or min(50, max(8, budget // 5))
        if algorithm == "random":
            stopped = _random_search(run, budget, seed)
        elif algorithm == "nsga2":
            stopped = _nsga2(run, budget, seed, population)
        else:
            stopped = _surrogate_search(run, budget, seed, population)
        if stopped != "budget reached":  # the bar stays short of its total: say why there
            bar.set_postfix_str(f"stopped: {stopped}")
    info = {"algorithm": algorithm, "seed": seed, "budget": budget,
            "calib_batches": calib_batches if calib_loader is not None else None, "evaluated": len(run.points),
            "new_evaluations": run.new_evaluations, "cache_hits": run.cache_hits, "rejected": run.rejected,
            "ignores_inputs": run.ignores_inputs, "stopped": stopped,
            "seconds": round(time.perf_counter() - started, 3), "model": supernet.ir.modules[""].class_path,
            "score": score_name}
    return Front(list(run.points.values()), objectives, constraints, run.limits, run.reference, info)


def _check_objectives(objectives: Iterable[str]) -> tuple[str, ...]:
    if isinstance(objectives, str):
        objectives = (objectives,)
    objectives = tuple(objectives)
    for o in objectives:
        if o not in METRICS:
            raise ValueError(f"unknown objective '{o}'; objectives: {METRICS}")
    if len(set(objectives)) != len(objectives):
        raise ValueError(f"objectives {objectives} repeat an entry")
    if "accuracy" not in objectives:
        raise ValueError(f"objectives {objectives} lack 'accuracy': a search optimises accuracy against costs "
                         "(for the smallest subnet by cost alone, use space.min())")
    return objectives


class _Run:
    """The state of one search: costs, constraints, the evaluation cache, and the evaluated points."""

    def __init__(self, supernet: Supernet, evaluate: Callable, objectives: tuple[str, ...], latency,
                 calib_loader, calib_batches: int, batch_fn, seed: int) -> None:
        self.supernet, self.space, self.evaluate, self.seed = supernet, supernet.space, evaluate, seed
        self.objectives, self.latency = objectives, latency
        self.calib_loader, self.calib_batches, self.batch_fn = calib_loader, calib_batches, batch_fn
        self.costs = CostModel(supernet)
        self.tensors = supernet.tensors()
        # buffers change during recalibration (running statistics, num_batches_tracked): restored after each
        self.buffers = {n: t.detach().clone() for n, t in self.tensors.items() if not isinstance(t, nn.Parameter)}
        self.points: dict[str, Point] = {}
        self.known: dict[str, float] = {}
        self.reps: dict[str, Arch] = {}
        self.new_evaluations = self.cache_hits = self.rejected = self.ignores_inputs = 0
        self.calls_checked = False  # whether the first evaluation was seen to run the supernet (or warned)
        self.log: EvaluationLog | None = None
        self.bar = None
        self.reference = {k: float(v) for k, v in self.costs(self.space.max()).items()}
        if latency is not None:
            self.reference["latency"] = float(latency(self.space.max()))
        self.limits: dict[str, float] = {}

    def set_limits(self, constraints: dict[str, float | str]) -> None:
        self.limits = {k: resolve_budget(k, v, self.reference) for k, v in constraints.items()}
        smallest = self.space.min()
        low: dict[str, float] = dict(self.costs(smallest))
        for k, limit in self.limits.items():
            if k == "latency":
                low["latency"] = self.latency(smallest)
            if low[k] > limit:
                given = constraints[k]
                relative = (f" ({given} of the full model's {_exact(k, self.reference[k])})"
                            if isinstance(given, str) else "")
                raise InfeasibleBudget(f"{k} budget {_exact(k, limit)}{relative} is below the smallest achievable "
                                       f"{k}, {_exact(k, low[k])} (the smallest subnet, space.min()); raise the "
                                       "budget to at least that")

    def open_cache(self, path: str | os.PathLike) -> None:
        """Read (or start) the evaluation log at ``path``; its evaluations are not repeated."""
        calibrated = self.calib_loader is not None  # the seed picks the calibration batches
        self.log = EvaluationLog(path, _cache_header(self.supernet, self.calib_batches if calibrated else None,
                                                     self.seed if calibrated else None))
        self.known = {r["key"]: float(r["accuracy"]) for r in self.log.records}

    # ----- one candidate -----
    def visit(self, arch: Arch) -> tuple[str, list[float], list[float]]:
        """Evaluate ``arch``'s motif representative unless already done. Returns the status (``"new"``,
        ``"seen"`` or ``"rejected"``), the objective vector for the minimiser and the constraint values
        (``<= 0`` when met, normalised by the limit)."""
        costs = self.costs(arch)
        violations = self._violations(costs)
        if any(v > 0 for v in violations.values()):
            self.rejected += 1
            return "rejected", [_BAD] * len(self.objectives), self._g(violations)
        key = canonical(self.space, arch).key()
        rep = self.reps.get(key)
        if rep is None:
            rep = self.reps[key] = representative(self.space, arch, self.tensors)
        rep_key = rep.key()
        if self.space.cut_outputs(rep):  # an output ignores the inputs: not a model worth scoring
            self.ignores_inputs += 1
            return "rejected", [_BAD] * len(self.objectives), self._g(violations)
        point = self.points.get(rep_key)
        status = "seen"
        if point is None:
            metrics: dict[str, Any] = dict(self.costs(rep))
            if self.latency is not None:
                metrics["latency"] = float(self.latency(rep))
            violations = self._violations(metrics)
            if any(v > 0 for v in violations.values()):
                self.rejected += 1
                return "rejected", [_BAD] * len(self.objectives), self._g(violations)
            if rep_key in self.known:
                accuracy = self.known[rep_key]
                self.cache_hits += 1
            else:
                accuracy = self._evaluate(rep)
                self.new_evaluations += 1
                if self.log is not None:
                    self.log.append({"key": rep_key, "arch": rep.to_json(), "accuracy": accuracy})
                self.known[rep_key] = accuracy
            point = self.points[rep_key] = Point(rep, accuracy, metrics["params"], metrics["flops"],
                                                 metrics.get("latency"), summary=summary(self.space, rep))
            status = "new"
            if self.bar is not None:
                self.bar.update(1)
                self.bar.set_postfix(best=f"{max(p.accuracy for p in self.points.values()):.4f}", refresh=False)
        values = [-point.accuracy if o == "accuracy" else float(point.value(o)) for o in self.objectives]
        return status, values, self._g(self._violations({m: getattr(point, m) for m in COSTS}))

    def _violations(self, metrics: dict[str, Any]) -> dict[str, float]:
        """(value - limit) / limit per constraint whose metric is known (positive = violated)."""
        return {k: (metrics[k] - limit) / max(limit, 1e-300) for k, limit in self.limits.items()
                if metrics.get(k) is not None}

    def _g(self, violations: dict[str, float]) -> list[float]:
        return [violations.get(k, 0.0) for k in self.limits]

    def _evaluate(self, arch: Arch) -> float:
        """``evaluate`` on ``arch`` in eval mode, after BatchNorm recalibration; torch's random state and the
        calibration loader's own generator are seeded with the search seed (``seeded``), so a shuffled
        calibration loader yields the same batches for every arch, in every run and after a resume from the
        cache (and the caller's random state and loader are left as they were)."""
        supernet = self.supernet
        was_training = supernet.training
        try:
            with seeded(self.calib_loader, self.seed, supernet.device()):
                value = self._run_evaluate(arch)
        finally:
            supernet.train(was_training)
            with torch.no_grad():
                for name, saved in self.buffers.items():
                    self.tensors[name].copy_(saved)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"evaluate(model) must return a number (higher is better), got {type(value).__name__}") from None
        if not math.isfinite(value):
            raise ValueError(f"evaluate(model) returned {value} for arch {arch.to_json()}; it must be finite")
        return value

    def _run_evaluate(self, arch: Arch) -> Any:
        supernet = self.supernet
        if self.calib_loader is not None:
            supernet.recalibrate(arch, self.calib_loader, batches=self.calib_batches, batch_fn=self.batch_fn)
        supernet.eval()
        calls: list[int] = []  # the first evaluation only: an evaluate scoring another model does so every time
        hook = None if self.calls_checked else supernet.register_forward_pre_hook(lambda *_: calls.append(1))
        try:
            with supernet.set_arch(arch):
                value = self.evaluate(supernet)
        finally:
            if hook is not None:
                hook.remove()
        if hook is not None and not calls:
            warnings.warn("evaluate(model) returned without calling the model it was given (the supernet set to "
                          f"arch {arch.key()}): if it scores another model, such as the original one, every subnet "
                          "gets that model's score; run the model it is given", stacklevel=user_stacklevel())
        self.calls_checked = True
        return value


def _exact(metric: str, value: float) -> str:
    """A value in full, with its short form: ``18,752 (18.8K)``, or seconds for latency."""
    if metric == "latency":
        return f"{value:.6g} s ({format_metric(metric, value)})"
    short = format_metric(metric, value)
    return f"{value:,.0f}" + (f" ({short})" if short != f"{value:.3g}" else "")


def _cache_header(supernet: Supernet, calib_batches: int | None, calib_seed: int | None) -> dict:
    space = supernet.space
    layout = {"groups": [(g.key, g.choices) for g in space.groups], "units": [u.key for u in space.units]}
    weights = hashlib.blake2b(digest_size=16)
    for name, t in sorted(supernet.tensors().items()):
        if isinstance(t, nn.Parameter):
            weights.update(name.encode())
            weights.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return {"format": "osf-search-cache", "version": 1, "graph": graph_fingerprint(supernet.ir),
            "space": hashlib.sha256(json.dumps(layout).encode()).hexdigest()[:16], "weights": weights.hexdigest(),
            "calib_batches": calib_batches, **({"calib_seed": calib_seed} if calib_seed is not None else {})}


# ----- algorithms -----

def _random_search(run: _Run, budget: int, seed: int) -> str:
    """Uniform samples (``space.sample``); a candidate over a budget is rejected before evaluation."""
    rng = random.Random(seed)
    patience = max(1000, 20 * budget)
    misses = 0
    while len(run.points) < budget:
        status, _, _ = run.visit(run.space.sample(rng))
        misses = 0 if status == "new" else misses + 1
        if misses >= patience:
            return f"no new feasible subnet in {patience} consecutive samples"
    return "budget reached"


def _first_generation(space: SearchSpace, population: int, rng: random.Random) -> list[Arch]:
    """The first ``population`` subnets of NSGA-II and the surrogate search, canonical: the full and the
    smallest subnet, then uniform samples of the space (a coin per variable would drop the unit holding all
    blocks half of the time)."""
    return [canonical(space, a) for a in [space.max(), space.min()]
            + [space.sample(rng) for _ in range(max(0, population - 2))]]


def _surrogate_search(run: _Run, budget: int, seed: int, population: int) -> str:
    """A first generation like NSGA-II's (the full and the smallest subnet, then uniform samples), then
    rounds of ``population`` subnets bred from the front and picked by the hypervolume their predicted
    metrics add (``surrogate.py``)."""
    if importlib.util.find_spec("pymoo") is None:  # its hypervolume and non-dominated sorting
        raise ImportError("algorithm='surrogate' needs pymoo: pip install pymoo (or use algorithm='random')")
    rng = random.Random(seed)
    for arch in _first_generation(run.space, population, rng):
        if len(run.points) >= budget:
            return "budget reached"
        run.visit(arch)
    tried: set[str] = set()  # canonical keys visited by the rounds (seen, rejected or evaluated)
    stale, patience = 0, 20
    while len(run.points) < budget:
        before = len(run.points)
        for arch in _surrogate_round(run, rng, min(population, budget - len(run.points)), tried):
            if len(run.points) >= budget:
                break
            tried.add(arch.key())
            run.visit(arch)
        stale = 0 if len(run.points) > before else stale + 1
        if stale >= patience:
            return f"no new feasible subnet in {patience} rounds"
    return "budget reached"


def _surrogate_round(run: _Run, rng: random.Random, k: int, tried: set[str]) -> list[Arch]:
    """The next ``k`` subnets to evaluate, none of them ``tried`` before: accuracy (and latency, where it is
    used, being measured only) is predicted by ridge regressions fitted on the evaluated subnets; params and
    FLOPs are exact."""
    import numpy as np
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    space, points = run.space, list(run.points.values())
    if not points:  # every subnet so far was rejected: keep sampling
        return [canonical(space, space.sample(rng)) for _ in range(k)]
    predicted_latency = run.latency is not None and ("latency" in run.objectives or "latency" in run.limits)
    x = np.array([features(space, p.arch, {"params": p.params, "flops": p.flops}, run.reference) for p in points])
    accuracy = fit_ridge(x, np.array([p.accuracy for p in points]))
    latency = fit_ridge(x, np.log([max(p.latency, 1e-12) for p in points])) if predicted_latency else None
    low, high = min(p.accuracy for p in points), max(p.accuracy for p in points)
    span = 1.1 * ((high - low) or 1.0)

    def objectives(metrics: dict[str, float]) -> list[float]:  # minimised; the reference point is all ones
        return [(high - metrics["accuracy"]) / span if o == "accuracy" else metrics[o] / (1.1 * run.reference[o])
                for o in run.objectives]

    evaluated = np.array([objectives({"accuracy": p.accuracy, **{m: getattr(p, m) for m in COSTS}}) for p in points])
    best = NonDominatedSorting().do(evaluated, only_non_dominated_front=True)
    front, parents = evaluated[best], [points[i].arch for i in best]
    pool: dict[str, tuple[Arch, list[float]]] = {}
    for child in breed(space, rng, parents, [p.arch for p in points]):
        arch = canonical(space, child)
        key = arch.key()
        rep = run.reps.get(key)
        if key in pool or key in tried or key in run.points or (rep is not None and rep.key() in run.points):
            continue
        metrics: dict[str, float] = dict(run.costs(arch))
        row = np.array([features(space, arch, metrics, run.reference)])
        metrics["accuracy"] = float(accuracy(row)[0])
        if latency is not None:
            metrics["latency"] = math.exp(float(latency(row)[0]))
        if any(v > 0 for v in run._violations(metrics).values()):
            continue
        pool[key] = (arch, objectives(metrics))
    if not pool:
        return []
    archs = [a for a, _ in pool.values()]
    return [archs[i] for i in pick(front, np.array([f for _, f in pool.values()]), k, rng)]


def _nsga2(run: _Run, budget: int, seed: int, population: int) -> str:
    """NSGA-II over an integer encoding: a choice index per width group, keep (1) / drop (0) per unit."""
    import numpy as np
    try:
        from pymoo.algorithms.moo.nsga2 import NSGA2
    except ImportError:
        raise ImportError("algorithm='nsga2' needs pymoo: pip install pymoo (or use algorithm='random')") from None
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.problems.static import StaticProblem
    from pymoo.core.termination import NoTermination

    space = run.space
    groups, units = space.groups, space.units
    upper = np.array([len(g.choices) - 1 for g in groups] + [1] * len(units))
    if upper.size == 0:
        raise ValueError("the search space is empty (no width groups, no removable units): nothing to search")

    def decode(x) -> Arch:
        return Arch({g.key: g.choices[int(i)] for g, i in zip(groups, x[:len(groups)])},
                    {u.key: bool(k) for u, k in zip(units, x[len(groups):])})

    def encode(arch: Arch) -> list[int]:
        return ([g.choices.index(arch.width[g.key]) for g in groups] + [int(arch.depth[u.key]) for u in units])

    rng = np.random.default_rng(seed)
    first = [encode(arch) for arch in _first_generation(space, population, random.Random(seed))]
    problem = Problem(n_var=len(upper), n_obj=len(run.objectives), n_ieq_constr=len(run.limits), xl=0, xu=upper,
                      vtype=int)
    algorithm = NSGA2(pop_size=population, sampling=np.array(first[:population], dtype=float),
                      crossover=SBX(prob=0.9, eta=3, vtype=float, repair=RoundingRepair()),
                      mutation=PM(eta=3, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    algorithm.setup(problem, seed=seed, termination=NoTermination())
    stale, patience = 0, 20
    while True:
        pop = algorithm.ask()
        if pop is None or len(pop) == 0:  # None: pymoo made no offspring that is not a duplicate (tiny spaces)
            return "no new offspring (the population has converged)"
        X = np.round(pop.get("X")).astype(int)
        F, G, new = [], [], 0
        for i, x in enumerate(X):
            if len(run.points) >= budget:
                return "budget reached"
            status, f, g = run.visit(decode(x))
            # an offspring that is an already evaluated subnet (pymoo only removes equal encodings) is
            # mutated further: 1, then 2, 3… of its variables resampled, until it is a new subnet
            for attempt in range(_RETRIES):
                if status != "seen":
                    break
                y = x.copy()
                picks = rng.choice(len(upper), size=min(len(upper), 1 + attempt // 4), replace=False)
                y[picks] = rng.integers(0, upper[picks] + 1)
                status, f, g = run.visit(decode(y))
                if status != "seen":
                    X[i] = y
            new += status == "new"
            F.append(f)
            G.append(g)
        if len(run.points) >= budget:
            return "budget reached"
        pop.set("X", X.astype(float))
        stale = 0 if new else stale + 1
        if stale >= patience:
            return f"no new feasible subnet in {patience} generations"
        values = {"F": np.array(F, dtype=float)}
        if run.limits:
            values["G"] = np.array(G, dtype=float)
        Evaluator().eval(StaticProblem(problem, **values), pop)
        algorithm.tell(infills=pop)
