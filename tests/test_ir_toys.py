"""IR behaviour on hand-written models: round trips, hierarchy, metadata, sharing, errors."""
from __future__ import annotations

import collections
import copy
import json
import random
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import osf
from osf.cli.main import main
from osf.ir import capture
from roundtrip import assert_same, loss_of, round_trip
from toys import (Branchy, CausalSeq2Seq, ClassTokenEncoder, CondInForward, DataDependent, DomainAdversarial,
                  ForcesFromEnergy, ForwardBlocks, Gate, GradientHooks, LayerDropWhenTraining, MultiIO,
                  NeedsTargetsWhenTraining, SharedInChild, TiedLM)


def multi_io_inputs(batch=3):
    return (torch.randn(batch, 6), torch.randn(batch, 3, 5)), {"scale": torch.tensor(2.0)}


class _Scaled(nn.Module):
    def forward(self, x, scale: float):
        return x * scale


def test_positional_inputs_bind_as_traced_and_weights_are_read_at_every_call():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(4, 6)
    rebuilt = osf.trace(model, (x,)).build().eval()
    assert_same(model(x), rebuilt(x), "positional tensor")
    assert_same(model(x), rebuilt(input=x), "the same input by keyword")
    with pytest.raises(TypeError, match=r"forward\(\) takes 2 positional arguments but 3 were given"):
        rebuilt(x, x)  # was dropped silently; its forward(self, input) is spelt out (torch.fx reads it)
    with pytest.raises(osf.InputError, match="do not match the traced structure"):
        rebuilt([x])
    for value in (1.0, None):  # were torch's own errors from inside the generated code
        with pytest.raises(osf.InputError, match="input 'input' was traced as a tensor with 2 dims; got"):
            rebuilt(value)
    scaled = osf.trace(_Scaled().eval(), (x, 3.0)).build().eval()
    assert_same(x * 3.0, scaled(x, 3.0), "a traced float")
    with pytest.raises(osf.InputError, match="non-tensor input 4.0 differs from the traced value 3.0"):
        scaled(x, 4.0)
    for value in (torch.tensor(3.0), torch.full((2,), 3.0)):  # an ambiguous-truth error from torch before
        with pytest.raises(osf.InputError, match="a tensor was given where the model was traced with the non-tensor"):
            scaled(x, value)
    # the generated forward reads each tensor from its module at every call, as the modules' own forwards do
    weight = nn.Parameter(torch.randn(8, 6))
    model[0].weight = weight
    getattr(rebuilt, "0").weight = nn.Parameter(weight.detach().clone())
    head = nn.Linear(8, 3)
    model[2] = head
    setattr(rebuilt, "2", copy.deepcopy(head))  # a rebuilt container is not a Sequential: no indexing
    assert_same(model(x), rebuilt(x), "a replaced parameter and a replaced module")


def test_multi_input_keyword_and_dict_output(tmp_path):
    args, kwargs = multi_io_inputs()
    other = multi_io_inputs(5)
    ir = round_trip(MultiIO(), args, kwargs, tmp_path=tmp_path, other_batch=other)
    out = ir.build()(*args, **kwargs)
    assert set(out) == {"logits", "aux"} and isinstance(out["aux"], tuple)


def test_train_eval_switch_follows_the_original():
    model = MultiIO()
    args, kwargs = multi_io_inputs(8)
    rebuilt = osf.trace(model, args, kwargs).build()
    rebuilt.train()
    a, b = rebuilt(*args, **kwargs)["logits"], rebuilt(*args, **kwargs)["logits"]
    assert not torch.allclose(a, b), "dropout must be active in train mode"
    rebuilt.eval()
    assert torch.equal(rebuilt(*args, **kwargs)["logits"], rebuilt(*args, **kwargs)["logits"])
    before = rebuilt.bn.num_batches_tracked.clone()
    rebuilt.eval()(*args, **kwargs)
    assert torch.equal(rebuilt.bn.num_batches_tracked, before), "eval must not update BatchNorm statistics"
    rebuilt.train()(*args, **kwargs)
    assert rebuilt.bn.num_batches_tracked == before + 1


def test_tied_and_shared_parameters_appear_once(tmp_path):
    model = TiedLM()
    ids = torch.randint(0, 50, (2, 7))
    ir = round_trip(model, (ids,), tmp_path=tmp_path)
    assert ir.aliases["out.weight"] == ir.aliases["emb.weight"]
    assert ir.node("out").meta["params"]["weight"]["tensor"] == "emb.weight"
    assert len(ir.tensors) == len({id(p) for p in model.parameters()}) + len(list(model.buffers()))
    rebuilt = ir.build()
    assert rebuilt.out.weight is rebuilt.emb.weight
    # the shared block ran twice: its ops are all owned by the one module node
    owners = [op.owner for op in ir.graph.ops if op.target == "aten.linear.default"]
    assert owners.count("shared.0") == 2


def test_module_shared_under_two_paths(tmp_path):
    model = SharedInChild()
    x = torch.randn(2, 8, 5, 5)
    ir = round_trip(model, (x,), tmp_path=tmp_path)
    assert ir.info["module_aliases"] == {"blocks.0.cpe": ["cpe", 0], "blocks.1.cpe": ["cpe", 0]}
    rebuilt = ir.build()
    assert rebuilt.get_submodule("blocks.0.cpe") is rebuilt.cpe
    assert rebuilt.get_submodule("blocks.1.cpe") is rebuilt.cpe
    assert list(rebuilt.state_dict()) == list(model.state_dict())


def test_hierarchy_and_metadata():
    args, kwargs = multi_io_inputs()
    ir = osf.trace(MultiIO(), args, kwargs)
    assert set(ir.modules) == {n for n, _ in MultiIO().named_modules()}
    gate = ir.node("gate")
    assert gate.children == ["gate.proj"]
    meta = gate.meta
    json.dumps(meta)
    assert meta["class"] == "toys.Gate"
    assert meta["init"]["status"] == "verified"
    assert meta["init"]["args"] == {"dim": 8, "scale": 0.5}
    assert meta["init"]["defaults_assumed"] == ["bias"]  # not stored on the instance: default, then verified
    assert meta["params"] == {} and meta["buffers"]["shift"]["shape"] == [8]
    assert ir.node("gate.proj").meta["params"]["weight"]["shape"] == [8, 8]
    assert meta["num_params"] == 72 and meta["inputs"] == ["[B, 8]"] and meta["outputs"] == ["[B, 8]"]
    rebuilt = gate.instantiate()
    assert isinstance(rebuilt, Gate)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == \
        {k: v.shape for k, v in MultiIO().gate.state_dict().items()}
    # the root's constructor has no arguments: recovered and verified trivially
    assert ir.node("").meta["init"]["status"] == "verified"


def test_unrecoverable_constructor_is_reported_not_guessed():
    class Hidden(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.fc = nn.Linear(width, 2)  # 'width' is not stored anywhere

        def forward(self, x):
            return self.fc(x)

    ir = osf.trace(Hidden(5), (torch.randn(2, 5),))
    init = ir.node("").meta["init"]
    assert init["status"] == "unrecovered" and "width" in init["reason"]
    with pytest.raises(ValueError, match="width"):
        ir.node("").instantiate()


def test_children_graph_is_a_chain_for_sequential_blocks():
    model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(4)])
    ir = osf.trace(model, (torch.randn(2, 8),))
    g = ir.graph_of("")
    assert list(g.successors("input")) == ["0"]
    assert [list(g.successors(str(i))) for i in range(4)] == [["1"], ["2"], ["3"], ["output"]]
    assert g.edges["0", "1"]["shapes"] == ["[B, 8]"]


def test_dynamic_batch_and_static_fallback():
    model = nn.Sequential(nn.Linear(4, 3))
    ir = osf.trace(model, (torch.randn(2, 4),))
    assert ir.info["dynamic"] == ["B"]
    assert ir.build()(torch.randn(7, 4)).shape == (7, 3)
    static = osf.trace(model, (torch.randn(2, 4),), dynamic_batch=False)
    assert static.info["dynamic"] == []


def test_a_forward_that_takes_another_path_once_it_set_an_attribute_is_warned_of():
    """RWKV divides its weights in place in its first eval call and sets ``layers_are_rescaled``; torch.export
    puts the flag back, so the graph holds the division, which a rebuilt model repeated at every call. A
    forward setting an attribute that leaves its path as it was (Swin's ``shift_size`` from the input size)
    is not warned of. The user's model keeps its state either way."""
    class RescaledOnce(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.rescaled = nn.Linear(4, 4), False

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training and not self.rescaled:
                with torch.no_grad():
                    self.fc.weight.div_(2.0)
                self.rescaled = True
            return self.fc(x)

    class SizedShift(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.shift = nn.Linear(4, 4), 3

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.shift = min(self.shift, x.shape[-1] - 2)  # as Swin's set_shift_and_window_size
            return self.fc(torch.roll(x, self.shift, -1))

    x = torch.randn(2, 4)
    model = RescaledOnce().eval()
    weight = model.fc.weight.detach().clone()
    with pytest.warns(UserWarning, match=r"sets module attributes while it runs, and takes another path once they "
                                         r"are set: rescaled \(False → True\)"):
        osf.trace(model, (x,))
    assert model.rescaled is False and torch.equal(model.fc.weight, weight)
    shifted = SizedShift().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ir = osf.trace(shifted, (x,))
    assert shifted.shift == 3
    assert_same(ir.build().eval()(x), shifted(x), "rebuilt")


def test_constant_keywords_gathered_by_kwargs_keep_the_batch_dynamic():
    """A forward taking ``**kwargs`` called with ``use_cache=False`` (Hugging Face models without that
    parameter): the dynamic export was refused (``**kwargs`` given no shapes of its own), so every input's
    size was fixed to the example's and other batches were refused as if the forward tied them."""
    class Gathering(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor, *extra: torch.Tensor, **kwargs) -> torch.Tensor:
            y = self.fc(x + sum(extra)) if extra else self.fc(x)
            return y if kwargs.get("use_cache", True) else y.relu()

    model = Gathering().eval()
    for args in ((torch.randn(2, 4),), (torch.randn(2, 4), torch.randn(2, 4))):
        ir = osf.trace(model, args, {"use_cache": False})
        assert ir.info["dynamic"] == ["B"] and not ir.info.get("fixed_batch")
        wider = tuple(torch.randn(5, 4) for _ in args)
        assert_same(ir.build().eval()(*wider, use_cache=False), model(*wider, use_cache=False), "batch 5")


def test_an_example_batch_of_one_keeps_the_batch_dynamic(tmp_path):
    """torch.export fixes a dim whose example size is 1: the usual ``torch.randn(1, ...)`` example gave a
    graph whose class-token ``expand`` failed at any other batch. osf exports it doubled and reports the
    sizes (and so FLOPs) at the user's batch of 1; a pt2 export keeps the batch dynamic."""
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    model, one = ClassTokenEncoder().eval(), torch.randn(1, 5, 8)
    ir = osf.trace(model, (one,))
    assert ir.info["dynamic"] == ["B"] and ir.info["capture"] == "torch.export"
    assert [p.meta["shape"] for p in ir.graph.placeholders if p.kind == "input"] == [[1, 5, 8]]
    rebuilt = ir.build().eval()
    for batch in (1, 4):
        x = torch.randn(batch, 5, 8)
        assert_same(rebuilt(x), model(x), f"rebuilt at batch {batch}")
    supernet = osf.Supernet(model, (one,))
    arch = supernet.space.min()
    small = supernet.extract(arch).eval()
    with FlopCounterMode(display=False) as counter:
        small(one)
    assert supernet.cost(arch)["flops"] == counter.get_total_flops()
    x = torch.randn(4, 5, 8)
    with torch.no_grad(), supernet.set_arch(arch):
        assert_same(supernet(x), small(x), "set_arch at batch 4")
    supernet.export(arch, tmp_path / "out", formats=("pt2",))
    exported = torch.export.load(str(tmp_path / "out" / "model.pt2")).module()
    assert_same(exported(x), small(x), "pt2 at batch 4")
    # training mode that cannot be captured at any batch (wav2vec2's layer drop) keeps the doubled eval graph
    eval_only = osf.trace(LayerDropWhenTraining(), (torch.randn(1, 4),))
    assert eval_only.info["dynamic"] == ["B"] and eval_only.info["train_error"]


def test_a_model_that_runs_only_at_batch_one_is_traced_static_and_refuses_other_batches():
    class OnlyOne(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x.view(1, -1))

    model, one = OnlyOne(), torch.randn(1, 4)
    ir = osf.trace(model, (one,))
    assert ir.info["dynamic"] == [] and ir.info["fixed_batch"] == {"x": 1}
    rebuilt = ir.build()
    assert_same(rebuilt(one), model(one), "rebuilt")
    with pytest.raises(osf.InputError, match="input 'x' has batch 2, but the model was traced with a fixed batch of 1"):
        rebuilt(torch.randn(2, 4))
    assert osf.trace(model, (one,), dynamic_batch=False).info.get("fixed_batch") is None


class UpsampleToInput(nn.Module):
    """A segmentation head that upsamples back to the input's size (torchvision FCN / DeepLab do)."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x):
        return F.interpolate(self.head(F.relu(self.down(x))), size=x.shape[-2:], mode="bilinear")


def test_a_size_the_graph_fixed_is_refused_and_dynamic_spatial_follows_other_sizes():
    """torch.export bakes sizes computed from a static dim into the graph: traced at 32x32, the rebuilt
    model would return 32x32 masks for a 48x48 image. Another size is refused, naming the dim and the
    option; with ``dynamic_spatial`` the graph follows any size, through the supernet and its subnets."""
    torch.manual_seed(0)
    model, x, big = UpsampleToInput().eval(), torch.randn(2, 3, 32, 32), torch.randn(3, 3, 48, 40)
    rebuilt = osf.trace(model, (x,)).build().eval()
    assert_same(rebuilt(x), model(x), "at the traced size")
    with pytest.raises(osf.InputError, match=r"input 'x' has size 48 in dim 2, but the model was traced at 32"
                                             r"(.|\n)*dynamic_spatial=True"):
        rebuilt(big)
    with pytest.raises(osf.InputError, match="input 'x' has 3 dims"):
        rebuilt(x[0])
    with pytest.raises(osf.InputError, match="has size 4 in dim 1, .*a size the weights fix"):
        rebuilt(torch.randn(2, 4, 32, 32))  # channels: the error says no option can change them
    with pytest.raises(osf.InputError, match="has size 2 in dim 0, .*dynamic_batch=True"):
        osf.trace(model, (x[:1],), dynamic_batch=False).build()(x)

    sn = osf.Supernet(model, (x,), trace_options={"dynamic_spatial": True}).eval()
    assert sn.ir.info["dynamic"] == ["B", "S", "S1"]
    assert_same(sn.net(big), model(big), "rebuilt at another size")
    for arch in (sn.space.min(), sn.space.sample(1)):
        small = sn.extract(arch).eval()
        with torch.no_grad(), sn.set_arch(arch):
            out = sn(big)
        assert out.shape == (3, 5, 48, 40)
        assert_same(small(big), out, "subnet at another size")


def test_size_checks_under_torch_compile_and_jit_trace():
    """``torch.compile`` keeps the check (a guard of its graph); ``jit.trace`` records sizes as tensors,
    so the checks step aside instead of warning that the trace might not generalise."""
    torch.manual_seed(0)
    model, x = UpsampleToInput().eval(), torch.randn(2, 3, 16, 16)
    rebuilt = osf.trace(model, (x,)).build().eval()
    compiled = torch.compile(rebuilt, backend="eager")
    assert_same(compiled(x), model(x), "compiled")
    with pytest.raises(osf.InputError, match="has size 20 in dim 2"):
        compiled(torch.randn(2, 3, 20, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        traced = torch.jit.trace(rebuilt, (x,))
    assert_same(traced(x), model(x), "jit.trace")


class BranchOnHeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        return y * 2 if x.shape[2] >= 48 else y


def test_a_symbolic_dim_is_refused_outside_the_bounds_export_put_on_it():
    """Traced at height 32, a branch on the height keeps the graph to heights below 48: at 64 the graph
    would silently skip the branch the model takes, so it is refused; within the bounds it follows."""
    torch.manual_seed(0)
    model = BranchOnHeight()
    ir = osf.trace(model, (torch.randn(2, 3, 32, 32),), dynamic_spatial=True)
    assert ir.info["input_ranges"] == {"x": {"2": [None, 47]}}
    rebuilt = ir.build()
    x = torch.randn(3, 3, 40, 24)
    assert_same(rebuilt(x), model(x), "within the bounds")
    with pytest.raises(osf.InputError, match="has size 64 in dim 2, but the captured graph holds only for sizes "
                                             "at most 47"):
        rebuilt(torch.randn(2, 3, 64, 32))


class BranchOnSquare(BranchOnHeight):
    def forward(self, x):
        y = self.conv(x)
        return y * 2 if x.shape[2] == x.shape[3] else y


def test_dims_export_tied_to_one_size_are_refused_when_they_differ():
    """A branch on a square image makes export give height and width one symbol: a graph traced on a square
    image holds only for square ones (another image would silently take the square branch)."""
    torch.manual_seed(0)
    model = BranchOnSquare()
    rebuilt = osf.trace(model, (torch.randn(2, 3, 32, 32),), dynamic_spatial=True).build()
    x = torch.randn(3, 3, 40, 40)
    assert_same(rebuilt(x), model(x), "another square size")
    with pytest.raises(osf.InputError, match=r"input sizes 'x' dim 2: 32, 'x' dim 3: 48 differ"):
        rebuilt(torch.randn(2, 3, 32, 48))


class ScaleEvenWidths(nn.Module):
    """Doubles its features when the image width is even: export records the branch as a guard on the
    width's parity, which no bound on a single dim expresses."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = self.conv(x)
        if x.shape[3] % 2 == 0:
            y = y * 2
        return self.fc(y.mean((2, 3)))


def test_a_size_breaking_a_condition_export_assumed_is_refused(tmp_path, capsys):
    """Traced on an even width, the graph holds only for even widths: an odd one would silently skip the
    doubling the model does. The rebuilt model, the supernet, its subnets and a reloaded IR refuse it,
    naming the condition; sizes where a size of the graph is 0 or 1 (export never traces there, its
    ``!= 1`` guards break) still run; the exported ``.pt2`` holds them as guards of its program."""
    torch.manual_seed(0)
    model = ScaleEvenWidths()
    ir = osf.trace(model, (torch.randn(2, 3, 32, 32),), dynamic_spatial=True)
    assert "S1 % 2 == 0" in ir.info["size_conditions"]
    rebuilt = ir.build()
    for shape in [(3, 3, 20, 18), (1, 3, 1, 2), (2, 3, 7, 40)]:
        x = torch.randn(*shape)
        assert_same(rebuilt(x), model(x), f"at {shape}")
    odd = torch.randn(2, 3, 20, 17)
    message = r"the input sizes \('x' dim 3 = 17 \(S1\)\) break a condition the captured graph relies on: S1 % 2 == 0"
    with pytest.raises(osf.InputError, match=message):
        rebuilt(odd)
    compiled = torch.compile(rebuilt, backend="eager", dynamic=True)  # symbolic sizes: the check stays
    x = torch.randn(2, 3, 20, 18)
    assert_same(compiled(x), model(x), "compiled with dynamic sizes")
    with pytest.raises(osf.InputError, match=message):
        compiled(odd)
    with pytest.raises(osf.InputError, match=message):
        osf.load_ir(ir.save(tmp_path / "ir")).build()(odd)
    assert main(["inspect", str(tmp_path / "ir")]) == 0
    assert "size condition(s), e.g. S1 % 2 == 0" in capsys.readouterr().out
    sn = osf.Supernet(model, (torch.randn(2, 3, 32, 32),), trace_options={"dynamic_spatial": True})
    arch = sn.space.min()
    small = sn.extract(arch)
    x = torch.randn(2, 3, 12, 24)
    with sn.set_arch(arch):
        assert_same(sn(x), small(x), "set_arch at another even width")
        with pytest.raises(osf.InputError, match=message):
            sn(odd)
    with pytest.raises(osf.InputError, match=message):
        small(odd)
    out = sn.export(arch, tmp_path / "out", formats=("pt2",))
    card = json.loads((out / "card.json").read_text())
    assert "S1 % 2 == 0" in card["size_conditions"]
    assert "the ONNX file does not check them" in (out / "model_card.md").read_text()
    program = torch.export.load(str(out / "model.pt2")).module()  # the conditions are its guards
    assert_same(program(x), small(x), "pt2 at another even width")
    with pytest.raises(AssertionError, match=r"x.size\(\)\[3\] % 2 == 0"):
        program(odd)
    # a saved condition is parsed against the condition grammar, never run as Python
    data = json.loads((tmp_path / "ir" / "ir.json").read_text())
    data["info"]["size_conditions"] = ["__import__('os').getcwd() == 0"]
    (tmp_path / "ir" / "ir.json").write_text(json.dumps(data))
    with pytest.raises(osf.FormatError, match="condition language has no place for"):
        osf.load_ir(tmp_path / "ir").build()(torch.randn(2, 3, 20, 18))


def test_untraceable_model_names_module_and_line():
    with pytest.raises(osf.TraceError) as err:
        osf.trace(DataDependent(), (torch.randn(2, 4),))
    text = str(err.value)
    assert err.value.module == "inner"
    assert "Branchy" in text and "toys.py" in text and "y.sum() > 0" in text
    assert "What to do" in text


def test_a_branch_on_values_after_a_traceable_part_names_that_part():
    """A detector's post-processing branches on values after its backbone ran: the error names the largest
    child with weights that returned before the failing one (not the weightless one, not the failing one),
    the part to make a supernet of and train inside the model; a failure in the root's own code names none."""
    class Detector(nn.Module):
        def __init__(self):
            super().__init__()
            self.normalise = nn.Identity()
            self.stem = nn.Linear(4, 4)
            self.backbone = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 4))
            self.inner = Branchy()

        def forward(self, x):
            return self.inner(self.backbone(self.stem(self.normalise(x))))

    with pytest.raises(osf.TraceError) as err:
        osf.trace(Detector(), (torch.randn(2, 4),))
    assert err.value.module == "inner"
    assert "osf.Supernet(model.backbone" in str(err.value) and "model=model" in str(err.value)
    with pytest.raises(osf.TraceError) as err:
        osf.trace(DataDependent(), (torch.randn(2, 4),))
    assert "osf.Supernet(model." not in str(err.value)


def test_a_model_failing_with_dynamic_and_static_shapes_names_both_failures():
    """osf retries a failed export with static shapes; where that fails too, for another reason (here: the
    reshape's sizes), the error names it as well (it named the dynamic attempt's failure alone)."""
    class ShapeChecked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            if torch.compiler.is_exporting() or isinstance(x, torch.fx.Proxy):  # what it hits only in a graph
                kind = "symbolic" if isinstance(x.shape[0], torch.SymInt) else "concrete"
                raise RuntimeError(f"cannot view a {kind} batch")
            return self.fc(x)

    with pytest.raises(osf.TraceError, match=r"cannot view a symbolic batch; with static shapes: RuntimeError: "
                                             r"cannot view a concrete batch"):
        osf.trace(ShapeChecked(), (torch.randn(2, 4),))


def test_a_model_that_cannot_take_a_symbolic_batch_is_captured_with_static_shapes():
    """osf retries a failed export with static shapes on copies of the inputs: exported again, the
    tensors a failed dynamic export was given kept symbolic sizes (torch 2.14), so the retry failed the
    same way (or kept a symbolic batch without its bounds)."""
    class StaticOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            if isinstance(x.shape[0], torch.SymInt) or isinstance(x, torch.fx.Proxy):
                raise RuntimeError("this model needs a concrete batch")
            return self.fc(x)

    model, x = StaticOnly().eval(), torch.randn(2, 4)
    ir = osf.trace(model, (x,))
    assert ir.info["fixed_batch"] == {"x": 2}
    with torch.no_grad():
        torch.testing.assert_close(ir.build().eval()(x), model(x))


def test_wrong_inputs_to_rebuilt_model_are_clear_errors():
    args, kwargs = multi_io_inputs()
    rebuilt = osf.trace(MultiIO(), args, kwargs).build().eval()
    assert_same(rebuilt(*args, **kwargs), rebuilt(args[0], seq=args[1], **kwargs), "seq by keyword")
    with pytest.raises(osf.InputError, match="scale"):
        rebuilt(*args)
    with pytest.raises(osf.InputError, match="unexpected"):
        rebuilt(*args, scale=kwargs["scale"], other=torch.zeros(1))


def test_save_never_overwrites_and_corrupt_files_raise_format_error(tmp_path):
    ir = osf.trace(TiedLM(), (torch.randint(0, 50, (2, 7)),))
    path = tmp_path / "ir"
    ir.save(path)
    with pytest.raises(FileExistsError):
        ir.save(path)
    graph = (path / "ir.json").read_text()
    (path / "ir.json").write_text(graph[: len(graph) // 2])
    with pytest.raises(osf.FormatError, match="corrupt or truncated"):
        osf.load_ir(path)
    (path / "ir.json").write_text(graph)
    weights = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(osf.FormatError, match="weights.safetensors"):
        osf.load_ir(path)
    with pytest.raises(osf.FormatError, match="not a saved osf IR"):
        osf.load_ir(tmp_path / "nothing")
    (path / "weights.safetensors").write_bytes(weights)
    (path / "ir.json").write_text(graph.replace('"aten.linear.default"', '"os.system"'))
    with pytest.raises(osf.FormatError, match="os.system"):
        osf.load_ir(path).build()


def test_loaded_ir_rebuilds_without_the_original_class(tmp_path):
    args, kwargs = multi_io_inputs()
    model = MultiIO().eval()
    osf.trace(model, args, kwargs).save(tmp_path / "ir")
    loaded = osf.load_ir(tmp_path / "ir")
    assert loaded.node("gate").meta["class"] == "toys.Gate"
    with torch.no_grad():
        assert_same(model(*args, **kwargs), loaded.build().eval()(*args, **kwargs), "loaded")


def test_fx_fallback_when_export_fails(monkeypatch):
    """If torch.export fails on the model itself, osf symbolic-traces it with torch.fx and exports that."""
    real_export = torch.export.export

    def export_only_fx_graphs(mod, *args, **kwargs):
        if not isinstance(mod, torch.fx.GraphModule):
            raise RuntimeError("simulated export failure")
        return real_export(mod, *args, **kwargs)

    monkeypatch.setattr(torch.export, "export", export_only_fx_graphs)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 4)
    ir = osf.trace(model, (x,))
    assert ir.info["capture"] == "torch.fx + torch.export"
    assert {op.owner for op in ir.graph.ops if op.target == "aten.linear.default"} == {"0", "2"}
    assert_same(model(x), ir.build().eval()(x), "fx fallback")


class DictInput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, batch, pair):
        return self.fc(batch["x"]) * batch["w"], (pair[0] + pair[1]).sum(-1)


def test_dict_and_tuple_inputs(tmp_path):
    batch = {"x": torch.randn(3, 4), "w": torch.randn(3, 1)}
    pair = (torch.randn(3, 5), torch.randn(3, 5))
    round_trip(DictInput(), (batch, pair), tmp_path=tmp_path,
               other_batch=(({"x": torch.randn(6, 4), "w": torch.randn(6, 1)}, (torch.randn(6, 5),) * 2), {}))


def test_eval_only_capture_when_training_mode_needs_other_inputs():
    model = NeedsTargetsWhenTraining().eval()
    x = torch.randn(3, 4)
    ir = osf.trace(model, (x,))
    assert "targets should not be none" in ir.info["train_error"]
    rebuilt = ir.build().eval()
    assert_same(model(x), rebuilt(x), "eval-only capture")
    with pytest.raises(osf.InputError, match="call .eval"):
        rebuilt.train()(x)


def test_no_grad_spectral_norm_and_autocast_blocks_in_forward(tmp_path):
    """Blocks of forward run under their context managers in the rebuilt model: same outputs, gradients
    and updated buffers (round_trip), no gradient for what only a no_grad block reads, autocast's dtypes."""
    model, x = ForwardBlocks(), torch.randn(4, 8)
    ir = round_trip(model, (x,), tmp_path=tmp_path)
    contexts = {op.owner: op.context for op in ir.graph.ops if op.context}
    assert contexts["target"] == [["grad", False]]
    assert contexts["exact"] == [["autocast", {"dtype": "bfloat16"}, True, False],
                                 ["autocast", {"dtype": "bfloat16"}, False, False]]
    rebuilt = osf.load_ir(tmp_path / "ir").build().train()
    rebuilt.load_state_dict(model.state_dict())
    loss_of(rebuilt(x)).backward()
    assert rebuilt.target.weight.grad is None and rebuilt.low.weight.grad is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_same(model.eval()(x), rebuilt.eval()(x), "under an outer autocast")


class _DrawsEveryLayer(nn.Module):
    """MusicGen / VITS layer drop: a draw at every layer in both modes (Python's ``random`` or NumPy's),
    read only in training; or a draw used as a value (a jittered scale)."""

    def __init__(self, layerdrop: float = 0.0, jitter: bool = False):
        super().__init__()
        self.layers, self.layerdrop, self.jitter = nn.ModuleList(nn.Linear(4, 4) for _ in range(2)), layerdrop, jitter

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            p = random.uniform(0, 1) if i == 0 else np.random.uniform(0, 1)
            if self.training and p < self.layerdrop:
                continue
            x = torch.relu(layer(x)) * (random.uniform(0.9, 1.1) if self.jitter else 1.0)
        return x


def test_random_draws_that_forward_never_uses_are_captured_and_used_ones_refused():
    """A draw is unused when the program is the same with every draw at its least and at its greatest value:
    MusicGen's layer drop at ``layerdrop=0`` (it refused MusicGen and VITS). A draw that decides a branch
    in training (``layerdrop>0``) leaves only the eval graph; one used as a value is refused in both modes."""
    x = torch.randn(3, 4)
    model = _DrawsEveryLayer()
    ir = osf.trace(model, (x,))
    assert ir.info["train_error"] is None
    for mode in (True, False):
        assert_same(model.train(mode)(x), ir.build().train(mode)(x), f"training={mode}")
    ir = osf.trace(_DrawsEveryLayer(layerdrop=0.3), (x,))
    assert "random" in ir.info["train_error"].lower()
    with pytest.raises(osf.TraceError, match="draws random numbers in Python"):
        osf.trace(_DrawsEveryLayer(jitter=True), (x,))


class _PadsFromScalarBuffers(nn.Module):
    """EnCodec's padded convolution: kernel size and stride kept as 0-d integer buffers, the padding computed
    from them and the input's length, then used as Python ints. ``counted``: a non-persistent counter that
    forward reads as a value and increments ("direct"), or increments through a view of it ("view")."""

    def __init__(self, persistent: bool = False, counted: str | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 16, 5, stride=2)
        self.out = nn.Conv1d(16, 4, 3)
        self.register_buffer("kernel", torch.tensor(5), persistent=persistent)
        self.register_buffer("stride", torch.tensor(2), persistent=persistent)
        self.counted = counted
        self.register_buffer("calls", torch.tensor(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        frames = torch.ceil((length - self.kernel + (self.kernel - self.stride)) / self.stride + 1).long() - 1
        extra = frames * self.stride + self.stride - length
        x = F.pad(x, (int(self.kernel - self.stride), int(extra)))
        if self.counted:
            x = x * (int(self.calls) + 1)
            (self.calls if self.counted == "direct" else self.calls.view(1)[0:1]).add_(1)
        return self.out(torch.relu(self.conv(x)))


def test_sizes_computed_from_scalar_constant_buffers_are_captured():
    """Paddings computed from non-persistent 0-d buffers (EnCodec's and Mimi's convolutions, refused before)
    are baked into the graph with their values: rebuilt model and subnets run at other batches, also when a
    dynamic length was asked for (it cannot be: the batch alone stays dynamic). A persistent
    buffer (a checkpoint may change it) and one that forward writes to stay refused, as their values may
    differ at the next call. The capture warns which buffers it fixed."""
    x = torch.randn(2, 3, 33)
    model = _PadsFromScalarBuffers()
    with pytest.warns(UserWarning, match=r"scalar buffers into Python values \(kernel, stride\)"):
        ir = osf.trace(model, (x,))
    assert ir.info["train_error"] is None
    for mode in (True, False):
        for batch in (x, torch.randn(5, 3, 33)):
            assert_same(model.train(mode)(batch), ir.build().train(mode)(batch), f"training={mode}")
    supernet = osf.Supernet(model, (x,))
    small = supernet.extract(supernet.space.min()).eval()
    assert small(x).shape == model(x).shape
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    spatial = osf.trace(model, (x,), dynamic_spatial=True).build().eval()  # the length stays fixed, not the batch
    wide = torch.randn(5, 3, 33)
    assert_same(model.eval()(wide), spatial(wide), "dynamic_spatial asked: batch 5")
    with pytest.raises(osf.InputError, match="constant of the captured graph"):
        spatial(torch.randn(2, 3, 40))
    for refused in (_PadsFromScalarBuffers(persistent=True), _PadsFromScalarBuffers(counted="direct"),
                    _PadsFromScalarBuffers(counted="view")):
        with pytest.raises(osf.TraceError, match="branches on tensor values"):
            osf.trace(refused, (x,))


class _NumpyInTraining(nn.Module):
    """A mask computed by NumPy in training only (as SpecAugment is in wav2vec2; that one fails inside
    NumPy, tested on the real model in test_cli)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = self.a(x)
        if self.training:
            keep = torch.from_numpy((np.asarray(x.abs().sum(-1).detach()) > 0).astype(np.float32))
            h = h * keep[..., None]
        return self.b(h)


def test_numpy_in_training_keeps_the_eval_graph_and_says_why_training_fails():
    x = torch.randn(2, 5, 8)
    model = _NumpyInTraining().eval()
    rebuilt = osf.trace(model, (x,)).build()
    assert_same(model(x), rebuilt.eval()(x), "eval")
    with pytest.raises(osf.InputError, match="hands tensors to NumPy, which torch.export cannot trace"):
        rebuilt.train()(x)


def test_a_model_that_fails_on_its_example_in_plain_pytorch_is_told_so():
    """Not a capture problem: the model raises on the example in eager mode too (a vision model built for
    larger images); the error says so, with the example's shapes, instead of the capture's hint."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3))
    x = torch.randn(2, 3, 5, 5)
    generator_state = torch.get_rng_state()
    with pytest.raises(osf.TraceError, match=r"fails on the example inputs \(tensors shaped \[\[2, 3, 5, 5\]\]\) in "
                                             r"plain PyTorch, before any capture \(RuntimeError") as caught:
        osf.trace(model, (x,))
    assert "inputs it accepts" in str(caught.value) and torch.equal(torch.get_rng_state(), generator_state)


@pytest.mark.parametrize("draw", ["torch", "python"])
def test_random_branch_in_training_keeps_the_eval_graph_quietly(draw, capsys):
    """Layer drop decided by a random draw in training cannot be one graph: the training capture fails with
    the reason (torch.fx's fallback, which evaluates a draw that does not depend on the inputs, and export
    of Python's ``random`` each baked one draw into the graph: always or never skipping), the eval graph is
    kept, the user's generators are left as they were, and torch's own output for the failed attempts (a
    partial graph, hundreds of lines for a real model, and log records) stays off the terminal."""
    model = LayerDropWhenTraining(draw).eval()
    x = torch.randn(3, 4)
    torch.manual_seed(1)
    random.seed(1)
    expected = (torch.rand(3), random.random())
    torch.manual_seed(1)
    random.seed(1)
    ir = osf.trace(model, (x,))
    after = (torch.rand(3), random.random())
    assert torch.equal(after[0], expected[0]) and after[1] == expected[1]  # the generators are as they were
    assert "training mode could not be captured" in ir.info["train_error"]
    assert ("random" if draw == "python" else "data-dependent") in ir.info["train_error"].lower()
    assert_same(model(x), ir.build().eval()(x), "eval-only capture")
    out = capsys.readouterr()
    assert out.err.strip() == "", out.err[:500]


def test_control_flow_operator_in_forward_is_a_trace_error_naming_the_module():
    model = nn.Sequential(nn.Linear(4, 4), CondInForward())
    with pytest.raises(osf.TraceError, match="higher-order op cond") as err:
        osf.trace(model, (torch.randn(2, 4),))
    assert err.value.module == "1"
    assert "torch.cond" in str(err.value)


class _SinusoidalPositions(nn.Module):
    """Positions made in ``forward``: float ones (``arange(300.)``: bfloat16 rounds 257 and up) and
    integer ones indexing a table."""

    def __init__(self):
        super().__init__()
        self.table, self.proj = nn.Embedding(300, 8), nn.Linear(8, 8)

    def forward(self, x):
        angles = torch.arange(300, dtype=torch.float32)[:, None] * torch.linspace(0.001, 0.01, 8)
        return self.proj(x + self.table(torch.arange(300))) * angles.sin().mean()  # a 0-dim float32 factor


def test_positions_made_in_forward_survive_a_dtype_cast():
    """Integer position tensors of a fixed size are lifted into constants (so pruning can cut them);
    floating ones stay ops: a constant is a buffer, which ``module.to(bfloat16)`` would round, while the
    original makes them in float32 at every call."""
    model = _SinusoidalPositions()
    x = torch.randn(2, 300, 8)
    ir = osf.trace(model, (x,))
    consts = {name: t for name, t in ir.tensors.items() if name.startswith("_osf_const_")}
    assert consts and {t.dtype for t in consts.values()} == {torch.int64}  # arange(300) of the lookup
    read = {p.target for p in ir.graph.placeholders if p.kind == "constant"}
    assert ir.eval_graph is None and set(consts) == read  # no copies from the dropped eval graph
    rebuilt = ir.build().to(torch.bfloat16).eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x.bfloat16()), model.to(torch.bfloat16).eval()(x.bfloat16()), atol=0, rtol=0)


class _DtypeFollowing(nn.Module):
    """Dtypes read in ``forward``: a cast to the weights' dtype, a state made in the input's dtype, an RMS
    norm in float32 cast back with ``type_as(x)`` (in float32 ``x.float()`` is ``x`` itself, so the traced
    graph's ``type_as`` reads the conversion), a mask filled with ``torch.finfo(dtype).min``, and a softmax
    upcast to float32 whatever the model's dtype (which must stay float32), cast back to the input's."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.rnn = nn.Linear(8, 8), nn.Linear(8, 8), nn.GRU(8, 8, batch_first=True)

    def forward(self, x, keep):
        x = x.to(self.q.weight.dtype)
        h0 = torch.zeros(1, x.shape[0], 8, dtype=x.dtype)
        x = self.rnn(x, h0)[0]
        x = (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(x)  # Gemma's norm
        scores = self.q(x) @ self.k(x).transpose(1, 2)
        scores = scores.masked_fill(~keep[:, None, :], torch.finfo(scores.dtype).min)
        return scores.float().softmax(-1).to(x.dtype) @ x


def test_dtypes_read_in_forward_follow_the_model_after_a_cast(tmp_path, monkeypatch):
    """A rebuilt (or extracted, or saved and loaded) model cast with ``.double()`` / ``.to(bfloat16)``
    computes what the original computes cast the same way (0 tolerance): the dtypes and the
    ``torch.finfo`` value that follow the model's dtype follow it (found by a float64 trace of a copy),
    the float32 upcasts stay float32 and ``type_as(x)`` reads ``x``. Traced as they were, the GRU's state
    and the mask mixed dtypes, and the norm's output stayed float32."""
    torch.manual_seed(0)
    model = _DtypeFollowing().eval()
    x, keep = torch.randn(2, 5, 8), torch.rand(2, 5) > 0.3
    ir = osf.trace(model, (x, keep))
    ir.save(tmp_path / "ir")
    marks = json.dumps([[op.args, op.kwargs] for op in ir.graph.ops])
    assert '"model_dtype": "float32"' in marks and '"model_finfo": ["float32", "min"]' in marks
    assert '{"dtype": "float32"}' in marks  # the upcast
    for rebuilt in (ir.build(), osf.load_ir(tmp_path / "ir").build()):
        for dtype in (torch.float64, torch.bfloat16):
            original = copy.deepcopy(model).to(dtype)
            with torch.no_grad():
                want = original(x.to(dtype), keep)
                got = rebuilt.to(dtype).eval()(x.to(dtype), keep)
            assert got.dtype == dtype
            torch.testing.assert_close(got, want, atol=0, rtol=0)
    sn = osf.Supernet(model, (x, keep))
    small = sn.extract(sn.space.min()).eval()
    with torch.no_grad():
        expected = small(x, keep).double()
        torch.testing.assert_close(small.double()(x.double(), keep), expected, atol=1e-5, rtol=1e-4)
        with sn.set_arch(sn.space.min()):
            torch.testing.assert_close(sn.double()(x.double(), keep), expected, atol=1e-5, rtol=1e-4)
    # the GRU does not run on the meta device: the float64 copy is made on the CPU, up to a size
    monkeypatch.setattr(capture, "_TWIN_MAX_ELEMENTS", sum(p.numel() for p in model.parameters()) - 1)
    assert "model_dtype" not in json.dumps([[op.args, op.kwargs] for op in osf.trace(model, (x, keep)).graph.ops])


class _PackedLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.fc = nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 3)

    def forward(self, x, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return self.fc(self.rnn(packed)[1][0][-1])


def test_packed_sequence_is_a_trace_error_that_says_to_pad():
    with pytest.raises(osf.TraceError, match="packed sequence") as err:
        osf.trace(_PackedLSTM(), (torch.randn(3, 6, 8), torch.tensor([6, 4, 2])))
    assert err.value.module == "rnn" and "padded batch" in str(err.value)

def test_quantized_and_scripted_modules_are_refused_naming_the_module():
    float_model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    quantized = torch.ao.quantization.quantize_dynamic(float_model, {nn.Linear}, dtype=torch.qint8)
    with pytest.raises(osf.TraceError, match="no float weights") as err:
        osf.trace(quantized, (torch.randn(2, 8),))
    assert err.value.module.startswith("0") and "float model" in str(err.value)
    scripted = nn.Sequential(torch.jit.script(nn.Linear(8, 4)))
    with pytest.raises(osf.TraceError, match="is a TorchScript module") as err:
        osf.trace(scripted, (torch.randn(2, 8),))
    assert err.value.module == "0"


def test_a_lazy_module_not_yet_called_is_refused_and_traces_once_called():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyConv2d(8, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(osf.TraceError, match="LazyConv2d's 'weight' is not initialised yet") as err:
        osf.trace(model, (x,))  # was torch's ValueError from inside the capture
    assert err.value.module == "0" and "call the model once on an example batch" in str(err.value)
    expected = model(x)  # what the error says to do
    rebuilt = osf.trace(model, (x,)).build()
    torch.testing.assert_close(rebuilt(x), expected)


def test_data_parallel_wrappers_are_refused_naming_the_wrapped_model():
    import torch.distributed as dist
    model, x = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), torch.randn(2, 6)
    with pytest.raises(osf.TraceError, match="DataParallel is a wrapper") as err:
        osf.trace(nn.DataParallel(model), (x,))  # traced before, with every name prefixed by 'module.'
    assert "trace the model it wraps (its .module)" in str(err.value)
    if not dist.is_available() or not dist.is_gloo_available():
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(osf.TraceError, match="DistributedDataParallel is a wrapper"):
            osf.trace(nn.parallel.DistributedDataParallel(model), (x,))  # was a misleading capture failure
    finally:
        dist.destroy_process_group()


def test_a_compiled_model_is_traced_as_the_module_it_wraps():
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), torch.randn(2, 6)
    compiled = torch.compile(model)  # lazy: nothing is compiled until it is called
    supernet = osf.Supernet(compiled, (x,))
    assert set(supernet.space.max().width) == set(osf.Supernet(model, (x,)).space.max().width)
    subnet = supernet.extract(supernet.space.max())
    # were '_orig_mod.0.weight', ... and a class named OptimizedModule: now the original's names and class
    assert list(subnet.state_dict()) == list(model.state_dict()) and type(subnet).__name__ == "Sequential"
    model.load_state_dict(subnet.state_dict())
    torch.testing.assert_close(subnet(x), model(x))


class _ConvertsItsLayerInForward(nn.Module):
    """Keeps a layer in float32 by converting it in ``forward`` (Switch Transformers' router)."""

    def __init__(self):
        super().__init__()
        self.router, self.out = nn.Linear(8, 4), nn.Linear(4, 2)

    def forward(self, x):
        self.router = self.router.to(torch.float32)
        self.out.float()
        return self.out(torch.relu(self.router(x.float())))


def test_module_conversion_that_changes_nothing_inside_forward(tmp_path):
    """``module.to(dtype)`` in ``forward`` made export fail (it swaps fake parameters in place; only the
    ``torch.fx`` fallback, which drops Python control flow, captured this model); a conversion that
    changes no tensor is skipped while tracing, so export captures it with its dynamic batch and it
    rebuilds (round_trip: outputs, gradients); ``nn.Module._apply`` is torch's own again afterwards."""
    apply = nn.Module._apply
    ir = round_trip(_ConvertsItsLayerInForward(), (torch.randn(3, 8),), tmp_path=tmp_path)
    assert ir.info["capture"] == "torch.export" and ir.info["dynamic"] == ["B"]
    assert nn.Module._apply is apply


def test_hooks_on_inner_modules_of_a_rebuilt_model_run_or_warn_that_they_never_would():
    """A hook on an inner module (to grab features) makes the rebuilt model call that module, which runs
    the ops of its call on its own: forward and backward hooks fire with the values the original's hooks
    see (also on a module called on several tensors, and on one returning several). A module of whose
    results the model leaves one unread (its ops are gone), and a supernet's modules (its programs run
    them), cannot be called so: registering a hook there warns that it would never fire. Hooks on the root
    run."""
    class Pair(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a * b

    class Both(nn.Module):
        def forward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return a + 1, a * 2

    class Three(nn.Module):
        def forward(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return a.exp(), a, a.sin()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
            self.pair, self.both, self.three = Pair(), Both(), Three()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.body(x)
            a, b = self.both(self.pair(y, y.flip(0)))
            c, d, _ = self.three(a)
            return c * b + d

    torch.manual_seed(0)
    x = torch.randn(2, 4)
    model = Net().eval()
    rebuilt = osf.trace(model, (x,)).build()
    seen: dict[str, list] = {"model": [], "rebuilt": []}
    for key, m in (("model", model), ("rebuilt", rebuilt)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m.body[0].register_forward_hook(lambda mod, i, o, key=key: seen[key].append(("linear", o.clone())))
            m.body.register_forward_hook(lambda mod, i, o, key=key: seen[key].append(("body", o.clone())))
            m.body[1].register_full_backward_pre_hook(lambda mod, g, key=key: seen[key].append(("relu", g[0].clone())))
            m.pair.register_forward_hook(lambda mod, i, o, key=key: seen[key].append(("pair", torch.stack([*i, o]))))
            m.both.register_forward_hook(lambda mod, i, o, key=key: seen[key].append(("both", torch.stack(o))))
            m.register_forward_hook(lambda mod, i, o, key=key: seen[key].append(("root", o.clone())))
        m(x).sum().backward()
    assert [k for k, _ in seen["rebuilt"]] == [k for k, _ in seen["model"]] == [
        "linear", "body", "pair", "both", "root", "relu"]
    for (_, got), (_, want) in zip(seen["rebuilt"], seen["model"]):
        torch.testing.assert_close(got, want)
    with pytest.warns(UserWarning, match=r"forward hook on Three \(osf: .*Three\) will never be called: .*nothing "
                                         r"reads item 2 of what it returns"):
        rebuilt.three.register_forward_hook(lambda mod, i, o: None)
    supernet = osf.Supernet(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval(), (x,))
    with pytest.warns(UserWarning, match="Hook the root model \\(a supernet: the Supernet itself\\)"):
        supernet.net.register_forward_hook(lambda m, i, o: None)
    with pytest.warns(UserWarning, match="a supernet runs its programs on its modules"):
        getattr(supernet.net, "0").register_forward_hook(lambda m, i, o: None)
    calls = []
    supernet.register_forward_hook(lambda m, i, o: calls.append("supernet"))
    supernet(x)
    assert calls == ["supernet"]


def test_custom_autograd_functions_keep_their_gradients_or_are_refused(tmp_path):
    """torch.export records only a custom Function's forward ops. A Function whose backward is their
    derivative (a memory-saving swish) and torch's reentrant checkpoint give the model's gradients;
    gradient reversal is a TraceError naming it and asking for a custom op, which then keeps its backward
    and fixes the dims it touches. A Function whose forward works in place on a tensor its ops save (SEW-D's
    XSoftmax) has captured ops that cannot backpropagate: the in-place op is made out of place where nothing
    else sees that tensor, else it is a TraceError too (a RuntimeError of autograd before)."""
    x = torch.randn(6, 10)
    model = DomainAdversarial()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(osf.TraceError, match=r"toys\.GradReverse .*torch\.library\.custom_op"):
        osf.trace(model, (x,))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters()) and model.training

    ir = round_trip(DomainAdversarial(as_custom_op=True), (x,), tmp_path=tmp_path)
    assert ir.info["inlined_functions"] == ["toys.SwishFn"]
    assert not any(op.context for op in ir.graph.ops), "the checkpoint left a no-grad region"
    assert "osf_tests.reverse_gradient.default" in [op.target for op in ir.graph.ops]
    text = osf.SearchSpace(ir).describe()
    assert "domain.0.weight[1]  (32): unsupported op osf_tests.reverse_gradient.default" in text

    class MaskedSoftmax(torch.autograd.Function):  # SEW-D's XSoftmax: in place on the output it saves
        @staticmethod
        def forward(ctx, scores, mask):
            out = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), -1)
            out.masked_fill_(~mask, 0)
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, grad):
            (out,) = ctx.saved_tensors
            return torch._softmax_backward_data(grad, out, -1, out.dtype), None

    class Attend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 6))

        def forward(self, x, mask):
            return MaskedSoftmax.apply(self.fc(x), mask)

    mask = torch.rand(6, 6) > 0.3
    ir = round_trip(Attend(), (x, mask), tmp_path=tmp_path / "attend")  # outputs and gradients as the model's
    inplace = [op.name for op in ir.graph.ops if op.target == "aten.masked_fill_.Scalar"]
    assert not inplace and any(name.startswith("masked_fill_") for name in ir.info["out_of_place"])
    supernet = osf.Supernet(Attend(), (x, mask))
    arch = supernet.space.min()
    sub = supernet.extract(arch)
    assert sum(p.numel() for p in sub.parameters()) < sum(p.numel() for p in Attend().parameters())
    sub(x, mask).sum().backward()  # the subnet trains
    with supernet.set_arch(arch), torch.no_grad():
        torch.testing.assert_close(supernet(x, mask), sub(x, mask), atol=1e-6, rtol=1e-5)

    class MaskedSoftmaxViewed(MaskedSoftmax):  # returns a view made before the in-place op: it sees the fill
        @staticmethod
        def forward(ctx, scores, mask):
            out = torch.softmax(scores.masked_fill(~mask, torch.finfo(scores.dtype).min), -1)
            rows = out.view(out.shape)
            out.masked_fill_(~mask, 0)
            ctx.save_for_backward(out)
            return rows

    class AttendViewed(Attend):
        def forward(self, x, mask):
            return MaskedSoftmaxViewed.apply(self.fc(x), mask)

    with pytest.raises(osf.TraceError, match=r"cannot compute the model's gradients .*modified by an inplace "
                                             r"operation.*MaskedSoftmaxViewed.*out\.masked_fill\(mask, 0\)"):
        osf.trace(AttendViewed(), (x, mask))


def test_a_module_called_with_constant_keywords_is_called_with_them():
    """timm's blocks call ``self.attn(x, attn_mask=None)``: keywords that are constants (None, bools, numbers,
    strings), the same in every call, are recorded and passed again to a module put in (as the original
    would pass them) and to the rebuilt module when a hook makes the model call it; called on its own
    without them, it says which to pass. Keywords that differ between calls refuse, and a tensor keyword the
    module never reads (the rebuilt model does not compute it)."""
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor, scale: float = 1.0, mode: str = "mul", mask=None) -> torch.Tensor:
            y = self.fc(x)
            return y * scale if mode == "mul" else y + scale

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = Scaled(), Scaled(), Scaled()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x, scale=2.0, mode="add", mask=None)
            h = self.b(self.b(h, scale=3.0), scale=0.5)  # other keywords in its second call
            return self.c(h, mask=x > 0)  # a tensor keyword

    torch.manual_seed(0)
    model, x = Net(), torch.randn(3, 4)
    ir = osf.trace(model, (x,))
    assert ir.modules["a"].meta["call"] == "unary" and ir.modules["a"].meta["kwargs"] == {
        "scale": 2.0, "mode": "add", "mask": None}
    rebuilt = ir.build()
    seen = []
    rebuilt.a.register_forward_hook(lambda m, args, kwargs, out: seen.append((kwargs, out)), with_kwargs=True)
    torch.testing.assert_close(rebuilt(x), model(x))
    assert seen[0][0] == {"scale": 2.0, "mode": "add", "mask": None}
    torch.testing.assert_close(seen[0][1], model.a(x, scale=2.0, mode="add"))
    with pytest.raises(TypeError, match="on one tensor with scale=2.0, mode='add', mask=None"):
        rebuilt.a(x)
    rebuilt.a = copy.deepcopy(model.a)  # put in: called with the keywords the model passed
    model.a.fc.bias.data += 1
    rebuilt.a.fc.bias.data += 1
    torch.testing.assert_close(rebuilt(x), model(x))
    for name, why in (("b", "other keywords in different calls"),
                      ("c", "passes it x1 of \\(x0, mask=x1\\), which it never reads and nothing else computes")):
        with pytest.raises(osf.ModuleReplacedError, match=f"'{name}'.*{why}"):
            setattr(rebuilt, name, Scaled())


def test_modules_returning_several_tensors_are_hooked_and_replaced_as_the_model_called_them(tmp_path):
    """A transformer written by hand: ``nn.MultiheadAttention`` at its defaults returns ``(out, weights)``,
    each block returns ``(x, weights)`` and the model returns the last block's map. Rebuilt from disk, hooks
    on the last block and its attention see the original's tuples; a hook on an earlier block, whose map
    nobody reads (so its ops are gone), warns naming the item; copies of the original's blocks and
    attentions put in give the original's outputs; a module returning a dict with one tensor twice and a
    constant in a list gets the same structure back; an extracted subnet's last attention fires its hook as
    the supernet computes it."""
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.fc = nn.LayerNorm(16), nn.Linear(16, 16)
            self.attn = nn.MultiheadAttention(16, 4, batch_first=True)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.norm(x)
            out, weights = self.attn(h, h, h)
            return x + self.fc(out).relu(), weights

    class Twice(nn.Module):  # returns one tensor twice, and a dict of a list
        def forward(self, x: torch.Tensor) -> dict:
            h = x.mean(1)
            return {"pooled": [h, 2], "again": h}

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks, self.pool, self.head = nn.ModuleList([Block(), Block()]), Twice(), nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            for block in self.blocks:
                x, weights = block(x)
            pooled = self.pool(x)
            a, k = pooled["pooled"]
            return self.head(a * k - pooled["again"]), weights

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 5, 16)
    osf.trace(model, (x,)).save(tmp_path / "net")
    rebuilt = osf.load_ir(tmp_path / "net").build().eval()
    seen: dict[str, dict] = {"model": {}, "rebuilt": {}}
    for key, m in (("model", model), ("rebuilt", rebuilt)):
        for path in ("blocks.1", "blocks.1.attn", "pool"):
            m.get_submodule(path).register_forward_hook(
                lambda mod, i, o, key=key, path=path: seen[key].update({path: o}))
        assert_same(model(x), m(x), key, atol=1e-6, rtol=1e-5)
    for path, want in seen["model"].items():
        got = seen["rebuilt"][path]
        assert type(got) is type(want) and len(got) == len(want), path
        assert torch.utils._pytree.tree_structure(got) == torch.utils._pytree.tree_structure(want), path
        assert_same(want, got, path, atol=1e-6, rtol=1e-5)
    assert seen["rebuilt"]["pool"]["pooled"][0] is seen["rebuilt"]["pool"]["again"]
    assert seen["rebuilt"]["pool"]["pooled"][1] == 2
    for path in ("blocks.0", "blocks.0.attn"):
        with pytest.warns(UserWarning, match=r"will never be called: .*nothing reads item 1 of what it returns"):
            rebuilt.get_submodule(path).register_forward_hook(lambda mod, i, o: None)
    replaced = osf.load_ir(tmp_path / "net").build().eval()
    replaced.blocks[0] = copy.deepcopy(model.blocks[0])
    replaced.blocks[1].attn = copy.deepcopy(model.blocks[1].attn)
    replaced.pool = Twice()
    assert_same(model(x), replaced(x), "put in", atol=1e-6, rtol=1e-5)

    supernet = osf.Supernet(model, (x,))
    arch = supernet.space.sample(0)
    small = supernet.extract(arch).eval()
    supernet.set_arch(arch)
    fired = []
    small.blocks[1].attn.register_forward_hook(lambda mod, i, o: fired.append(o))
    assert_same(supernet(x), small(x), "subnet", atol=1e-5, rtol=1e-4)
    assert len(fired) == 1 and fired[0][1].shape == (2, 5, 5)
    torch.testing.assert_close(fired[0][1].sum(-1), torch.ones(2, 5))  # the map's rows are distributions


def test_modules_called_with_a_dict_are_hooked_and_replaced_as_the_model_called_them(tmp_path):
    """A neck called on its backbone's features as an ``OrderedDict`` (torchvision's FPN) and a fusion called
    with a dict under int and string keys, one tensor under two: rebuilt from disk, their hooks see the
    original's mapping types, keys and values (the same tensor object twice), copies of the originals put
    in give the original's outputs, and a subnet's neck (narrower, every branch kept) fires its hook. A
    mapping under a key that is no constant is refused, naming the call."""
    class Neck(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lateral = nn.ModuleDict({"c3": nn.Conv2d(8, 8, 1), "c4": nn.Conv2d(16, 8, 1)})

        def forward(self, features: "collections.OrderedDict[str, torch.Tensor]") -> torch.Tensor:
            return sum(self.lateral[k](v).mean((2, 3)) for k, v in features.items())

    class Fuse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, parts: dict, scale: float = 1.0) -> torch.Tensor:
            return self.fc(parts[0] * scale + parts["skip"] - parts["again"])

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c3, self.c4 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1)
            self.neck, self.fuse, self.head = Neck(), Fuse(), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c3 = self.c3(x).relu()
            features = collections.OrderedDict([("c3", c3), ("c4", self.c4(c3).relu())])
            h = self.neck(features)
            skip = h.tanh()
            return self.head(self.fuse({0: h, "skip": skip, "again": skip}, scale=2.0))

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 3, 8, 8)
    osf.trace(model, (x,)).save(tmp_path / "net")
    rebuilt = osf.load_ir(tmp_path / "net").build().eval()
    seen: dict[str, dict] = {"model": {}, "rebuilt": {}}
    for key, m in (("model", model), ("rebuilt", rebuilt)):
        for path in ("neck", "fuse"):
            m.get_submodule(path).register_forward_pre_hook(
                lambda mod, args, key=key, path=path: seen[key].update({path: args[0]}))
        assert_same(model(x), m(x), key, atol=1e-6, rtol=1e-5)
    for path, want in seen["model"].items():
        got = seen["rebuilt"][path]
        assert type(got) is type(want) and list(got) == list(want), path
        assert_same(list(want.values()), list(got.values()), path, atol=1e-6, rtol=1e-5)
    assert seen["rebuilt"]["fuse"]["skip"] is seen["rebuilt"]["fuse"]["again"]
    replaced = osf.load_ir(tmp_path / "net").build().eval()
    replaced.neck, replaced.fuse = copy.deepcopy(model.neck), copy.deepcopy(model.fuse)
    assert_same(model(x), replaced(x), "put in", atol=1e-6, rtol=1e-5)

    supernet = osf.Supernet(model, (x,))
    arch = osf.Arch(supernet.space.min().width, supernet.space.max().depth)  # every lateral branch kept
    small = supernet.extract(arch).eval()
    fired = []
    small.neck.register_forward_pre_hook(lambda mod, args: fired.append(args[0]))
    supernet.set_arch(arch)
    assert_same(supernet(x), small(x), "subnet", atol=1e-5, rtol=1e-4)
    assert len(fired) == 1 and type(fired[0]) is collections.OrderedDict and list(fired[0]) == ["c3", "c4"]

    class KeyedByPair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fuse = Fuse()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fuse({0: x, "skip": x, "again": x, (1, 2): x})

    keyed = osf.trace(KeyedByPair().eval(), (torch.randn(2, 8),)).build()
    with pytest.raises(osf.ModuleReplacedError, match="not all of them tensors or constants"):
        keyed.fuse = Fuse()


def test_a_rebuilt_module_called_on_its_own_takes_its_arguments_as_the_original_forward_would():
    """A rebuilt module called alone (a block run for analysis, a wrapper's inner module) runs the ops of its
    model's call, and takes its arguments as the original's forward would: by name or by position, the
    ones the model passed at their default left out, ones it left out passed at their default. A tensor
    left out, or a constant away from what the model passed, is a TypeError that shows the call."""
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, mask=None, scale=1.0, *, causal=False):
            y = self.fc(x) * scale
            return y if mask is None else y.masked_fill(mask, 0.0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = Block(), Block()

        def forward(self, x):
            h = self.a(x, None, causal=False)  # defaults passed
            return self.b(h, x > 0, 1.0)  # a mask made for it alone; the default scale by position

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(3, 4)
    rebuilt = osf.trace(model, (x,)).build().eval()
    mask = x < 0
    torch.testing.assert_close(rebuilt(x), model(x))
    torch.testing.assert_close(rebuilt.a(x), model.a(x))
    torch.testing.assert_close(rebuilt.a(x, mask=None, scale=1.0), model.a(x))
    torch.testing.assert_close(rebuilt.b(x, mask=mask), model.b(x, mask))
    torch.testing.assert_close(rebuilt.b(x, mask, 1.0, causal=False), model.b(x, mask))
    with pytest.raises(TypeError, match=r"left out where it passed their default\): as \(x0, x1, 1.0\)"):
        rebuilt.b(x)
    with pytest.raises(TypeError, match=r"as \(x0, None, causal=False\)"):
        rebuilt.a(x, scale=2.0)
    with pytest.raises(TypeError, match=r"as \(x0, None, causal=False\)"):
        rebuilt.a(x, bias=0.0)


def test_a_module_called_on_several_shapes_runs_alone_only_where_its_calls_run_the_same_ops():
    """A module called twice runs the ops of its first call when a hook makes the model call it: right for a
    shared ReLU at any shape, wrong where its ops hold the traced shapes (a reshape to 4 then 2 groups), which
    is refused with a warning instead; a module called once checks the static dims of what it is given."""
    class Grouped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.reshape(x.shape[0], x.shape[1] // 4, 4)).flatten(1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.grouped, self.act, self.once = Grouped(), nn.ReLU(), nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a, b = self.act(self.grouped(x)), self.act(self.grouped(x[:, :8]))
            return self.once(torch.cat([a, b], 1)[:, :16])

    model, x = Net(), torch.randn(3, 16)
    rebuilt = osf.trace(model, (x,)).build()
    seen = []
    with pytest.warns(UserWarning, match="Grouped.*calls it 2 times with different ops"):
        rebuilt.grouped.register_forward_hook(lambda m, i, o: seen.append("grouped"))
    rebuilt.act.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    rebuilt.once.register_forward_hook(lambda m, i, o: seen.append("once"))
    torch.testing.assert_close(rebuilt(x), model(x))
    assert seen == [16, 8, "once"]
    with pytest.raises(osf.InputError, match=r"shape \(any, 16\) as traced; got \(3, 8\)"):
        rebuilt.once(x[:, :8])


def test_gradient_hooks_and_autograd_grad_in_forward():
    """torch.export drops gradient hooks registered in forward, and no graph holds a module's backward
    hooks: one that changes the gradient is a TraceError naming its line or module, one that only keeps
    the gradient warns that it will not run. torch.autograd.grad in forward cannot be captured: the error
    names it. Hooks on the model's parameters do not follow them into the IR: a warning."""
    x = torch.randn(4, 8)
    with pytest.raises(osf.TraceError, match=r"registers gradient hooks on tensors \(at .*toys\.py:\d+\)"):
        osf.trace(GradientHooks(scale=0.1), (x,))
    with pytest.warns(UserWarning, match="never call these hooks"):
        ir = osf.trace(GradientHooks(scale=None), (x,))
    assert "inlined_functions" not in ir.info
    with pytest.raises(osf.TraceError, match=r"calls torch\.autograd\.grad \(at .*toys\.py:\d+\)"):
        osf.trace(ForcesFromEnergy(), (torch.randn(5, 3),))

    model = GradientHooks(scale=None)
    model.a.register_full_backward_hook(lambda module, grad_in, grad_out: (grad_in[0] * 0.1,))
    with pytest.raises(osf.TraceError, match=r"modules 'a' have backward hooks"):
        osf.trace(model, (x,))
    model = GradientHooks(scale=None)
    model.b.weight.register_hook(torch.neg)
    with pytest.warns(UserWarning, match=r"parameters b\.weight of GradientHooks have gradient hooks"):
        osf.trace(model, (x,))


def test_transformer_with_a_causal_mask_and_no_hint(tmp_path):
    """nn.Transformer{Encoder,Decoder} compare a mask given without ``is_causal`` against a causal one to
    pick a kernel; traced, that comparison was a TraceError. The mask is applied as given: same outputs,
    gradients and state, and the heads of all six attentions are found."""
    source, target = torch.randint(0, 40, (3, 7)), torch.randint(0, 40, (3, 5))
    ir = round_trip(CausalSeq2Seq(), (source, target), tmp_path=tmp_path)
    assert sum(g.kind == "heads" for g in osf.SearchSpace(ir).groups) == 6


def test_an_error_inside_a_generated_forward_shows_the_line_that_failed():
    import gc
    import linecache
    import traceback
    torch.manual_seed(0)
    model, x = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), torch.randn(2, 6)
    rebuilt = osf.trace(model, (x,)).build()
    with pytest.raises(RuntimeError) as err:
        rebuilt(x.double())  # float64 input, float32 weights
    frames = traceback.extract_tb(err.value.__traceback__)
    assert frames[-1].filename.startswith("<osf-generated") and "p_0_weight" in frames[-1].line  # was empty
    name = frames[-1].filename
    del rebuilt, err, frames
    gc.collect()
    assert name not in linecache.cache  # the source goes with the model's code
