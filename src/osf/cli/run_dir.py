"""The run directory that ``osf train`` writes and ``osf search`` / ``osf export`` read: everything
needed to rebuild the trained supernet without the original Python model.

    RUN_DIR/run.json        model and data specs, space options, train settings, final validation accuracy
    RUN_DIR/ir/             the traced model (``ir.save``), weights already sorted by salience
    RUN_DIR/checkpoints/    osf.train checkpoints; the newest holds the trained shared weights
    RUN_DIR/metrics.jsonl   one line per training step
    RUN_DIR/search/         osf search: the Pareto front (front.json, front.png)
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..ir import FormatError, load_ir
from ..search.files import write_json_atomic
from ..supernet import Supernet
from ..train import checkpoint as ckpt
from ..train.ema import copy_shadow
from .models import SpecError

RUN_FILE, IR_DIR, CHECKPOINTS = "run.json", "ir", "checkpoints"
FORMAT = "osf-run-1"


@dataclass
class Run:
    """What ``run.json`` records. ``space`` holds ``SearchSpace`` options, ``train`` the ``TrainSettings``,
    ``result`` the outcome of the last ``osf train`` (step, validation accuracy of the max/min subnets),
    ``import_root`` the working directory of the first ``osf train`` where a spec is ``python:pkg.module:NAME``
    (later commands import it from there, wherever they run), ``data_fingerprint`` a hash of the data it
    started on."""
    model: str
    data: str
    space: dict[str, Any]
    train: dict[str, Any]
    image_size: int | list[int] | None = None  # a square's side or [height, width]
    result: dict[str, Any] = field(default_factory=dict)
    import_root: str | None = None
    data_fingerprint: str | None = None  # Splits.fingerprint() when the run started (None: recorded before)


@dataclass
class Trained:
    """A supernet rebuilt from a run directory, with the weights of its newest checkpoint (their moving
    averages for a run trained with ``--ema``)."""
    supernet: Supernet
    run: Run
    step: int
    checkpoint: Path


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a ``run.json`` (an ``osf train`` run directory)."""
    return (Path(path) / RUN_FILE).is_file()


def read_run(run_dir: str | os.PathLike) -> Run:
    """The ``Run`` recorded in ``run_dir``; ``SpecError`` if there is none, ``FormatError`` if it is damaged."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise SpecError(f"'{run_dir}' is not an osf run directory (no {RUN_FILE}); create one with "
                        f"osf train MODEL --data SPEC --out {run_dir}")
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise ValueError(f"not an {FORMAT} file")
        return Run(**data)
    except (ValueError, TypeError) as e:
        raise FormatError(f"{path} is corrupt ({e}); train into a new run directory") from None


def write_run(run_dir: str | os.PathLike, run: Run) -> None:
    """Write ``run.json`` atomically (temporary file, then rename)."""
    write_json_atomic(Path(run_dir) / RUN_FILE, {"format": FORMAT, **asdict(run)}, overwrite=True)


def build_supernet(run_dir: str | os.PathLike, run: Run) -> Supernet:
    """The supernet of a run from its saved IR, untrained weights. ``sort=False``: the saved weights are
    already in salience order, and sorting again would permute them away from the checkpoints'."""
    # a glob that matches nothing is refused for new runs; one a run was trained with is kept (warned about)
    return Supernet(None, ir=load_ir(Path(run_dir) / IR_DIR), sort=False, copy_ir=False, unmatched_globs="warn",
                    **run.space)


def load_trained(run_dir: str | os.PathLike) -> Trained:
    """The trained supernet of ``run_dir``: its IR, space options and newest checkpoint (whose fingerprint
    must match, else ``CheckpointError``). Needs neither the model's code nor its spec to resolve."""
    run = read_run(run_dir)
    supernet = build_supernet(run_dir, run)
    found = ckpt.checkpoints(Path(run_dir) / CHECKPOINTS)
    if not found:
        raise SpecError(f"run directory '{run_dir}' has no checkpoint yet; run osf train on it first")
    state = ckpt.load(found[-1], supernet)
    if state.get("ema"):  # a run trained with --ema is scored, searched and exported on its moving averages
        copy_shadow(supernet, state["ema"]["shadow"])
    supernet.eval()
    return Trained(supernet, run, state["step"], found[-1])
