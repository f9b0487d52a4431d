"""Fork-join training over torch.distributed (gloo, 2 ranks, launched by torchrun): equal to the same
subnets accumulated in one process, unlike the naive per-rank updates; elastic restart after a rank is
killed; mismatched ranks are refused. The worker script is tests/distributed_worker.py.

Tolerance of the equivalence: the two runs add the same gradients in a different order (per rank, then
across ranks), so weights agree to float32 rounding: relative difference (Frobenius norm per tensor)
at most 1e-6 after 6 SGD steps; measured up to 5e-7."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import distributed_worker as worker
from osf.train.forkjoin import labelled_weights, plan

WORKER = Path(__file__).with_name("distributed_worker.py")
pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def torchrun(scenario: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(WORKER.parent))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *extra, str(WORKER), scenario, str(out)], env=env, capture_output=True, text=True,
                          timeout=300)


def torchrun_two_nodes(scenario: str, out: Path) -> list[subprocess.CompletedProcess]:
    """Two torchrun agents (one rank each) meeting through c10d rendezvous, as on two machines."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(WORKER.parent))
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "osf-test",
                                str(WORKER), scenario, str(out)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for agent in agents:
        stdout, stderr = agent.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(agent.args, agent.returncode, stdout, stderr))
    return results


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).double().norm() / b[k].double().norm().clamp_min(1e-12)) for k in a)


def test_plan_covers_every_subnet_and_row_once():
    picks = [(f"r{i}", None) for i in range(5)]
    for k in (1, 2, 3, 4, 5):
        for world in (1, 2, 3, 4):
            per_rank = [plan(picks[:k], 10, rank, world) for rank in range(world)]
            assert len({len(items) for items in per_rank}) == 1  # balanced
            rows = {}
            for items in per_rank:
                for it in items:
                    rows.setdefault(it.index, []).extend(range(it.start, it.stop))
            assert sorted(rows) == list(range(k))
            for index, covered in rows.items():
                assert sorted(covered) == list(range(10))
            weights = {}
            for items in per_rank:
                for it in items:
                    weights[it.index] = weights.get(it.index, 0.0) + it.weight
            assert all(abs(w - 1.0) < 1e-12 for w in weights.values())
    assert [(it.index, it.start, it.stop) for it in plan(picks[:4], 8, 1, 2)] == [(2, 0, 8), (3, 0, 8)]
    # shards of a batch whose targets leave some out (-100) count with their labelled share, not their rows
    tags = torch.tensor([[1, 2, -100], [-100, -100, -100], [0, 1, 2], [2, -100, -100]])  # 2 + 0 + 3 + 1 labelled
    shards = [labelled_weights(plan(picks[:1], 4, rank, 2), tags, 4)[0] for rank in range(2)]
    assert [(it.start, it.stop, it.weight) for it in shards] == [(0, 2, 2 / 6), (2, 4, 4 / 6)]
    whole = plan(picks[:2], 4, 0, 2)  # whole batches, or targets that leave nothing out: as planned
    assert labelled_weights(whole, tags, 4) == whole
    assert labelled_weights(plan(picks[:1], 4, 0, 2), tags.clamp(min=0), 4) == plan(picks[:1], 4, 0, 2)


@pytest.mark.slow
def test_fork_join_equals_sequential_and_naive_updates_do_not(tmp_path):
    done = torchrun("equivalence", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for case in worker.CASES:
        supernet, _ = worker.run(case, parallel=False)
        reference = worker.weights(supernet)
        parallel = load_file(str(tmp_path / f"{case}.safetensors"))
        assert relative_difference(parallel, reference) <= 1e-6, case
        if case == "cnn-sandwich-k2":
            hazard = reference
    for how in ("last", "average"):  # each rank stepping its own copy is not the joint objective's update
        naive = load_file(str(tmp_path / f"naive-{how}.safetensors"))
        assert relative_difference(naive, hazard) > 1e-2, how


def test_fork_join_keeps_the_moving_average_and_validates_as_one_process(tmp_path):
    done = torchrun("ema-validation", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _, result = worker.run("cnn-sandwich-k4", parallel=False, ema_decay=0.9, validate_every=2)
    assert relative_difference(load_file(str(tmp_path / "ema.safetensors")), result.ema.shadow) <= 1e-6
    ranks = [json.loads((tmp_path / f"scores-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]  # the same weights and data on every rank: the same scores
    one = [{k: v for k, v in r.items() if k.startswith("val_")} for r in result.history]
    assert [sorted(r) for r in ranks[0]] == [sorted(r) for r in one]  # after steps 2, 4 and 6
    assert len([r for r in one if r]) == 3 and all(k.endswith(("max", "min", "max_ema", "min_ema")) for r in one for k in r)
    for parallel, single in zip(ranks[0], one):  # weights equal to rounding: a prediction of 360 flips at most
        for k in single:
            assert abs(parallel[k] - single[k]) <= 1 / 360 + 1e-9, k


@pytest.mark.slow
def test_two_nodes_through_rendezvous_equal_sequential(tmp_path):
    for done in torchrun_two_nodes("one-case", tmp_path):
        assert done.returncode == 0, done.stderr[-3000:]
    supernet, _ = worker.run("cnn-sandwich-k4", parallel=False)
    parallel = load_file(str(tmp_path / "cnn-sandwich-k4.safetensors"))
    assert relative_difference(parallel, worker.weights(supernet)) <= 1e-6


@pytest.mark.slow
def test_fork_join_trains_a_model_around_the_supernet_as_one_process_does(tmp_path):
    """``model=``: the enclosing model's own weights are broadcast, their gradients summed and their
    counters joined like the supernet's, so two ranks end where one process does."""
    done = torchrun("enclosing", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    parallel = load_file(str(tmp_path / "enclosing.safetensors"))
    reference = worker.weights(worker.run_enclosing(parallel=False))
    assert {k for k in reference if k.startswith("head.")} == {"head.weight", "head.bias"}
    assert relative_difference(parallel, reference) <= 1e-10  # float64: only the summation order differs
    assert "3 subnets per step cannot be dealt out over 2 ranks" in (tmp_path / "enclosing-k3.txt").read_text()


@pytest.mark.slow
def test_plain_ddp_with_unused_parameter_detection_trains_different_subnets_per_rank(tmp_path):
    """Users who wrap the supernet in DistributedDataParallel themselves: gradients of cut weights are
    written into ``.grad`` outside autograd's accumulation, and DDP (``find_unused_parameters=True``)
    still averages them, so each rank may train its own subnet and the ranks stay one model."""
    done = torchrun("ddp", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert relative_difference(load_file(str(tmp_path / "ddp.safetensors")), worker.run_ddp(parallel=False)) <= 1e-6


@pytest.mark.slow
def test_elastic_restart_after_a_killed_rank_loses_and_repeats_no_step(tmp_path):
    done = torchrun("elastic", tmp_path, "--max-restarts", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (tmp_path / "final-attempt0.safetensors").exists()  # rank 1 really died in the first attempt
    resumed = load_file(str(tmp_path / "final-attempt1.safetensors"))
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    supernet, _ = worker.run("vit-uniform-k3", parallel=False, steps=8)
    assert relative_difference(resumed, worker.weights(supernet)) <= 1e-6


@pytest.mark.slow
def test_ranks_with_different_settings_are_refused_at_start(tmp_path):
    done = torchrun("mismatch", tmp_path)
    assert done.returncode != 0
    assert "ConfigMismatch: the ranks of this distributed run disagree: 'optimizer.1.lr' is 0.05 on rank 0 but " \
           "0.1 on rank 1" in done.stderr


@pytest.mark.slow
def test_distributed_docs_example_runs(tmp_path):
    example = Path(__file__).parents[1] / "docs" / "distributed_example.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(example), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 ranks trained 46 steps (resumed from 0)" in done.stdout
    assert float(done.stdout.split("max: test accuracy ")[1].split()[0]) > 0.9
