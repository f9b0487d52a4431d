"""Search space and extraction on ResNet-18 (runs in a few seconds on CPU)."""
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

import osf

model = torchvision.models.resnet18().eval()
x = torch.randn(2, 3, 64, 64)
supernet = osf.Supernet(model, (x,))            # trace + derive the space (options: see osf.SearchSpace)
space = supernet.space
print(space)                                     # SearchSpace(12 groups, 14 units, 10^8.4 subnets)
print(space.describe().splitlines()[0])
print(space.num_motifs(), "motifs")

arch = space.sample(0)                           # an osf.Arch: width per group, keep/drop per unit
print(arch.to_json()["depth"])
space.validate(arch)                             # ValueError naming the key and its allowed values

small = supernet.extract(arch).eval()            # a plain, physically smaller nn.Module
print(supernet.cost(arch))                       # {'params': ..., 'flops': ...} from the IR alone
assert supernet.cost(arch)["params"] == sum(p.numel() for p in small.parameters())
with FlopCounterMode(display=False) as counter:
    small(x)
assert supernet.cost(arch)["flops"] == counter.get_total_flops()
print(small.fc)                                  # Linear(osf: torch.nn.modules.linear.Linear, weight 1000x..., bias 1000)

scratch = supernet.extract(arch)                 # the same subnet re-initialised: a from-scratch baseline
for m in scratch.modules():                      # rebuilt torch.nn layers are instances of their class
    if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
        m.reset_parameters()
assert not torch.equal(scratch.fc.weight, small.fc.weight)

full = supernet.extract(space.max()).eval()      # the maximal subnet is the original function
torch.testing.assert_close(full(x), model(x))

best = space.salient(arch)                       # the most salient member of arch's motif
assert space.signature(best) == space.signature(arch)

supernet.sort_by_salience()                      # salient channels first; same function
torch.testing.assert_close(supernet.ir.build().eval()(x), model(x), rtol=1e-4, atol=1e-4)

# dropping units must leave every output looking at the inputs: a ViT without blocks would classify its
# class token alone, so its min() keeps one block (see "Elastic depth" in docs/space.md)
vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=4, num_heads=4,
                                          hidden_dim=64, mlp_dim=128).eval()
vit_space = osf.SearchSpace(osf.trace(vit, (torch.randn(2, 3, 32, 32),)))
everything_dropped = osf.Arch(vit_space.min().width, {u.key: False for u in vit_space.units})
print(vit_space.cut_outputs(everything_dropped), vit_space.cut_outputs(vit_space.min()))   # [0] []
assert vit_space.cut_outputs(vit_space.min()) == []
assert not any(vit_space.cut_outputs(vit_space.sample(seed)) for seed in range(20))   # drawn again when cut

# hooks (and modules of yours put in) work on extracted models, also where the model calls a module on several
# tensors: torchvision's blocks call self_attention(x, x, x, need_weights=False), which returns (out, None)
images = torch.randn(2, 3, 32, 32)
vit_supernet = osf.Supernet(vit, (images,))
narrow = vit_supernet.extract(osf.Arch(vit_supernet.space.min().width, vit_supernet.space.max().depth)).eval()
grabbed = []
narrow.encoder.layers[0].self_attention.register_forward_hook(lambda m, args, out: grabbed.append(out[0]))
narrow(images)
print("attention output", tuple(grabbed[0].shape))   # (2, 17, 16): 17 tokens, the narrowed width
