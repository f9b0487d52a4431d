"""Segmentation as a supernet: a small encoder-decoder labels every pixel of the digits images (background,
or the digit's class), trained on shared weights, scored by mean IoU, searched and exported (about half a
minute on 2 CPU cores)."""
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import osf
from osf.train.labels import Score


class EncoderDecoder(nn.Module):
    def __init__(self, classes: int = 11, width: int = 32):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.deep = nn.Sequential(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width),
                                  nn.ReLU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.head = nn.Conv2d(2 * width, classes, 1)  # scores per class and pixel: [batch, classes, H, W]

    def forward(self, x):
        skip = self.down(x)
        return self.head(torch.cat([skip, self.up(self.deep(skip))], 1))


torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.images[:, None] / 16, dtype=torch.float32)
y = torch.tensor(np.where(digits.images > 4, digits.target[:, None, None] + 1, 0))  # 0: background
y[:, 0] = -100  # the top row unlabelled: such pixels (or padding tokens) count for nothing
train_data = DataLoader(TensorDataset(x[:1400], y[:1400]), batch_size=32, shuffle=True)
val_data = DataLoader(TensorDataset(x[1400:], y[1400:]), batch_size=256)

supernet = osf.Supernet(EncoderDecoder(), (x[:2],), multiple_of=4)
print(supernet.space.summary())
optimizer = torch.optim.AdamW(supernet.parameters(), lr=3e-3)
osf.train(supernet, train_data, optimizer=optimizer, loss_fn=F.cross_entropy, epochs=6,   # ignores -100
          distill=osf.Distill("inplace", weight=0.5),   # KL over each pixel's classes (dim 1, from the labels)
          run_dir=sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(), progress=False)
for name, arch in (("max", supernet.space.max()), ("min", supernet.space.min())):
    miou = osf.evaluate(supernet, arch, val_data, calib_loader=train_data, metric="miou")
    accuracy = osf.evaluate(supernet, arch, val_data, calib_loader=train_data)
    print(f"{name} subnet: mIoU {miou:.3f}, pixel accuracy {accuracy:.3f}")


def mean_iou(model: nn.Module) -> float:  # what the search maximises
    score = Score("miou")
    with torch.no_grad():
        for images, labels in val_data:
            score.add(model(images), labels)
    return score.value()


front = osf.search(supernet, mean_iou, objectives=("accuracy", "flops"), budget=12, calib_loader=train_data,
                   score_name="mIoU", progress=False)
print(front.table())
pick = front.best(flops="50%")
path = osf.export(supernet, pick.arch, tempfile.mkdtemp() + "/seg-half", formats=("pt2",),
                  metrics={"miou": round(pick.accuracy, 4)}, calib_loader=train_data, progress=False)
exported = torch.export.load(f"{path}/model.pt2").module()
with torch.no_grad():
    same = Score("miou")
    same.add(exported(x[1400:]), y[1400:])
print(f"exported the best subnet within half the FLOPs to {path}: mIoU {same.value():.4f} "
      f"(front: {pick.accuracy:.4f})")
