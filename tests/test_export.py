"""`osf.export`: the `.pt2` runs in a fresh process without osf, ONNX matches, the model card has the
numbers, writes are atomic and never overwrite silently."""
from __future__ import annotations

import collections
import copy
import inspect
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.utils._pytree as pytree
from torch import nn
from safetensors.torch import load_file, save_file

import osf
from models import supernet
from roundtrip import round_trip

BATCH = 3  # traced with batch 2


def _inputs(name: str) -> tuple[tuple, dict]:
    g = torch.Generator().manual_seed(1)
    if name == "bert":
        ids = torch.randint(0, 100, (BATCH, 12), generator=g)
        return (), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return (torch.randn(BATCH, 3, 64, 64, generator=g),), {}


def _reference(sn: osf.Supernet, arch: osf.Arch, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    was_training = sn.training
    sn.eval()
    try:
        with torch.no_grad(), sn.set_arch(arch):
            return [t for t in pytree.tree_leaves(sn(*args, **kwargs)) if isinstance(t, torch.Tensor)]
    finally:
        sn.train(was_training)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A CNN and a transformer subnet exported, with their inputs at another batch size and the
    supernet's outputs at that arch."""
    out = {}
    for name, seed in (("resnet18", 1), ("bert", 2)):
        sn = supernet(name)[0]
        arch = sn.space.sample(seed)
        directory = tmp_path_factory.mktemp("export") / name
        write = osf.export if name == "resnet18" else lambda sn, *a, **k: sn.export(*a, **k)  # the method form too
        write(sn, arch, directory, metrics={"accuracy": 0.875, "latency_ms": 1.25}, source=f"tests:{name}")
        args, kwargs = _inputs(name)
        ref = _reference(sn, arch, args, kwargs)
        save_file({**{f"arg{i}": a for i, a in enumerate(args)}, **{f"kw.{k}": v for k, v in kwargs.items()},
                   **{f"ref{i}": r for i, r in enumerate(ref)}}, str(directory.parent / "io.safetensors"))
        out[name] = (sn, arch, directory)
    return out


LOAD_WITHOUT_OSF = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoOsf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "osf" or name.startswith("osf."):
                raise ImportError("osf is blocked in this process")

    sys.meta_path.insert(0, NoOsf())
    import torch, torch.utils._pytree as pytree
    import transformers.modeling_outputs  # defines BERT's output type (the model card says so)
    from safetensors.torch import load_file

    report = {}
    for directory in sys.argv[1:]:
        io = load_file(directory + "/../io.safetensors")
        args = [io[k] for k in sorted(io) if k.startswith("arg")]
        kwargs = {k[3:]: v for k, v in io.items() if k.startswith("kw.")}
        model = torch.export.load(directory + "/model.pt2").module()
        with torch.no_grad():
            out = [t for t in pytree.tree_leaves(model(*args, **kwargs)) if isinstance(t, torch.Tensor)]
        ref = [io[f"ref{i}"] for i in range(len(out))]
        model.load_state_dict(load_file(directory + "/weights.safetensors"))  # same names and shapes
        report[directory] = {"n": len(out), "n_ref": sum(k.startswith("ref") for k in io),
                             "shapes": [list(t.shape) for t in out],
                             "diff": max(float((a - b).abs().max()) for a, b in zip(out, ref))}
    try:
        import osf
        report["import osf"] = "succeeded"
    except ImportError:
        report["import osf"] = "blocked"
    report["osf loaded"] = [m for m in sys.modules if m == "osf" or m.startswith("osf.")]
    print(json.dumps(report))
""")


def test_pt2_runs_in_plain_torch_without_osf(exported):
    dirs = [str(d) for _, _, d in exported.values()]
    run = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_OSF, *dirs], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["import osf"] == "blocked" and report["osf loaded"] == []
    for d in dirs:
        r = report[d]
        assert r["n"] == r["n_ref"] >= 1 and r["shapes"][0][0] == BATCH
        assert r["diff"] <= 1e-5, (d, r)


def test_onnx_matches_the_supernet(exported):
    onnx = pytest.importorskip("onnx")
    for name, (sn, arch, directory) in exported.items():
        model = onnx.load(str(directory / "model.onnx"))
        onnx.checker.check_model(model)
        try:
            import onnxruntime
        except ImportError:
            continue
        args, kwargs = _inputs(name)
        session = onnxruntime.InferenceSession(str(directory / "model.onnx"))
        names = [i.name for i in session.get_inputs()]
        feeds = dict(zip(names, [a.numpy() for a in args] + [kwargs[n].numpy() for n in names[len(args):]]))
        out = session.run(None, feeds)
        ref = _reference(sn, arch, args, kwargs)
        assert torch.allclose(torch.from_numpy(out[0]), ref[0], atol=1e-4), name


def test_onnx_runtime_int8_quantization_of_the_exported_file(exported, tmp_path):
    """What docs/export.md suggests instead of eager-mode quantization: ONNX Runtime's dynamic int8
    quantization of the BERT subnet's model.onnx runs and stays within 5 % of the outputs' range."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    import onnxruntime
    sn, arch, directory = exported["bert"]
    quantized = tmp_path / "model.int8.onnx"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process first
    try:
        quantization.quantize_dynamic(str(directory / "model.onnx"), str(quantized),
                                      weight_type=quantization.QuantType.QInt8)
    finally:
        root.setLevel(level)
    args, kwargs = _inputs("bert")
    session = onnxruntime.InferenceSession(str(quantized))
    out = torch.from_numpy(session.run(None, {i.name: kwargs[i.name].numpy() for i in session.get_inputs()})[0])
    ref = _reference(sn, arch, args, kwargs)[0]
    assert out.shape == ref.shape
    assert float((out - ref).abs().max()) <= 0.05 * float(ref.max() - ref.min())


def test_torchao_weight_quantization_works_on_extracted_models_as_on_the_original():
    """torchao's ``quantize_`` swaps the weights of ``nn.Linear`` / ``nn.Embedding`` modules for tensor
    subclasses that implement ``F.linear`` / ``F.embedding``. Generated code called the ATen overloads, which
    reach such a subclass decomposed (``aten.t``: NotImplementedError); it now calls the functions eager code
    calls. The quantized max subnet equals the quantized original; a quantized subnet stays near its float self."""
    quantization = pytest.importorskip("torchao.quantization")
    sn, model, args, kwargs = supernet("bert")
    model.eval()
    embeddings = lambda module, name: isinstance(module, nn.Embedding)  # noqa: E731
    configs = [(quantization.Int8WeightOnlyConfig(), None),
               (quantization.IntxWeightOnlyConfig(weight_dtype=torch.int8), embeddings)]
    arch = sn.space.sample(3)
    for config, filter_fn in configs:
        original, extracted, sub = copy.deepcopy(model), sn.extract(sn.space.max()).eval(), sn.extract(arch).eval()
        with torch.no_grad():
            float_out, float_sub = original(*args, **kwargs).logits, sub(*args, **kwargs).logits
        for m in (original, extracted, sub):
            quantization.quantize_(m, config, filter_fn=filter_fn)
        kinds = {type(m.weight).__name__ for m in sub.modules() if isinstance(m, (nn.Linear, nn.Embedding))}
        assert kinds - {"Parameter"}, kinds  # the subnet's layers were found and quantized
        with torch.no_grad():
            quantized, quantized_sub = original(*args, **kwargs).logits, sub(*args, **kwargs).logits
            assert not torch.equal(quantized, float_out)  # the weights did change
            torch.testing.assert_close(extracted(*args, **kwargs).logits, quantized, atol=1e-6, rtol=1e-5)
        assert float((quantized_sub - float_sub).abs().max()) <= 0.05 * float(float_sub.max() - float_sub.min())


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated by torch, still what some runtimes load
def test_torchscript_traces_an_extracted_subnet(tmp_path):
    """docs/export.md: jit.trace works on an extracted subnet (scripting does not: generated Python)."""
    sn = supernet("resnet18")[0]
    sub = sn.extract(sn.space.sample(1)).eval()
    (x,), _ = _inputs("resnet18")
    with torch.no_grad():
        traced = torch.jit.trace(sub, (x[:2],))
    traced.save(str(tmp_path / "sub.pt"))
    loaded = torch.jit.load(str(tmp_path / "sub.pt"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), sub(x), atol=1e-5, rtol=1e-4)  # another batch than traced


def test_the_docs_torchao_example_quantizes_an_extracted_subnet():
    pytest.importorskip("torchao.quantization")
    text = (Path(__file__).parents[1] / "docs" / "export.md").read_text()
    namespace: dict = {}
    exec(compile(text.split("```python\n# torchao_example\n")[1].split("```")[0], "torchao_example", "exec"), namespace)
    layers = [m for m in namespace["small"].modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 2 and all(type(m.weight).__name__ == "Int8Tensor" for m in layers)
    assert namespace["logits"].shape == (4, 10)


def test_model_card_has_the_numbers(exported):
    sn, arch, directory = exported["bert"]
    card = json.loads((directory / "card.json").read_text())
    cost, full = sn.cost(arch), sn.cost(sn.space.max())
    assert (card["params"], card["flops"]) == (cost["params"], cost["flops"])
    assert card["full_model"] == full and card["metrics"] == {"accuracy": 0.875, "latency_ms": 1.25}
    assert card["model"] == {"class": "transformers.models.bert.modeling_bert.BertForSequenceClassification",
                             "source": "tests:bert"}
    assert card["versions"]["torch"] == torch.__version__ and card["versions"]["osf"] == osf.__version__
    assert card["import_before_loading"] == ["transformers.modeling_outputs"]
    assert [i["name"] for i in card["inputs"]] == ["input_ids", "attention_mask"]
    assert osf.Arch.from_json((directory / "arch.json").read_text()) == arch
    md = (directory / "model_card.md").read_text()
    for text in (f"{cost['params']:,}", f"{cost['flops']:,}", "| accuracy | 0.875 |", "| latency_ms | 1.25 |",
                 "torch.export.load", "import transformers.modeling_outputs", "model(input_ids=input_ids", "tests:bert"):
        assert text in md, text
    weights = load_file(str(directory / "weights.safetensors"))
    expected = sn.extract(arch).state_dict()
    assert sorted(weights) == sorted(expected) and all(torch.equal(weights[k], v) for k, v in expected.items())


def test_never_overwrites_silently_and_keeps_the_old_export_on_failure(exported, tmp_path):
    sn, arch, _ = exported["resnet18"]
    target = tmp_path / "out"
    osf.export(sn, arch, target, formats=("pt2",))
    before = (target / "card.json").read_text()
    with pytest.raises(FileExistsError, match=f"{target}.*overwrite=True"):
        osf.export(sn, arch, target, formats=("pt2",))
    with pytest.raises(ValueError, match="example inputs do not match"):  # fails after staging began
        osf.export(sn, arch, target, formats=("pt2",), overwrite=True, example={"nope": torch.zeros(1)})
    with pytest.raises(ValueError, match="size 1 in dynamic dim B"):  # export would fix the batch to 1
        osf.export(sn, arch, target, formats=("pt2",), overwrite=True, example=torch.zeros(1, 3, 64, 64))
    assert (target / "card.json").read_text() == before
    other = sn.space.min()
    osf.export(sn, other, target, formats=("pt2",), overwrite=True)
    assert osf.Arch.from_json((target / "arch.json").read_text()) == other
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old copies left
    with pytest.raises(ValueError, match="unknown export format"):
        osf.export(sn, arch, tmp_path / "x", formats=("tflite",))


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_onnx_skipped_with_a_note_when_not_installed(exported, tmp_path, monkeypatch):
    sn, arch, _ = exported["resnet18"]
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import raises ImportError
    records, logger = _Records(), logging.getLogger("osf.export")
    logger.addHandler(records)
    try:
        osf.export(sn, arch, tmp_path / "out", formats=("onnx",))
    finally:
        logger.removeHandler(records)
    assert not (tmp_path / "out" / "model.onnx").exists()
    assert any("ONNX skipped" in m for m in records.messages)
    card = json.loads((tmp_path / "out" / "card.json").read_text())
    assert "onnxscript is not installed" in card["skipped"]["onnx"]


def test_metrics_that_are_not_json_fail_before_any_work(exported, tmp_path):
    sn, arch, _ = exported["resnet18"]
    with pytest.raises(ValueError, match="export metrics must be JSON"):
        osf.export(sn, arch, tmp_path / "x", metrics={"accuracy": torch.tensor(0.5)})
    assert not (tmp_path / "x").exists()


def test_batch_norm_statistics_are_fitted_to_the_exported_subnet_or_warned_about(tmp_path):
    import warnings
    from torch.utils.data import DataLoader, TensorDataset
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4))
    sn = osf.Supernet(model, (torch.randn(2, 3, 8, 8),))
    loader = DataLoader(TensorDataset(torch.randn(64, 3, 8, 8) * 3 + 1, torch.zeros(64)), batch_size=8, shuffle=True)
    arch = sn.space.min()
    before = {k: v.clone() for k, v in sn.state_dict().items()}
    with pytest.warns(UserWarning, match=r"keeps the supernet's current BatchNorm statistics.*calib_loader=") as w:
        osf.export(sn, arch, tmp_path / "shared", formats=("pt2",))
    assert w[0].filename == __file__
    osf.export(sn, arch, tmp_path / "fitted", formats=("pt2",), calib_loader=loader)
    after = sn.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the supernet's statistics restored
    twin = copy.deepcopy(sn)
    twin.recalibrate(arch, loader, 20, seed=0)  # what export did, on a copy
    expected = twin.extract(arch).state_dict()
    written = load_file(str(tmp_path / "fitted" / "weights.safetensors"))
    assert written.keys() == expected.keys()
    for k in written:
        torch.testing.assert_close(written[k], expected[k], msg=k)
    assert not torch.allclose(written["1.running_mean"], before["net.1.running_mean"][:8])  # really refitted
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # recalibrated just before: nothing to warn about
        assert twin.calibrated(arch) and not twin.calibrated(twin.space.max())
        osf.export(twin, arch, tmp_path / "recalibrated", formats=("pt2",))
    twin.train()
    with torch.no_grad(), twin.set_arch(arch):
        twin(torch.randn(4, 3, 8, 8))  # a train-mode forward moves the statistics again
    assert not twin.calibrated(arch)


def test_pt2_with_a_dynamic_keyword_input_runs_at_other_lengths(tmp_path):
    """torch.export's input guards name the forward's parameters: with ``forward(*args, **kwargs)`` a guard
    on a keyword input (here the sequence length) broke ``ExportedProgram.module()``. The card gives the bound
    export put on the length (the position table), where it used to say any size works."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=64)
    ids = torch.randint(0, 100, (2, 12))
    sn = osf.Supernet(transformers.BertModel(cfg).eval(), (), {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                      trace_options={"dynamic_seq": True})
    arch = sn.space.sample(0)
    assert list(inspect.signature(sn.extract(arch).forward).parameters)[:2] == ["input_ids", "attention_mask"]
    sn.export(arch, tmp_path / "out", formats=("pt2",))
    bounds = {m["name"]: m["bounds"] for m in json.loads((tmp_path / "out" / "card.json").read_text())["inputs"]}
    assert bounds["input_ids"] == {"1": [None, 64]}  # the position table: the card must not say "any size"
    assert "`input_ids` dim 1 (S): at most 64" in (tmp_path / "out" / "model_card.md").read_text()
    model = torch.export.load(str(tmp_path / "out" / "model.pt2")).module()
    other = {"input_ids": torch.randint(0, 100, (BATCH, 9)), "attention_mask": torch.ones(BATCH, 9, dtype=torch.long)}
    with torch.no_grad():
        got = model(**other).last_hidden_state
    assert got.shape == (BATCH, 9, 32)
    torch.testing.assert_close(got, _reference(sn, arch, (), other)[0], atol=1e-5, rtol=1e-4)


def test_export_in_bfloat16_casts_weights_inputs_and_card(exported, tmp_path):
    """``dtype=torch.bfloat16``: the .pt2 takes bfloat16 inputs and gives the supernet's outputs at that arch
    to bfloat16 rounding (2e-2 of the largest magnitude: 8 bits of mantissa through a ResNet-18); the
    weights are bfloat16 and the card says so; a dtype that is not floating point is refused first."""
    sn, arch, _ = exported["resnet18"]
    out = osf.export(sn, arch, tmp_path / "bf16", formats=("pt2",), dtype=torch.bfloat16)
    card = json.loads((out / "card.json").read_text())
    assert card["dtype"] == "bfloat16" and [m["dtype"] for m in card["inputs"]] == ["bfloat16"]
    assert {t.dtype for t in load_file(str(out / "weights.safetensors")).values()} <= {torch.bfloat16, torch.int64}
    args, kwargs = _inputs("resnet18")
    expected = _reference(sn, arch, args, kwargs)[0]
    with torch.no_grad():
        got = torch.export.load(str(out / "model.pt2")).module()(args[0].bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=2e-2 * float(expected.abs().max()), rtol=0)
    with pytest.raises(ValueError, match="floating-point torch.dtype"):
        osf.export(sn, arch, tmp_path / "int", dtype=torch.int8)
    assert not (tmp_path / "int").exists()



_Pair = collections.namedtuple("_Pair", ["left", "right"])  # torch.export.save knows no name for it


class _Clips(nn.Module):
    """Frames folded into the batch and viewed as clips of 4, shifted back in time (a temporal shift): the
    batch sizes it holds for include ``B//(B//4) != 1``, which a term of 1 makes true at every size."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, _, h, w = x.shape
        clips = self.a(x).view(frames // 4, 4, -1, h, w)
        shifted = torch.zeros_like(clips)
        shifted[:, :-1] = clips[:, 1:]
        return self.b(shifted.view(frames, -1, h, w))


class _StopGradient(nn.Module):
    """A target computed under ``torch.no_grad()`` inside forward."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.b(torch.relu(self.a(x)))
        return self.b(torch.relu(self.a(x))) - target


class _DictInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(8, 16), nn.Linear(4, 16)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.a(batch["x"]) + self.b(batch["y"])


class _Residual(nn.Module):  # min() drops its only block: the subnet returns its input
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


class _Checked(nn.Module):  # transformers' torch_compilable_check when traced (LLaVA's image tokens)
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._check_tensor_all(x.abs() < 1e6)  # recorded as aten._is_all_true: no ONNX function in torch.onnx
        return self.fc(x)


class _Distances(nn.Module):  # prototype / metric-learning heads: torch.onnx has no function for aten._cdist_forward
    def __init__(self) -> None:
        super().__init__()
        self.embed, self.prototypes = nn.Linear(16, 32), nn.Parameter(torch.randn(5, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return torch.stack([torch.cdist(h, self.prototypes, p=p) for p in (0.0, 1.0, 2.0, 3.0, float("inf"))], -1)


class _Experts(nn.Module):
    """A mixture of experts as transformers computes it on CPU: the tokens sorted by expert, one matmul per
    expert's rows through its custom op ``transformers::grouped_mm_fallback`` (no function in torch.onnx)."""

    def __init__(self) -> None:
        super().__init__()
        pytest.importorskip("transformers.integrations.moe")  # defines the op
        self.router, self.out = nn.Linear(16, 4), nn.Linear(32, 16)
        self.experts = nn.Parameter(torch.randn(4, 16, 32) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expert = self.router(x).argmax(-1)
        order = expert.argsort()
        ends = nn.functional.one_hot(expert, 4).sum(0).cumsum(0).to(torch.int32)
        hidden = torch.ops.transformers.grouped_mm_fallback(x[order], self.experts, ends)
        return self.out(torch.relu(hidden))[order.argsort()]


@pytest.mark.parametrize("model, args", [
    (_Clips, (torch.randn(8, 3, 8, 8),)), (_StopGradient, (torch.randn(2, 16),)),
    (_DictInput, ({"x": torch.randn(2, 8), "y": torch.randn(2, 4)},)), (_Residual, (torch.randn(2, 16),)),
    (_Checked, (torch.randn(2, 16),)), (_Distances, (torch.randn(2, 7, 16),)), (_Experts, (torch.randn(10, 16),))],
    ids=["size_condition_always_true", "no_grad_in_forward", "dict_input", "returns_its_input", "tensor_check",
         "cdist", "grouped_matmul"])
def test_exported_files_load_and_match_the_extracted_subnet(model, args, tmp_path):
    """Each failed, or wrote a file that did not load, before: a size condition true at every size made
    torch.export assert; a ``no_grad`` block gave a ``.pt2`` that ``torch.export.load`` refused; a dict
    given positionally was taken for keyword arguments by the ONNX exporter; a subnet returning its input
    unchanged gave an ONNX graph defining that name twice, which ONNX Runtime refused; ``torch._check_tensor_all``,
    ``torch.cdist`` and transformers' grouped matmul of experts have no function in torch.onnx (osf's own now)."""
    onnxruntime = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    sn = osf.Supernet(model().eval(), args)
    for arch in (sn.space.min(), sn.space.max()):
        small = sn.extract(arch).eval()
        with torch.no_grad():
            want = small(*args)
        out = sn.export(arch, tmp_path / str(len(list(tmp_path.iterdir()))), formats=("pt2", "onnx"))
        with torch.no_grad():
            torch.testing.assert_close(torch.export.load(str(out / "model.pt2")).module()(*args), want)
        session = onnxruntime.InferenceSession(str(out / "model.onnx"))
        leaves = [t for t in pytree.tree_leaves(args) if isinstance(t, torch.Tensor)]
        got = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), leaves)})[0]
        torch.testing.assert_close(torch.from_numpy(got), want, atol=1e-5, rtol=1e-4)


class _PairFeatures(nn.Module):
    """RAFT-like: two images through one encoder pass (concatenated along the batch, chunked back) and
    correlated: the pieces' sizes ``(B+B1+1)//2`` make onnxscript's graph optimizer fail (RAFT's own ONNX
    export at a dynamic batch fails alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))

    def forward(self, a, b):
        fa, fb = self.encode(torch.cat([a, b], 0)).chunk(2, 0)
        return fa.flatten(2).transpose(1, 2) @ fb.flatten(2)


def test_an_onnx_graph_the_optimizer_fails_on_is_written_unoptimised(tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    args = (torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8))
    sn = osf.Supernet(_PairFeatures().eval(), args)
    arch = sn.space.min()
    out = sn.export(arch, tmp_path / "pair", formats=("onnx",))
    assert "optimizer failed" in json.loads((out / "card.json").read_text())["skipped"]["ONNX graph optimisation"]
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    batch = (torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8))  # another batch: the graph's batch is dynamic
    got = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), batch)})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), sn.extract(arch).eval()(*batch), atol=1e-5, rtol=1e-4)


class _PerSampleKernels(nn.Module):
    """CondConv-like: each sample is convolved with its own mixture of expert kernels, all in one grouped
    conv whose groups are the batch size; ONNX's ``Conv`` takes ``group`` as a fixed attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.route, self.head = nn.Conv2d(3, 16, 3, padding=1), nn.Linear(16, 4), nn.Linear(8, 5)
        self.experts = nn.Parameter(torch.randn(4, 8, 16, 3, 3) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x).relu()
        b = h.shape[0]
        mix = self.route(h.mean((2, 3))).softmax(-1)
        kernels = torch.einsum("be,eoikl->boikl", mix, self.experts).reshape(b * 8, 16, 3, 3)
        y = nn.functional.conv2d(h.reshape(1, b * 16, *h.shape[2:]), kernels, padding=1, groups=b)
        return self.head(y.reshape(b, 8, *h.shape[2:]).mean((2, 3)))


def test_an_onnx_graph_that_cannot_keep_a_dim_dynamic_is_written_at_the_example_sizes(tmp_path):
    """The ONNX exporter failed at a dynamic batch (a conv's groups = batch); the file is now written at
    the example's sizes, the card says so, and the ``.pt2`` program keeps the batch dynamic."""
    onnxruntime = pytest.importorskip("onnxruntime")
    args = (torch.randn(2, 3, 8, 8),)
    sn = osf.Supernet(_PerSampleKernels().eval(), args)
    arch = sn.space.min()
    small = sn.extract(arch).eval()
    out = sn.export(arch, tmp_path / "cond", formats=("pt2", "onnx"))
    card = json.loads((out / "card.json").read_text())
    assert "model.onnx takes the example's sizes only (x [2, 3, 8, 8])" in card["skipped"]["ONNX dynamic shapes"]
    assert "model.onnx takes the example's sizes only" in (out / "model_card.md").read_text()
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    assert session.get_inputs()[0].shape == [2, 3, 8, 8]
    with torch.no_grad():
        got = session.run(None, {session.get_inputs()[0].name: args[0].numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), small(*args), atol=1e-5, rtol=1e-4)
        other = torch.randn(3, 3, 8, 8)
        torch.testing.assert_close(torch.export.load(str(out / "model.pt2")).module()(other), small(other))


class _Split(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 8))

    def forward(self, x: torch.Tensor) -> dict:
        y = self.fc(x)
        return {"halves": _Pair(y[:, :4], y[:, 4:]), "max": y.max(-1)}


def test_a_namedtuple_output_is_a_plain_tuple_in_the_pt2(tmp_path):
    """A ``.pt2`` cannot name a namedtuple class defined outside torch nor a ``torch.return_types`` struct
    (torch.export.save raised; a class registered at save time would have to be registered again wherever
    the file is loaded): the program returns their fields as plain tuples and the card says so. The IR
    stores a ``torch.return_types`` output (capture refused it before)."""
    x = torch.randn(2, 8)
    round_trip(_Split(), (x,), tmp_path=tmp_path / "ir")  # outputs, gradients, the IR saved and loaded
    sn = osf.Supernet(_Split().eval(), (x,))
    arch = sn.space.min()
    out = sn.export(arch, tmp_path / "named", formats=("pt2",))
    with torch.no_grad():
        want, got = sn.extract(arch).eval()(x), torch.export.load(str(out / "model.pt2")).module()(x)
    assert type(want["halves"]) is _Pair and type(got["halves"]) is tuple
    torch.testing.assert_close(list(got["halves"]), list(want["halves"]))
    assert type(want["max"]) is torch.return_types.max and type(got["max"]) is tuple
    torch.testing.assert_close(got["max"], tuple(want["max"]))
    card = json.loads((out / "card.json").read_text())
    assert card["pt2_tuples"] == [f"{__name__}._Pair", "torch.return_types.max"]
    assert not card["import_before_loading"]
    assert "_Pair, max returned as plain tuples" in (out / "model_card.md").read_text()
    assert sn.extract(arch).forward.__func__ is type(sn.extract(arch)).forward  # the model keeps its forward


def test_ops_on_weights_alone_are_folded_for_onnx_and_other_failures_name_their_cause(tmp_path):
    """An op ONNX has no function for (``matrix_exp``) on the weights alone, an orthogonal rotation's: the
    ONNX file holds its result as a constant, and the card says so (the export failed before). On the
    input, it is an ``ExportError`` naming the op (torch.onnx's own first line is a generic header)."""
    onnxruntime = pytest.importorskip("onnxruntime")

    class Rotation(nn.Module):
        def __init__(self, of_input: bool = False) -> None:
            super().__init__()
            self.embed, self.skew = nn.Linear(8, 16), nn.Parameter(torch.randn(16, 16) * 0.1)
            self.of_input = of_input

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.embed(x)
            if self.of_input:
                return torch.linalg.matrix_exp(h.view(-1, 4, 4) * 0.1).flatten(1) @ self.skew
            return h @ torch.linalg.matrix_exp(self.skew - self.skew.T)

    x = torch.randn(2, 8)
    sn = osf.Supernet(Rotation().eval(), (x,))
    arch = sn.space.max()
    out = sn.export(arch, tmp_path / "onnx", formats=("onnx",))
    assert "holds what forward computes from the weights alone as constants" in \
        json.loads((out / "card.json").read_text())["skipped"]["ONNX weight computations"]
    session = onnxruntime.InferenceSession(str(out / "model.onnx"))
    other = torch.randn(5, 8)  # the batch stays dynamic
    got = session.run(None, {session.get_inputs()[0].name: other.numpy()})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), sn.extract(arch).eval()(other), atol=1e-5, rtol=1e-4)

    sn = osf.Supernet(Rotation(of_input=True).eval(), (x,))
    with pytest.raises(osf.ExportError,
                       match=r"ONNX exporter failed on this subnet \(DispatchError: .*aten\.linalg_matrix_exp"):
        sn.export(sn.space.max(), tmp_path / "input", formats=("onnx",))
    assert not (tmp_path / "input").exists()
    sn.export(sn.space.max(), tmp_path / "pt2", formats=("pt2",))  # the pt2 is fine

