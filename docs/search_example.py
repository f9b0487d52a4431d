"""Train a small supernet on digits, then search it: the accuracy / FLOPs Pareto front, the best subnet under
one budget, latency measured and predicted (about half a minute on 2 CPU cores). Writes into the folder given
as the first argument (default: a temporary one)."""
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import osf
from osf.cli.builtin import ResidualCNN, digits

torch.manual_seed(0)
x, y, x_test, y_test = digits()
train_data = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())

supernet = osf.Supernet(ResidualCNN(1, 10, width=32, blocks=4), (x[:2],), multiple_of=4)
osf.train(supernet, train_data, optimizer=torch.optim.AdamW(supernet.parameters(), lr=3e-3),
          loss_fn=F.cross_entropy, epochs=3, progress=False)

# Costs without running anything: exact params, FLOPs of the inference graph (1 multiply-add = 2 FLOPs).
costs = osf.CostModel(supernet)
print("full model", costs(supernet.space.max()), "smallest subnet", costs(supernet.space.min()))


def accuracy(model):  # your metric on your validation data: called with the subnet set, in eval mode
    with torch.no_grad():
        return (model(x_test).argmax(-1) == y_test).float().mean().item()


# NSGA-II over accuracy and FLOPs, with BatchNorm recalibrated per subnet; every evaluation is appended to
# the cache, so running this again (or with a larger budget) re-evaluates nothing it already has.
front = osf.search(supernet, accuracy, objectives=("accuracy", "flops"), constraints={"params": "60%"},
                   budget=60, calib_loader=train_data, calib_batches=5, cache=out / "evaluations.jsonl",
                   progress=False)
print(front.table())
front.save(out / "front.json", overwrite=True)
front.plot(out / "front.png", overwrite=True)
print("best within 25% of the full model's FLOPs:", front.best(flops="25%").summary)

# One budget: the most accurate subnet within a quarter of the FLOPs.
best = osf.search(supernet, accuracy, objectives=("accuracy",), constraints={"flops": "25%"}, budget=30,
                  calib_loader=train_data, calib_batches=5, progress=False).best()
print(f"single budget: accuracy {best.accuracy:.3f}, {best.flops:,} FLOPs ({best.summary})")
try:
    osf.search(supernet, accuracy, constraints={"flops": 1000}, calib_loader=train_data, progress=False)
except osf.InfeasibleBudget as e:
    print("as expected:", e)

# Latency: measured on the extracted subnet (median of timed runs, cached), or predicted from per-op timings.
latency = osf.LatencyModel(supernet, batch_size=32, threads=1, cache=out / "latency.json")
table = osf.LatencyTable(latency)
arch = front.pareto[-1].arch
print(f"measured {latency.measure(arch) * 1e3:.3f} ms, predicted {table.predict(arch) * 1e3:.3f} ms")
print(f"table error over 5 subnets: {table.error(5)['mape']:.1%} mean absolute percentage error")
print("written:", sorted(p.name for p in out.iterdir()))
