"""IR FLOPs (from shapes, without running) against torch.utils.flop_counter.FlopCounterMode."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import osf
from osf.ir.flops import module_flops

torchvision = pytest.importorskip("torchvision")


def counted(model, args, kwargs=None):
    # grad enabled (no MultiheadAttention fast path) and SDPA on the math backend: FlopCounterMode
    # does not count the fused CPU attention kernels, which would hide the attention matmuls.
    with FlopCounterMode(display=False) as fc, sdpa_kernel(SDPBackend.MATH):
        model(*args, **(kwargs or {}))
    return fc.get_total_flops()


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("mobilenet_v3_small", 64), ("vit_b_16", 32),
                                        ("swin_t", 64)])
def test_ir_flops_equal_flop_counter(name, size):
    kwargs = {"image_size": size} if name.startswith("vit") else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    args = (torch.randn(2, 3, size, size),)
    ir = osf.trace(model, args)
    flops = module_flops(ir)
    assert flops[""] == counted(model, args)
    assert flops[""] == sum(flops[c] for c in ir.node("").children)


def test_bert_flops_include_attention():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64)
    model = transformers.BertModel(cfg).eval()
    ids = torch.randint(0, 100, (2, 16))
    kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    assert module_flops(osf.trace(model, (), kwargs))[""] == counted(model, (), kwargs)


class _Recurrent(torch.nn.Module):
    """LSTMs (projected, bidirectional), a GRU and an RNN over a sequence, and cells stepped in a loop."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.lstm = nn.LSTM(8, 24, num_layers=2, batch_first=True, bidirectional=True, proj_size=12)
        self.gru, self.rnn = nn.GRU(24, 16), nn.RNN(16, 8, nonlinearity="relu")
        self.cell, self.gru_cell = nn.LSTMCell(8, 8), nn.GRUCell(8, 8)

    def forward(self, x):
        h = self.rnn(self.gru(self.lstm(x)[0].transpose(0, 1))[0])[0]
        state, g = (h.new_zeros(h.shape[1], 8),) * 2, h.new_zeros(h.shape[1], 8)
        for t in range(h.shape[0]):
            state, g = self.cell(h[t], state), self.gru_cell(h[t], g)
        return state[0] + g


def test_recurrent_flops_equal_flop_counter():
    """The recurrent ops count every step's products with each layer's and direction's weights."""
    model, args = _Recurrent().eval(), (torch.randn(2, 5, 8),)
    assert module_flops(osf.trace(model, args))[""] == counted(model, args) > 0


class _PerSampleKernels(torch.nn.Module):
    """CondConv-style: per-sample kernels run as one grouped conv with the batch folded into the groups, so
    the conv's ``groups`` is the (symbolic) batch size."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bank = torch.nn.Parameter(torch.randn(4, 16, 8, 3, 3))
        self.route = torch.nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        kernels = torch.einsum("be,eoikl->boikl", self.route(x.mean((2, 3))), self.bank).reshape(b * 16, c, 3, 3)
        return torch.conv2d(x.reshape(1, b * c, h, w), kernels, padding=1, groups=b).view(b, 16, h, w)


def test_a_conv_whose_groups_is_a_symbolic_size_is_counted():
    """A size read at run time among an op's arguments is no tensor operand: the grouped conv counts (it
    used to count 0, and ``cost()`` missed 80 % of this model's FLOPs)."""
    model, args = _PerSampleKernels().eval(), (torch.randn(2, 3, 8, 8),)
    ir = osf.trace(model, args)
    conv = next(op for op in ir.graph.ops if op.target == "aten.conv2d.default" and op.owner == "")
    assert any(isinstance(a, dict) for a in conv.args[4:])  # groups: a node (the batch size), not a number
    assert module_flops(ir)[""] == counted(model, args)
    supernet = osf.Supernet(model, args)
    assert supernet.cost(supernet.space.max())["flops"] == counted(model, args)


class _VectorWeights(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.v = torch.nn.Linear(8, 16), torch.nn.Parameter(torch.randn(16))

    def forward(self, x):
        return torch.nn.functional.linear(self.fc(x), self.v)


def test_a_linear_with_a_one_dimensional_weight_counts_its_products():
    """``F.linear(x, w)`` with ``w`` 1-D (D-FINE's integral over its bins) crashed the counter. It runs as a
    matrix-vector product, which FlopCounterMode does not count (0): osf counts its 2·K per output, as it
    does for ``matmul`` with a vector."""
    model, args = _VectorWeights().eval(), (torch.randn(2, 5, 8),)
    ir = osf.trace(model, args)
    assert module_flops(ir)[""] == counted(model.fc, args) + 2 * 2 * 5 * 16


def test_data_dependent_sizes_count_the_examples_sizes():
    """Sizes no example fixes (``torch.where(mask)`` routing tokens to experts) are counted at the sizes
    the example gives, seen by running the eval program once: ``cost()`` counted torch's hint (1 token per
    expert, a fifth of this model's FLOPs) before."""
    from toys import RoutedExperts
    torch.manual_seed(0)
    model, args = RoutedExperts().eval(), (torch.randn(2, 5, 32),)
    sn = osf.Supernet(model, args, trace_options={"dynamic_seq": True})
    assert sn.cost(sn.space.max())["flops"] == counted(model, args)
    for arch in (sn.space.min(), sn.space.sample(1)):
        assert sn.cost(arch)["flops"] == counted(sn.extract(arch).eval(), args)
