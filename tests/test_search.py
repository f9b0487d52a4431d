"""Search stage: exact cost model, latency, NSGA-II / random search under constraints, the Pareto front."""
from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import osf
from osf.cli.builtin import ResidualCNN, TinyViT, digits
from osf.search.archs import canonical, representative
from osf.search.front import Point, dominates
from osf.search.surrogate import fit_ridge, pick


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are tiny: a second thread gains nothing, and on a busy machine it stalls (spin waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----- the cost model against the reference (the cost of the arch's rewritten IR) -----

COST_MODELS = ["resnet18", "googlenet", "timm:vit_tiny_patch16_224", "bert"]  # BN + residuals, eval graph, ViT, HF


def _reference_cost(supernet: osf.Supernet, arch: osf.Arch) -> dict[str, int]:
    from osf.space.subnet import structure_cost, subnet_structure
    return structure_cost(subnet_structure(supernet.space, arch))


def _assert_costs_match(supernet: osf.Supernet, archs: int) -> None:
    model = osf.CostModel(supernet)
    space = supernet.space
    for arch in [space.max(), space.min()] + [space.sample(seed) for seed in range(archs)]:
        assert model(arch) == _reference_cost(supernet, arch) == supernet.cost(arch), arch.to_json()


@pytest.mark.parametrize("name", COST_MODELS)
def test_cost_model_equals_reference(name):
    from models import supernet
    _assert_costs_match(supernet(name)[0], archs=8)


def test_cost_model_counts_recurrent_layers_as_the_reference_does():
    """LSTM, GRU and RNN layers and cells have FLOPs (``osf.ir.flops``); the cost model used to skip them
    (timm's Sequencer2D: 19.7 of its 33.3 GFLOPs), so FLOP budgets let recurrent subnets through too cheap."""
    from test_flops import _Recurrent
    torch.manual_seed(0)
    supernet = osf.Supernet(_Recurrent().eval(), (torch.randn(2, 5, 8),))
    assert len(supernet.space.groups) >= 3  # the recurrent hidden sizes
    _assert_costs_match(supernet, archs=10)


def test_supernet_cost_rewrites_each_arch_where_the_cost_model_refuses_the_model(monkeypatch):
    """``Supernet.cost`` works per op through a ``CostModel``; a model that the cost model refuses (a unit
    that changes dims) is costed from each arch's rewritten IR, with the same results."""
    import osf.supernet.supernet as supernet_module

    def refuse(_space):
        raise NotImplementedError("unit 'x' changes dims")
    torch.manual_seed(0)
    per_op = osf.Supernet(ResidualCNN(1, 10, width=16, blocks=3), (torch.randn(2, 1, 8, 8),))
    per_op.cost(per_op.space.max())  # makes its cost model
    monkeypatch.setattr(supernet_module, "CostModel", refuse)
    rewritten = osf.Supernet(None, ir=per_op.ir)
    space = per_op.space
    for arch in [space.max(), space.min(), *(space.sample(i) for i in range(5))]:
        assert rewritten.cost(arch) == per_op.cost(arch) == _reference_cost(per_op, arch)
    assert isinstance(rewritten._costs, str) and not isinstance(per_op._costs, str)


@pytest.mark.parametrize("make", [lambda: ResidualCNN(1, 10, width=16, blocks=3), lambda: TinyViT(1, 10, depth=3)])
def test_cost_model_equals_reference_builtin(make):
    torch.manual_seed(0)
    supernet = osf.Supernet(make(), (torch.randn(2, 1, 8, 8),))
    _assert_costs_match(supernet, archs=20)
    # partial archs mean full width / kept, like everywhere else
    model = osf.CostModel(supernet)
    key = supernet.space.groups[0].key
    partial = osf.Arch({key: supernet.space.groups[0].choices[0]}, {})
    assert model(partial) == _reference_cost(supernet, partial)
    with pytest.raises(ValueError, match="unknown width group"):
        model(osf.Arch({"nope": 3}, {}))


def test_cost_model_counts_tied_weights_once():
    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 32)
            self.mid = torch.nn.Linear(32, 32)
            self.out = torch.nn.Linear(32, 50, bias=False)
            self.out.weight = self.embed.weight

        def forward(self, ids):
            return self.out(torch.relu(self.mid(self.embed(ids))))

    supernet = osf.Supernet(Tied(), (torch.randint(0, 50, (2, 5)),))
    model = osf.CostModel(supernet)
    assert model(supernet.space.max())["params"] == 50 * 32 + 32 * 32 + 32
    _assert_costs_match(supernet, archs=6)


# ----- a small trained supernet with BatchNorm on real data -----

@pytest.fixture(scope="module")
def digits_setup():
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = digits()
    supernet = osf.Supernet(ResidualCNN(1, 10, width=16, blocks=3), (x_train[:2],))
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True)
    osf.train(supernet, train_loader, optimizer=torch.optim.AdamW(supernet.parameters(), lr=3e-3),
              loss_fn=torch.nn.functional.cross_entropy, epochs=1)
    calib = DataLoader(TensorDataset(x_train, y_train), batch_size=64, shuffle=True)
    return supernet, calib, (x_test, y_test)


class Counter:
    """``evaluate(model)``: accuracy on the test split, recording the active arch of every call."""

    def __init__(self, supernet, data):
        self.supernet, self.data, self.archs = supernet, data, []

    def __call__(self, model) -> float:
        assert model is self.supernet and not model.training
        self.archs.append(model.arch)
        x, y = self.data
        with torch.no_grad():
            return float((model(x).argmax(-1) == y).float().mean())


def _search(setup, counter=None, **kw):
    supernet, calib, data = setup
    counter = counter or Counter(supernet, data)
    kw.setdefault("budget", 12)
    front = osf.search(supernet, counter, calib_loader=calib, calib_batches=2, progress=False, **kw)
    return front, counter


def _vector(p, objectives):
    return tuple(-p.accuracy if o == "accuracy" else getattr(p, o) for o in objectives)


def test_an_evaluate_that_never_runs_the_model_it_is_given_is_warned_about_once(digits_setup):
    supernet, _, (x, y) = digits_setup
    original = supernet.extract(supernet.space.max()).eval()  # a user's evaluate closing over the wrong model

    def scores_the_original(model):
        with torch.no_grad():
            return float((original(x).argmax(-1) == y).float().mean())
    with pytest.warns(UserWarning, match=r"returned without calling the model it was given") as caught:
        front, _ = _search(digits_setup, counter=scores_the_original, budget=4)
    assert len(caught) == 1 and caught[0].filename == __file__  # once, at the user's call
    assert len({p.accuracy for p in front.points}) == 1  # what the warning is about: one score for all
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an evaluate that runs the model: no warning
        _search(digits_setup, budget=4)


@pytest.mark.parametrize("algorithm", ["surrogate", "nsga2", "random"])
def test_a_search_that_runs_out_of_subnets_before_its_budget_says_so(algorithm, capsys):
    torch.manual_seed(0)
    tiny = osf.Supernet(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)),
                        (torch.randn(2, 8),))  # widths 8 and 16 of one group: two subnets
    x, y = torch.randn(32, 8), torch.randint(0, 4, (32,))
    front = osf.search(tiny, lambda m: float((m(x).argmax(-1) == y).float().mean()), budget=30, algorithm=algorithm)
    assert len(front.points) == 2 and front.info["stopped"] != "budget reached"
    assert f"stopped before the budget of 30: {front.info['stopped']}" in front.table()  # the bar stopped at 2/30
    assert f"stopped: {front.info['stopped']}" in capsys.readouterr().err
    full = osf.search(tiny, lambda m: float((m(x).argmax(-1) == y).float().mean()), budget=2, algorithm=algorithm,
                      progress=False)
    assert full.info["stopped"] == "budget reached" and "stopped" not in full.table()


@pytest.mark.parametrize("algorithm", ["surrogate", "nsga2", "random"])
def test_front_is_pareto_optimal_and_complete(digits_setup, algorithm):
    objectives = ("accuracy", "flops", "params")
    front, counter = _search(digits_setup, objectives=objectives, budget=16, algorithm=algorithm)
    assert len(front.points) == 16 == len(counter.archs) == front.info["new_evaluations"]
    pareto = front.pareto
    assert pareto and all(p.pareto for p in pareto)
    vectors = [_vector(p, objectives) for p in pareto]
    for a in vectors:  # no front point dominates another
        assert not any(dominates(b, a) for b in vectors)
    for p in front.points:  # every other point is dominated by (or ties with) a front point
        if not p.pareto:
            v = _vector(p, objectives)
            assert any(dominates(b, v) or b == v for b in vectors)
    flops = [p.flops for p in pareto]
    assert flops == sorted(flops)
    assert front.best().accuracy == max(p.accuracy for p in front.points)


def test_hypervolume_is_the_area_under_the_fronts_staircase(digits_setup):
    """``Front.hypervolume``: the area (cost as a fraction of the full model's, accuracy) that the evaluated
    points dominate against (1, 0); dominated points and those costlier than the full model add nothing."""
    arch = osf.Arch({}, {})
    points = [Point(arch, acc, params, flops) for acc, params, flops in
              [(0.5, 40, 25), (0.8, 10, 50), (0.7, 30, 60), (0.9, 100, 100), (1.0, 5, 150)]]
    front = osf.Front(points, reference={"flops": 100.0, "params": 100.0})
    assert front.hypervolume() == pytest.approx(0.25 * 0.5 + 0.5 * 0.8)  # steps at 25 %, 50 %, up to 100 %
    assert front.hypervolume("params") == pytest.approx(0.95 * 1.0)  # the cheapest is also the best
    with pytest.raises(ValueError, match="no full-model latency to scale by"):
        front.hypervolume("latency")
    searched = _search(digits_setup, objectives=("accuracy", "flops"), budget=8, algorithm="random")[0]
    more = _search(digits_setup, objectives=("accuracy", "flops"), budget=16, algorithm="random")[0]
    assert 0 < searched.hypervolume() <= more.hypervolume() <= 1  # a superset of the evaluated subnets


@pytest.mark.parametrize("algorithm", ["surrogate", "nsga2", "random"])
def test_constraints_are_honoured_before_evaluation(digits_setup, algorithm):
    supernet = digits_setup[0]
    full = osf.CostModel(supernet)(supernet.space.max())
    front, counter = _search(digits_setup, constraints={"flops": "30%", "params": 0.5 * full["params"]},
                             algorithm=algorithm)
    assert front.limits == {"flops": pytest.approx(0.3 * full["flops"]), "params": pytest.approx(0.5 * full["params"])}
    assert front.info["rejected"] > 0
    costs = osf.CostModel(supernet)
    for arch in counter.archs:  # nothing over budget was ever evaluated
        c = costs(arch)
        assert c["flops"] <= 0.3 * full["flops"] and c["params"] <= 0.5 * full["params"]
    assert all(p.flops <= front.limits["flops"] and p.params <= front.limits["params"] for p in front.points)


def test_only_motif_representatives_are_evaluated(digits_setup):
    supernet = digits_setup[0]
    front, counter = _search(digits_setup, budget=20, algorithm="random", seed=3)
    tensors = supernet.tensors()
    keys = [canonical(supernet.space, a).key() for a in counter.archs]
    assert len(set(keys)) == len(keys) == 20  # each subnet once
    for arch, key in zip(counter.archs, keys):  # each one its motif's most salient member
        assert representative(supernet.space, arch, tensors).key() == key
        assert canonical(supernet.space, supernet.space.salient(arch, tensors)).key() == key
    # a non-representative member of a motif: its evaluation is the representative's
    units = [u for u in supernet.space.units if u.key.startswith("blocks.") and "/" not in u.key]
    first_only = osf.Arch({}, {u.key: i == 0 for i, u in enumerate(units)})
    rep = representative(supernet.space, first_only, tensors)
    assert rep.key() != canonical(supernet.space, first_only).key()


def test_cache_resumes_without_reevaluating(digits_setup, tmp_path):
    cache = tmp_path / "evals.jsonl"
    first, c1 = _search(digits_setup, budget=10, cache=cache)
    assert len(c1.archs) == 10 and len(cache.read_text().splitlines()) == 11  # header + one line each
    again, c2 = _search(digits_setup, budget=10, cache=cache)
    assert c2.archs == [] and again.info["cache_hits"] == 10
    assert [p.to_json() for p in again.points] == [p.to_json() for p in first.points]
    more, c3 = _search(digits_setup, budget=14, cache=cache)
    assert len(c3.archs) == 4 and more.info["cache_hits"] == 10

    # a crash after 3 evaluations, with the last line cut short: the rerun evaluates only what is missing
    crashed = tmp_path / "crash.jsonl"
    supernet, _, data = digits_setup

    class Crash(Counter):
        def __call__(self, model):
            if len(self.archs) == 3:
                raise RuntimeError("power cut")
            return super().__call__(model)

    with pytest.raises(RuntimeError, match="power cut"):
        _search(digits_setup, Crash(supernet, data), budget=10, cache=crashed)
    with open(crashed, "a") as f:
        f.write('{"key": "half a li')
    resumed, c4 = _search(digits_setup, budget=10, cache=crashed)
    assert len(c4.archs) == 7 and resumed.info["cache_hits"] == 3
    assert [p.to_json() for p in resumed.points] == [p.to_json() for p in first.points]


def test_cache_of_other_weights_is_refused(digits_setup, tmp_path):
    cache = tmp_path / "evals.jsonl"
    _search(digits_setup, budget=3, cache=cache)
    other = osf.Supernet(ResidualCNN(1, 10, width=16, blocks=3), (torch.randn(2, 1, 8, 8),))
    with pytest.raises(ValueError, match="another supernet"):
        osf.search(other, lambda m: 0.0, budget=3, cache=cache, calib_loader=digits_setup[1], calib_batches=2,
                   progress=False)


def test_cache_of_another_calibration_seed_is_refused(digits_setup, tmp_path):
    """The seed picks the calibration batches of a BatchNorm model: accuracies cached with another seed
    would not be what this search measures (nor what an export recalibrated with its seed scores)."""
    cache = tmp_path / "evals.jsonl"
    _search(digits_setup, budget=3, cache=cache, seed=0)
    with pytest.raises(ValueError, match=r"differs in: calib_seed"):
        _search(digits_setup, budget=3, cache=cache, seed=1)
    header = json.loads(cache.read_text().splitlines()[0])
    assert header["calib_seed"] == 0 and header["calib_batches"] == 2


def test_a_file_that_is_not_a_cache_is_refused_untouched(digits_setup, tmp_path):
    """Passing some other file as ``cache=`` must not truncate it (the partial-line repair is for caches)."""
    for name, data in (("notes.json", b'{"mine": 1}'), ("photo.png", b"\x89PNG\r\n\x1a\n\xff\xfe"),
                       ("log.txt", b"line one\nline two, no newline")):
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(osf.FormatError, match="not an osf search cache"):
            _search(digits_setup, budget=2, cache=path)
        assert path.read_bytes() == data


def test_percent_budgets_must_be_percentages():
    from osf.search.front import resolve_budget
    assert resolve_budget("flops", " 50% ", {"flops": 10.0}) == 5.0
    for bad in ("nan%", "inf%", "-5%", "x%", "50"):  # nan would silently be no limit at all
        with pytest.raises(ValueError, match="budget"):
            resolve_budget("flops", bad, {"flops": 10.0})


def test_infeasible_budget_names_the_smallest_value(digits_setup):
    supernet = digits_setup[0]
    smallest = osf.CostModel(supernet)(supernet.space.min())
    with pytest.raises(osf.InfeasibleBudget, match=f"{smallest['flops']:,}") as info:
        _search(digits_setup, objectives=("accuracy",), constraints={"flops": smallest["flops"] - 1})
    assert isinstance(info.value, osf.OsfError) and "space.min()" in str(info.value)
    with pytest.raises(osf.InfeasibleBudget, match=f"{smallest['params']:,}"):
        _search(digits_setup, constraints={"params": "0.1%"})
    with pytest.raises(ValueError, match="unknown constraint 'accuracy'"):
        _search(digits_setup, constraints={"accuracy": 0.5})


def test_single_budget_search(digits_setup):
    front, _ = _search(digits_setup, objectives=("accuracy",), constraints={"flops": "25%"})
    best = front.best()
    assert len(front.pareto) == 1 and front.pareto[0] is best
    assert best.flops <= 0.25 * front.reference["flops"]
    assert best.accuracy == max(p.accuracy for p in front.points)
    assert front.best(flops="25%") is best
    tight = min(p.flops for p in front.points)
    assert front.best(flops=tight).flops == tight
    with pytest.raises(osf.InfeasibleBudget, match="smallest in this front"):
        front.best(flops=tight - 1)


def test_batchnorm_is_recalibrated_and_restored(digits_setup):
    supernet, calib, data = digits_setup
    before = {k: v.detach().clone() for k, v in supernet.tensors().items()}
    mean_name = supernet.batch_norms()[0][0]
    seen = []

    def evaluate(model):
        seen.append(model.tensors()[mean_name].clone())
        return Counter(supernet, data)(model)

    supernet.train()
    front = osf.search(supernet, evaluate, budget=6, calib_loader=calib, calib_batches=2, progress=False)
    assert len(seen) == 6 and all(not torch.equal(s, before[mean_name]) for s in seen)
    after = supernet.tensors()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # weights and statistics untouched
    assert supernet.training and supernet.arch.key() == supernet.space.max().key()
    assert front.points
    with pytest.raises(ValueError, match="calib_loader"):
        osf.search(supernet, evaluate, budget=2, progress=False)


def test_ridge_surrogate_recovers_a_linear_metric():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 6, generator=gen, dtype=torch.float64).numpy()
    truth = torch.randn(6, generator=gen, dtype=torch.float64).numpy()
    predict = fit_ridge(x, x @ truth + 0.5)
    fresh = torch.rand(10, 6, generator=gen, dtype=torch.float64).numpy()
    assert predict(fresh) == pytest.approx(fresh @ truth + 0.5, abs=0.02)  # the smallest penalty fits it


def test_pick_prefers_the_candidates_that_extend_the_front():
    front = np.array([[0.2, 0.8], [0.8, 0.2]])  # objectives minimised, reference point (1, 1)
    dominated, middle, near_middle, dominant = [0.5, 0.9], [0.5, 0.5], [0.55, 0.45], [0.1, 0.1]
    assert pick(front, np.array([dominated, middle, near_middle, dominant]), 1, random.Random(0)) == [3]
    # the middle point adds 0.09, its neighbour 0.0875 and, once the middle one is in, 0.0025; the dominated
    # point adds nothing and comes last
    assert pick(front, np.array([dominated, middle, near_middle]), 3, random.Random(0)) == [1, 2, 0]


def test_surrogate_search_beats_random_search_where_its_regression_fits(digits_setup):
    """A metric linear in the arch's width fractions and kept units, which the ridge regression represents
    exactly: at the same budget the surrogate's front dominates more than random search's, for every seed."""
    supernet = digits_setup[0]
    space = supernet.space
    gen = torch.Generator().manual_seed(1)
    width_gain = {g.key: float(w) for g, w in zip(space.groups, torch.rand(len(space.groups), generator=gen))}
    unit_gain = {u.key: float(w) for u, w in zip(space.units, torch.rand(len(space.units), generator=gen))}
    costs = osf.CostModel(supernet)
    full = costs(space.max())["flops"]

    def metric(model) -> float:
        arch = canonical(space, model.arch)
        return (sum(width_gain[g.key] * arch.width[g.key] / g.size for g in space.groups)
                + sum(unit_gain[u.key] * arch.depth[u.key] for u in space.units))

    def volume(front) -> float:  # FLOPs fraction (minimised) against the metric (maximised), reference (1, 0)
        area, best = 0.0, []
        for f, a in sorted((p.flops / full, p.accuracy) for p in front.points):
            if not best or a > best[-1][1]:
                best.append((f, a))
        for (f, a), nxt in zip(best, [b[0] for b in best[1:]] + [1.0]):
            area += (nxt - f) * a
        return area

    for seed in range(3):
        fronts = {a: osf.search(supernet, metric, budget=24, algorithm=a, seed=seed, population=8,
                                calib_loader=digits_setup[1], calib_batches=1, progress=False)
                  for a in ("surrogate", "random")}
        assert volume(fronts["surrogate"]) > volume(fronts["random"]), seed


def test_calibration_batches_do_not_depend_on_the_loaders_own_generator(digits_setup, monkeypatch):
    """A DataLoader with its own generator shuffles with it, not with torch's global state: every subnet
    must still be recalibrated on the same batches, whatever the generator's state before the search (a
    resumed search skips the cached evaluations, and with them the draws they made), and the user's
    generator is left as it was."""
    supernet, _, data = digits_setup
    x, y = data
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(7))
    seen = []
    recalibrate = supernet.recalibrate

    def spy(arch, loader, batches=50, batch_fn=None):
        taken = list(itertools.islice(loader, batches))
        seen.append(tuple(float(b[0].sum()) for b in taken))
        return recalibrate(arch, taken, batches, batch_fn)

    monkeypatch.setattr(supernet, "recalibrate", spy)
    fronts = []
    for skip in (0, 3):  # the generator advanced by a few passes before the second search
        for _ in range(skip):
            list(loader)
        state = loader.generator.get_state()
        fronts.append(osf.search(supernet, Counter(supernet, data), budget=6, algorithm="random", seed=2,
                                 calib_loader=loader, calib_batches=2, progress=False))
        assert torch.equal(loader.generator.get_state(), state)
    assert len(seen) == 12 and len(set(seen)) == 1
    assert [p.to_json() for p in fronts[0].points] == [p.to_json() for p in fronts[1].points]


def test_recalibrating_with_the_search_seed_reproduces_the_fronts_accuracy(digits_setup):
    """An exported BatchNorm subnet must score what the front says: recalibrated with the search's seed and
    calibration batches (``front.info``), the extracted subnet's accuracy equals the point's, whatever the
    loader's generator did in between; the same call always gives the same statistics."""
    supernet, _, data = digits_setup
    x, y = data
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(7))
    saved = {k: v.detach().clone() for k, v in supernet.tensors().items()}
    try:
        front = osf.search(supernet, Counter(supernet, data), budget=6, algorithm="random", seed=4,
                           calib_loader=loader, calib_batches=2, progress=False)
        assert (front.info["seed"], front.info["calib_batches"]) == (4, 2)
        mean_name = supernet.batch_norms()[0][0]
        for point in front.pareto:
            list(loader)  # the generator moves on, as a user's training would move it
            state = loader.generator.get_state()
            supernet.recalibrate(point.arch, loader, front.info["calib_batches"], seed=front.info["seed"])
            assert torch.equal(loader.generator.get_state(), state)
            model = supernet.extract(point.arch).eval()
            with torch.no_grad():
                assert float((model(x).argmax(-1) == y).float().mean()) == pytest.approx(point.accuracy, abs=1e-9)
        statistics = supernet.tensors()[mean_name].clone()
        supernet.recalibrate(point.arch, loader, 2, seed=5)  # other batches: other statistics
        assert not torch.equal(supernet.tensors()[mean_name], statistics)
        supernet.recalibrate(point.arch, loader, 2, seed=4)
        assert torch.equal(supernet.tensors()[mean_name], statistics)
    finally:
        with torch.no_grad():
            for k, v in supernet.tensors().items():
                v.copy_(saved[k])


def test_same_seed_same_front(digits_setup):
    for algorithm in ("surrogate", "nsga2", "random"):
        a, _ = _search(digits_setup, algorithm=algorithm, seed=5)
        b, _ = _search(digits_setup, algorithm=algorithm, seed=5)
        c, _ = _search(digits_setup, algorithm=algorithm, seed=6)
        assert [p.to_json() for p in a.points] == [p.to_json() for p in b.points]
        assert [p.arch.key() for p in a.points] != [p.arch.key() for p in c.points]


def test_front_save_load_table_and_plot(digits_setup, tmp_path):
    front, _ = _search(digits_setup)
    path = tmp_path / "front.json"
    front.save(path)
    loaded = osf.Front.load(path)
    assert loaded.to_json() == front.to_json()
    assert [p.arch.key() for p in loaded.pareto] == [p.arch.key() for p in front.pareto]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        front.save(path)
    front.save(path, overwrite=True)
    assert json.loads(path.read_text())["format"] == "osf-front"
    with pytest.raises(osf.FormatError):
        (tmp_path / "bad.json").write_text("{}")
        osf.Front.load(tmp_path / "bad.json")

    text = front.table()
    lines = text.splitlines()
    assert "accuracy" in lines[1] and "FLOPs" in lines[1] and len(lines) == 2 + len(front.pareto)
    assert lines[0].endswith(f"; hypervolume {front.hypervolume('flops'):.4f} (flops)")
    assert len(front.table(all_points=True).splitlines()) == 2 + len(front.points)
    assert str(front) == text

    png = tmp_path / "front.png"
    front.plot(png)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(FileExistsError):
        front.plot(png)
    front.plot(png, x="params", overwrite=True)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_evaluate_must_return_a_finite_number(digits_setup):
    supernet, calib, _ = digits_setup
    with pytest.raises(ValueError, match="must be finite"):
        osf.search(supernet, lambda m: math.nan, budget=2, calib_loader=calib, calib_batches=1, progress=False)


# ----- latency -----

@pytest.fixture(scope="module")
def small_supernet():
    torch.manual_seed(0)
    return osf.Supernet(ResidualCNN(1, 10, width=16, blocks=2), (torch.randn(2, 1, 8, 8),))


def test_latency_is_measured_once_per_subnet(small_supernet, tmp_path, monkeypatch):
    calls = []
    extract = small_supernet.extract
    monkeypatch.setattr(small_supernet, "extract", lambda arch: calls.append(arch) or extract(arch))
    cache = tmp_path / "latency.json"
    latency = osf.LatencyModel(small_supernet, batch_size=4, warmup=1, runs=3, cache=cache)
    arch = small_supernet.space.sample(1)
    seconds = latency.measure(arch)
    assert seconds > 0 and len(calls) == 1
    assert latency(arch) == seconds and len(calls) == 1  # cached in memory
    again = osf.LatencyModel(small_supernet, batch_size=4, warmup=1, runs=3, cache=cache)
    assert again.measure(arch) == seconds and len(calls) == 1  # and in the file
    other = osf.LatencyModel(small_supernet, batch_size=8, warmup=1, runs=3, cache=cache)
    other.measure(arch)
    assert len(calls) == 2  # other settings: measured again, in its own section of the same file
    assert len(json.loads(cache.read_text())["sections"]) == 2
    args, _ = latency.example_inputs()
    assert args[0].shape == (4, 1, 8, 8)


def test_latency_cache_of_another_kind_is_refused(small_supernet, tmp_path):
    for text in ("[1, 2]", '{"format": "osf-latency", "sections": []}', '{"format": "osf-front"}'):
        path = tmp_path / "latency.json"
        path.write_text(text)
        with pytest.raises(osf.FormatError, match="not an osf-latency cache"):
            osf.LatencyModel(small_supernet, cache=path)
        assert path.read_text() == text


def test_latency_table_predicts_and_reports_its_error(small_supernet, monkeypatch):
    latency = osf.LatencyModel(small_supernet, batch_size=4, warmup=1, runs=3)
    table = osf.LatencyTable(latency)
    arch = small_supernet.space.max()
    predicted = table.predict(arch)
    assert predicted > 0 and table.table
    runs = []
    monkeypatch.setattr(small_supernet, "subnet_ir", lambda a: runs.append(a))
    assert table.predict(arch) == predicted and runs == []  # every op already timed: no run
    monkeypatch.undo()
    report = table.error(3)
    assert report["archs"] == 3 and len(report["rows"]) == 3
    assert math.isfinite(report["mape"]) and report["mape"] >= 0 and report["max_ape"] >= report["mape"]
    for row in report["rows"]:
        assert row["ape"] == pytest.approx(abs(row["predicted_s"] - row["measured_s"]) / row["measured_s"])


def test_latency_of_token_inputs():
    from models import supernet
    bert = supernet("bert")[0]
    latency = osf.LatencyModel(bert, batch_size=3, warmup=1, runs=2)
    _, kwargs = latency.example_inputs()
    assert kwargs["input_ids"].shape == (3, 12) and kwargs["input_ids"].dtype == torch.int64
    assert latency.measure(bert.space.sample(0)) > 0
    assert osf.LatencyTable(latency).predict(bert.space.sample(0)) > 0


def test_search_with_latency(digits_setup):
    supernet = digits_setup[0]
    table = osf.LatencyTable(osf.LatencyModel(supernet, batch_size=2, warmup=1, runs=2))
    front, _ = _search(digits_setup, objectives=("accuracy", "latency"), constraints={"latency": "70%"},
                       latency=table, budget=8)
    assert all(p.latency is not None and p.latency <= front.limits["latency"] for p in front.points)
    assert front.limits["latency"] == pytest.approx(0.7 * front.reference["latency"])
    assert "latency" in front.table()
    with pytest.raises(ValueError, match="latency="):
        _search(digits_setup, objectives=("accuracy", "latency"))


def test_subnets_whose_outputs_ignore_the_inputs_are_never_scored():
    """A ViT without blocks classifies its class token alone. NSGA-II's first generation used to hold the
    all-dropped encoding (and offspring drop everything often): such a subnet, at chance accuracy and the
    lowest cost, became the front's cheapest point. Now it is rejected before evaluation."""
    torch.manual_seed(0)
    x, y = digits()[2:]
    supernet = osf.Supernet(TinyViT(1, 10), (x[:2],))
    space = supernet.space
    assert space.cut_outputs(osf.Arch(space.min().width, {u.key: False for u in space.units})) == [0]
    scored = []

    def evaluate(model) -> float:
        scored.append(model.arch)
        with torch.no_grad():
            return float((model(x[:64]).argmax(-1) == y[:64]).float().mean())

    for algorithm in ("surrogate", "nsga2", "random"):
        front = osf.search(supernet, evaluate, budget=40, algorithm=algorithm, population=8, progress=False)
        assert len(front.points) == 40 and not any(space.cut_outputs(p.arch) for p in front.points)
        # offspring that drop the encoder are counted; uniform samples are drawn again instead
        if algorithm != "surrogate":
            assert (front.info["ignores_inputs"] > 0) == (algorithm == "nsga2"), front.info
    assert scored and not any(space.cut_outputs(a) for a in scored)
