"""The library on a GPU: what the CPU test suite cannot show, checked on CUDA in one run.

For a CNN (torchvision ResNet-18), a ViT (torchvision vit_b_16) and a BERT encoder (Hugging Face, small
config), traced with the model already on the GPU and, for the CNN, traced on the CPU and moved after:
the maximal subnet against the eager model, ``set_arch`` against ``extract`` on the minimal and random
subnets (outputs and every shared weight's gradient), ``torch.compile`` of an extracted subnet against
its eager run, and the extracted maximal subnet cast with ``.half()`` against the original cast alike.
TF32 is turned off for these comparisons (it is on for cuDNN convolutions by default and changes results
in the 3rd digit); the tolerances are bench/probe.py's (float16: 1e-2 of the output's scale).
Then: mixed-precision training (float16 with loss scaling, and bfloat16) of the built-in CNN on digits,
a Faster R-CNN whose backbone supernet trains on the detector's losses on the GPU and gives the same
detections once extracted, and GPU latency of the max and min subnets. Prints PASS / FAIL per check and
exits 1 when any fails; ``--json`` saves the numbers.

    python bench/cuda_checks.py --json cuda_checks.json
    python bench/cuda_checks.py --device cpu                 # the same checks on the CPU (about 3 minutes)
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import osf  # noqa: E402

RESULTS: list[dict] = []


def check(name: str, ok: bool, **numbers) -> None:
    """Record and print one check."""
    RESULTS.append({"check": name, "ok": bool(ok), **numbers})
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in numbers.items()
                      if v is not None)
    print(f"{'PASS' if ok else 'FAIL'}  {name}  {shown}", flush=True)


def equivalence(name: str, model: torch.nn.Module, args: tuple, device: torch.device, *,
                trace_on_cpu: bool = False) -> None:
    """Max subnet = eager; set_arch = extract (outputs, gradients) on min and random subnets; compile.
    Tolerances: bench/probe.py's (outputs atol 1e-5 rtol 1e-4, max subnet atol 1e-4 rtol 1e-3)."""
    model = model.eval()
    if trace_on_cpu:
        supernet = osf.Supernet(model, args).to(device)
        model = model.to(device)
    else:
        model = model.to(device)
        supernet = osf.Supernet(model, tuple(a.to(device) for a in args))
    args = tuple(a.to(device) for a in args)
    supernet.eval()
    with torch.no_grad():
        why, diff = common.compare_outputs(model(*args), supernet(*args), atol=1e-4, rtol=1e-3)
    check(f"{name}: max subnet = eager model", why is None, max_abs_diff=diff, problem=why)
    space = supernet.space
    for label, arch in (("min", space.min()), ("random", space.sample(1))):
        small = supernet.extract(arch).eval()
        supernet.zero_grad(set_to_none=True)
        with supernet.set_arch(arch):
            shared = supernet(*args)
            common.output_loss(shared).backward()
        own = small(*args)
        common.output_loss(own).backward()
        why, diff = common.compare_outputs(own, shared)
        grad_why = common.gradient_problem(supernet, arch, small)
        check(f"{name}: set_arch = extract, {label} subnet (outputs, gradients)", why is None and grad_why is None,
              max_abs_diff=diff, problem=why or grad_why)
    small = supernet.extract(space.sample(2)).eval()
    with torch.no_grad():
        why, diff = common.compare_outputs(small(*args), torch.compile(small)(*args), atol=1e-4, rtol=1e-3)
    check(f"{name}: torch.compile(extracted subnet) = eager", why is None, max_abs_diff=diff, problem=why)
    half = tuple(a.half() if a.is_floating_point() else a for a in args)
    with torch.no_grad():
        expected = copy.deepcopy(model).half()(*half)
        got = supernet.extract(space.max()).eval().half()(*half)
    scale = max(float(t.float().abs().max()) for t in torch.utils._pytree.tree_leaves(expected)
                if isinstance(t, torch.Tensor) and t.is_floating_point())
    why, diff = common.compare_outputs(expected, got, atol=1e-2 * max(scale, 1.0), rtol=1e-2)
    check(f"{name}: extracted max subnet .half() = original .half()", why is None, max_abs_diff=diff, problem=why)


def amp_training(device: torch.device, dtype: torch.dtype) -> None:
    from osf.cli.builtin import ResidualCNN, digits
    torch.manual_seed(0)
    x_train, y_train, x_val, y_val = digits()
    model = ResidualCNN()
    supernet = osf.Supernet(model, (x_train[:2],)).to(device)
    data = torch.utils.data.TensorDataset(x_train.to(device), y_train.to(device))
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    start = time.perf_counter()
    result = osf.train(supernet, loader, optimizer=torch.optim.AdamW(supernet.parameters(), lr=3e-3),
                       loss_fn=F.cross_entropy, epochs=3, amp=dtype, progress=False)
    seconds = time.perf_counter() - start
    losses = [h["loss/max"] for h in result.history]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_val.to(device), y_val.to(device)),
                                      batch_size=256)
    acc = osf.evaluate(supernet, supernet.space.max(), val, calib_loader=loader)
    finite = all(torch.isfinite(p).all() for p in supernet.parameters())
    check(f"train with amp={dtype} (built-in CNN, digits, 3 epochs)", finite and last < first and acc > 0.5,
          max_subnet_loss_first_10_steps=first, last_10_steps=last, max_subnet_val_acc=acc, seconds=seconds)


def detector(device: torch.device) -> None:
    """docs/detection_example.py on the GPU."""
    import torchvision
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(8):
        image = torch.rand(3, 160, 224, generator=g) * 0.2
        label = int(torch.randint(1, 5, (), generator=g))
        x0, y0 = (int(v) for v in torch.randint(0, 100, (2,), generator=g))
        image[label % 3, y0:y0 + 40, x0:x0 + 50] = 0.5 + 0.1 * label
        samples.append((image.to(device), {"boxes": torch.tensor([[x0, y0, x0 + 50, y0 + 40]], dtype=torch.float32,
                                                                 device=device),
                                           "labels": torch.tensor([label], device=device)}))
    torch.manual_seed(0)
    det = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=5, rpn_post_nms_top_n_train=100, box_batch_size_per_image=64)
    supernet = osf.Supernet(det.backbone, (torch.randn(2, 3, 320, 448),), trace_options={"dynamic_spatial": True})
    det.backbone = supernet
    det = det.to(device)
    loader = torch.utils.data.DataLoader(samples, batch_size=2, shuffle=True, collate_fn=lambda b: tuple(zip(*b)))
    result = osf.train(supernet, loader, model=det, optimizer=torch.optim.SGD(det.parameters(), lr=0.01, momentum=0.9),
                       batch_fn=lambda batch: ((list(batch[0]), list(batch[1])), {}, None),
                       loss_fn=lambda losses, _: sum(losses.values()),
                       sampler=osf.SandwichSampler(supernet.space, k=3), steps=4, progress=False)
    arch = supernet.space.sample(3)
    det.eval()
    images, _ = next(iter(loader))
    with torch.no_grad(), supernet.set_arch(arch):
        shared = det(list(images))
    small = copy.deepcopy(det)
    small.backbone = supernet.extract(arch).eval()
    with torch.no_grad():
        alone = small(list(images))
    same = all(a["boxes"].shape == b["boxes"].shape and torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
               for a, b in zip(shared, alone))
    loss = sum(v for k, v in result.history[-1].items() if k.startswith("loss/"))
    check("detector on the GPU: backbone supernet trains on its losses, extracted = shared detections",
          same and loss == loss, last_step_loss=float(loss), detections=sum(len(a["boxes"]) for a in alone))


def latency(device: torch.device) -> None:
    import torchvision
    supernet = osf.Supernet(torchvision.models.resnet50().eval(), (torch.randn(1, 3, 224, 224),))
    lat = osf.LatencyModel(supernet, device=device, batch_size=32, runs=20)
    hi, lo = lat.measure(supernet.space.max()), lat.measure(supernet.space.min())
    check("GPU latency (ResNet-50, batch 32): min subnet faster than max", lo < hi, max_ms=hi * 1e3, min_ms=lo * 1e3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--json", type=Path, default=None)
    opts = parser.parse_args()
    device = torch.device(opts.device)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    import torchvision
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    steps = [
        lambda: equivalence("resnet18", torchvision.models.resnet18(), (torch.randn(4, 3, 224, 224),), device),
        lambda: equivalence("resnet18 traced on CPU", torchvision.models.resnet18(), (torch.randn(4, 3, 224, 224),),
                            device, trace_on_cpu=True),
        lambda: equivalence("vit_b_16", torchvision.models.vit_b_16(), (torch.randn(2, 3, 224, 224),), device),
        lambda: equivalence("bert (4 layers)", BertModel(BertConfig(num_hidden_layers=4, hidden_size=256,
                                                                    num_attention_heads=4, intermediate_size=1024)),
                            (torch.randint(0, 1000, (2, 32)),), device),
        lambda: amp_training(device, torch.float16),
        lambda: amp_training(device, torch.bfloat16),
        lambda: detector(device),
        lambda: latency(device),
    ]
    for step in steps:
        try:
            step()
        except Exception as exc:  # one broken check must not hide the others
            import traceback
            traceback.print_exc()
            check(f"raised {type(exc).__name__}", False, error=str(exc)[:300])
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
           "python": platform.python_version()}
    print(json.dumps(env))
    if opts.json:
        opts.json.write_text(json.dumps({"env": env, "results": RESULTS}, indent=1))
    return 0 if all(r["ok"] for r in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
