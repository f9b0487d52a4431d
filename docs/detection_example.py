"""NAS for a detector's backbone: the supernet runs inside the whole detector, trained on its losses.

torchvision's detectors cannot be traced whole (their box post-processing branches on tensor values), so
the supernet is made of the backbone + FPN, put back into the detector, and trained with ``model=``: each
sampled subnet's loss is the detector's own loss sum, and the heads train along. A chosen subnet is then
extracted and put into a copy of the detector, which gives the same detections. Synthetic data (coloured
boxes on noise), random weights, CPU, about 20 s:

    python docs/detection_example.py
"""
import copy

import torch
import torchvision

import osf


def synthetic(n: int, seed: int) -> list:
    """``n`` (image, target) pairs: one filled rectangle of class 1-4 (its colour) on noise."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n):
        image = torch.rand(3, 160, 224, generator=g) * 0.2
        label = int(torch.randint(1, 5, (), generator=g))
        x0, y0 = (int(v) for v in torch.randint(0, 100, (2,), generator=g))
        w, h = (int(v) for v in torch.randint(30, 60, (2,), generator=g))
        image[label % 3, y0:y0 + h, x0:x0 + w] = 0.5 + 0.1 * label
        samples.append((image, {"boxes": torch.tensor([[x0, y0, x0 + w, y0 + h]], dtype=torch.float32),
                                "labels": torch.tensor([label])}))
    return samples


torch.manual_seed(0)
detector = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
    weights=None, weights_backbone=None, num_classes=5,
    rpn_post_nms_top_n_train=100, box_batch_size_per_image=64)  # fewer proposals: a quick CPU example
# the backbone sees the detector's resized, padded batch: any height and width, so trace them dynamic
supernet = osf.Supernet(detector.backbone, (torch.randn(2, 3, 320, 448),), trace_options={"dynamic_spatial": True})
detector.backbone = supernet
print(supernet.space)

loader = torch.utils.data.DataLoader(synthetic(8, seed=0), batch_size=2, shuffle=True,
                                     collate_fn=lambda batch: tuple(zip(*batch)))
result = osf.train(
    supernet, loader, model=detector,                        # each subnet's loss: the detector's forward
    optimizer=torch.optim.SGD(detector.parameters(), lr=0.01, momentum=0.9),   # heads train along
    batch_fn=lambda batch: ((list(batch[0]), list(batch[1])), {}, None),       # detector(images, targets)
    loss_fn=lambda losses, _: sum(losses.values()),          # it returns a dict of losses in training
    sampler=osf.SandwichSampler(supernet.space, k=3), steps=4, progress=False)
print("losses of the last step:", {k: round(v, 3) for k, v in result.history[-1].items() if k.startswith("loss/")})

# a subnet within half of the backbone's FLOPs, its BatchNorm statistics re-estimated on backbone inputs
arch = next(a for a in (supernet.space.sample(seed) for seed in range(100))
            if supernet.cost(a)["flops"] <= 0.5 * supernet.cost(supernet.space.max())["flops"])
backbone_batches = [detector.transform(list(images))[0].tensors for images, _ in loader]
supernet.recalibrate(arch, backbone_batches, batches=4)

detector.eval()
images, _ = next(iter(loader))
with torch.no_grad(), supernet.set_arch(arch):
    on_shared_weights = detector(list(images))
small = copy.deepcopy(detector)
small.backbone = supernet.extract(arch).eval()           # a plain, physically smaller backbone
with torch.no_grad():
    standalone = small(list(images))
same = all(torch.allclose(a["boxes"], b["boxes"], atol=1e-4) and torch.allclose(a["scores"], b["scores"], atol=1e-5)
           for a, b in zip(on_shared_weights, standalone))
params = [sum(p.numel() for p in m.parameters()) for m in (small.backbone, detector.backbone)]
print(f"extracted backbone: {params[0]:,} of {params[1]:,} parameters; "
      f"same detections as on the shared weights: {same}")
