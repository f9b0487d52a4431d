"""Fork-join supernet training on several processes (about 20 seconds on 2 CPU cores):

    torchrun --standalone --nproc-per-node 2 docs/distributed_example.py [RUN_DIR]

Every rank builds the same supernet and loader; each runs its share of the 4 sandwich subnets of a step
on the same batch, the gradients are summed over ranks, and every rank takes the same optimizer step.
Run it again with the same RUN_DIR and it resumes from the last checkpoint (so does torchrun's
``--max-restarts`` after a rank dies)."""
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import osf
from osf.cli.builtin import ResidualCNN, digits
from osf.train import init_process_group

device = init_process_group()        # gloo on CPU, NCCL on GPU (cuda:LOCAL_RANK); reads torchrun's environment
rank, world = dist.get_rank(), dist.get_world_size()

torch.manual_seed(0)                 # rank 0's initial weights are broadcast anyway
x, y, x_test, y_test = digits()
train_data = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)   # same data on every rank
supernet = osf.Supernet(ResidualCNN(1, 10, width=32, blocks=4), (x[:2],), multiple_of=4).to(device)

run_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir() + "/osf-distributed-example"
optimizer = torch.optim.AdamW(supernet.parameters(), lr=3e-3)
result = osf.train(supernet, train_data, optimizer=optimizer, loss_fn=F.cross_entropy, epochs=2,
                   sampler=osf.SandwichSampler(supernet.space, k=4), distill=osf.Distill("inplace", weight=0.5),
                   run_dir=run_dir, checkpoint_every=20, progress=rank == 0)
if rank == 0:
    last = result.history[-1] if result.history else {}
    print(f"{world} ranks trained {result.step} steps (resumed from {result.resumed_from}); last step "
          f"{last.get('seconds', 0):.3f} s, of which joining {last.get('join_seconds', 0):.3f} s")
    test_data = DataLoader(TensorDataset(x_test, y_test), batch_size=256)
    for name, arch in [("max", supernet.space.max()), ("min", supernet.space.min())]:
        print(f"{name}: test accuracy {osf.evaluate(supernet, arch, test_data, calib_loader=train_data):.3f}")
dist.barrier()
dist.destroy_process_group()
