"""Models of the IR issue's test list as supernets, shared by the space and supernet tests (built once
per test session)."""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import osf

torchvision = pytest.importorskip("torchvision")
tvm = torchvision.models


def image(batch=2, size=64):
    return (torch.randn(batch, 3, size, size),)


def _first(y):
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, dict):
        return next(iter(y.values()))
    return y[0]


@functools.lru_cache(maxsize=None)
def supernet(name: str) -> tuple[osf.Supernet, nn.Module, tuple, dict]:
    torch.manual_seed(0)
    kwargs: dict = {}
    if name == "vit_b_16":
        model, args = tvm.vit_b_16(image_size=32), image(2, 32)
        nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-inits it: every gradient would be 0
    elif name.startswith("timm:"):
        timm = pytest.importorskip("timm")
        model, args = timm.create_model(name[5:], img_size=64), image()
    elif name == "hf_vit":
        transformers = pytest.importorskip("transformers")
        cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, image_size=32, patch_size=8)
        model, args = transformers.ViTModel(cfg), image(2, 32)
    elif name == "bert":
        transformers = pytest.importorskip("transformers")
        cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=64, vocab_size=100, max_position_embeddings=64)
        model, args = transformers.BertForSequenceClassification(cfg), ()
        ids = torch.randint(0, 100, (2, 12))
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    elif name == "minilm":
        from osf.cli.models import minilm
        spec = minilm()
        model, args, kwargs = spec.model, spec.args, spec.kwargs
    elif name == "sam":
        pytest.importorskip("segment_anything")
        from osf.cli.models import _sam
        spec = _sam("tiny")
        model, args = spec.model, spec.args
    else:
        model, args = getattr(tvm, name)(**({"init_weights": False} if name == "googlenet" else {})), image()
    model.eval()
    return osf.Supernet(model, args, kwargs), model, args, kwargs


# the IR issue's test list
ALL = ["resnet18", "resnet50", "mobilenet_v3_small", "efficientnet_b0", "densenet121", "convnext_tiny",
       "regnet_y_400mf", "vit_b_16", "swin_t", "shufflenet_v2_x1_0", "googlenet", "timm:vit_tiny_patch16_224",
       "hf_vit", "bert", "minilm", "sam"]
