"""Train a supernet on the digits data set, resume it, and evaluate subnets with inherited weights
(about half a minute on 2 CPU cores)."""
import sys
import tempfile

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import osf
from osf.cli.builtin import ResidualCNN, digits

torch.manual_seed(0)
x, y, x_test, y_test = digits()
train_data = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
test_data = DataLoader(TensorDataset(x_test, y_test), batch_size=256)

supernet = osf.Supernet(ResidualCNN(1, 10, width=32, blocks=4), (x[:2],), multiple_of=4)
small = supernet.space.min()
with supernet.set_arch(small):                   # forward now computes the min subnet on shared weights
    print("min subnet logits", tuple(supernet(x[:3]).shape))
print("arch switching:", supernet.template_status)  # "template": a new arch binds tables, compiles nothing

run_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()
optimizer = torch.optim.AdamW(supernet.parameters(), lr=3e-3)
sampler = osf.WarmupSampler(osf.SandwichSampler(supernet.space, k=4),  # max, min and 2 random subnets per step,
                            steps=len(train_data))                     # after one epoch of the max subnet alone
result = osf.train(
    supernet, train_data, optimizer=optimizer, loss_fn=F.cross_entropy, epochs=4, sampler=sampler,
    distill=osf.Distill("inplace", weight=0.5),           # the max subnet teaches the others
    validate=osf.Validation(test_data, every=len(train_data)),  # max and min subnets scored after each epoch
    run_dir=run_dir, checkpoint_every=50, progress=False)  # metrics.jsonl + atomic checkpoints
print("trained", result.step, "steps; last losses",
      {k: round(v, 3) for k, v in result.history[-1].items() if k.startswith("loss/")})
for record in result.history:
    if "val_accuracy/max" in record:
        print(f"validated at step {record['step']}: max {record['val_accuracy/max']:.3f}, "
              f"min {record['val_accuracy/min']:.3f}")

# Running the same call again resumes from the newest checkpoint (here: it is already complete).
again = osf.train(supernet, train_data, optimizer=optimizer, loss_fn=F.cross_entropy, epochs=4,
                  sampler=sampler, distill=osf.Distill("inplace", weight=0.5),
                  run_dir=run_dir, progress=False)
print("resumed from step", again.resumed_from)

for name, arch in [("max", supernet.space.max()), ("min", small), ("random", supernet.space.sample(1))]:
    acc = osf.evaluate(supernet, arch, test_data, calib_loader=train_data)  # BatchNorm recalibrated first
    print(f"{name:>6}: {supernet.cost(arch)['params']:>7,} params, test accuracy {acc:.3f}")

# Another script (a search, an export) builds the supernet again and reads the run's newest checkpoint.
fresh = osf.Supernet(ResidualCNN(1, 10, width=32, blocks=4), (x[:2],), multiple_of=4)
step = osf.load_weights(fresh, run_dir)
acc = osf.evaluate(fresh, small, test_data, calib_loader=train_data)
print(f"loaded step {step}: min subnet test accuracy {acc:.3f}")

# Fine-tune one subnet alone on its inherited weights before shipping it (osf export --finetune-epochs does
# the same). Every subnet shares these weights, so the others change too: fine-tune a supernet you are done
# searching (here the copy just loaded), or load the checkpoint again afterwards.
picked = fresh.space.sample(1)
before = osf.evaluate(fresh, picked, test_data, calib_loader=train_data)
optimizer = torch.optim.AdamW(fresh.parameters(), lr=3e-4)
osf.train(fresh, train_data, optimizer=optimizer, loss_fn=F.cross_entropy, epochs=2,
          sampler=osf.ArchSampler(fresh.space, {"picked": picked}),  # this subnet alone, at every step
          scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=2 * len(train_data)),
          progress=False)
after = osf.evaluate(fresh, picked, test_data, calib_loader=train_data)  # its BatchNorm recalibrated
model = fresh.extract(picked).eval()  # a plain nn.Module with the fine-tuned weights and those statistics
with torch.no_grad():
    shipped = float((model(x_test).argmax(-1) == y_test).float().mean())
print(f"fine-tuned alone: test accuracy {before:.3f} -> {after:.3f}; extracted model {shipped:.3f}")
