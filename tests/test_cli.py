"""`osf inspect`: model specs, table, folding, JSON, Graphviz, saved IRs, bad input."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from osf.cli.main import main


def test_inspect_table_folds_by_depth(capsys):
    assert main(["inspect", "torchvision:resnet18", "--depth", "1", "--image-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "layer1" in out and "BasicBlock" not in out and "Sequential" in out
    assert "[B, 3, 64, 64]" in out and "[B, 1000]" in out
    assert "11.69M" in out and "FLOPs" in out


def test_inspect_json_and_dot(tmp_path, capsys):
    dot = tmp_path / "g.dot"
    assert main(["inspect", "hf:bert", "--json", "--dot", str(dot), "--level", "encoder.layer"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [m["name"] for m in data["modules"]]
    assert "encoder.layer.1.attention.self.query" in names
    root = next(m for m in data["modules"] if m["name"] == "")
    assert root["params"] == data["metadata"][""]["num_params"] > 0
    text = dot.read_text()
    assert text.startswith('digraph "encoder.layer"') and "BertLayer" in text and "->" in text


def test_inspect_user_factory_and_saved_ir(tmp_path, capsys):
    saved = tmp_path / "toy"
    assert main(["inspect", "python:toys:tiny_factory", "--save", str(saved)]) == 0
    first = capsys.readouterr().out
    assert "TiedLM" in first and "shared" in first
    assert main(["inspect", str(saved)]) == 0
    assert "TiedLM" in capsys.readouterr().out


@pytest.mark.parametrize("spec, message", [
    ("nosuch:thing", "unknown model spec"),
    ("torchvision:not_a_model", "unknown torchvision model"),
    ("hf:nope", "unknown hf architecture"),
    ("python:toys:missing", "cannot load factory"),
])
def test_bad_specs_exit_nonzero_with_one_line_cause(spec, message, capsys):
    assert main(["inspect", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "osf.cli.main", "inspect", "sam:tiny", "--depth", "1"],
                         capture_output=True, text=True, check=True).stdout
    assert "ImageEncoderViT" in out and "blocks" in out


def test_docs_example_runs():
    from pathlib import Path
    example = Path(__file__).parents[1] / "docs" / "ir_example.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, check=True).stdout
    assert "'status': 'verified'" in out and "('4', 'output')" in out


def test_space_docs_example_runs():
    from pathlib import Path
    example = Path(__file__).parents[1] / "docs" / "space_example.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, check=True).stdout
    assert "SearchSpace(12 groups, 14 units" in out and "'params'" in out


def test_train_docs_example_runs(tmp_path):
    from pathlib import Path
    example = Path(__file__).parents[1] / "docs" / "train_example.py"
    out = subprocess.run([sys.executable, str(example), str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    assert "min subnet logits (3, 10)" in out and "resumed from step 92" in out
    max_acc = float(out.split("max:")[1].split("accuracy")[1].split()[0])
    assert max_acc > 0.9  # four epochs on digits
    assert (tmp_path / "metrics.jsonl").exists() and list((tmp_path / "checkpoints").iterdir())
