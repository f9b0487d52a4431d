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
