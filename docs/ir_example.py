import torch
from torch import nn

import osf


class Block(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


model = nn.Sequential(*[Block(32, 64) for _ in range(4)], nn.Linear(32, 10))
ir = osf.trace(model, (torch.randn(2, 32),))

print(ir)                                      # IR(torch.nn.modules.container.Sequential: ...)
print(ir.node("0").meta["init"])               # {'args': {'dim': 32, 'hidden': 64}, 'status': 'verified'}
print(ir.node("0").meta["inputs"], ir.node("0").meta["outputs"])   # ['[B, 32]'] ['[B, 32]']
print(list(ir.graph_of("").edges))             # input -> 0 -> 1 -> 2 -> 3 -> 4 -> output
block = ir.node("0").instantiate()             # a fresh Block(32, 64)

rebuilt = ir.build().eval()                    # generated forward, same state_dict keys
x = torch.randn(5, 32)
torch.testing.assert_close(rebuilt(x), model.eval()(x))
print(rebuilt._osf_train_fn.__osf_source__.splitlines()[0])   # the generated code is inspectable
print(rebuilt[4])                              # Linear(osf: torch.nn.modules.linear.Linear, weight 10x32, bias 10)
assert isinstance(rebuilt[4], nn.Linear)        # rebuilt torch.nn layers are instances of their class
again = osf.trace(rebuilt, (torch.randn(2, 32),))   # a rebuilt model's own IR, over its tensors
assert list(again.modules) == list(ir.modules)


class Mixer(nn.Module):  # returns two tensors: nn.MultiheadAttention at its defaults returns (out, weights)
    def __init__(self, dim: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, 4, batch_first=True)

    def forward(self, x):
        out, weights = self.attn(x, x, x)
        return x + out, weights


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.mix, self.head = nn.Linear(8, 32), Mixer(32), nn.Linear(32, 10)

    def forward(self, tokens):
        h, weights = self.mix(self.embed(tokens))
        return self.head(h.mean(1)), weights


net, tokens = Net().eval(), torch.randn(2, 6, 8)
rebuilt_net = osf.trace(net, (tokens,)).build().eval()
maps = []
rebuilt_net.mix.attn.register_forward_hook(lambda module, args, out: maps.append(out[1]))  # hooks on inner modules fire
rebuilt_net(tokens)
print("attention map", tuple(maps[0].shape))   # (2, 6, 6): what a hook on the original sees
rebuilt_net.mix = Mixer(32)                     # a module put in is called as the model called the old one
print(rebuilt_net(tokens)[0].shape)             # torch.Size([2, 10])
