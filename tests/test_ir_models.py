"""Round trips (trace -> build -> same outputs, loss and gradients; save -> load -> same outputs) on the
architectures the IR must handle. Inputs are shrunk where the model allows, to keep CI fast."""
from __future__ import annotations

import pytest
import torch

from roundtrip import round_trip, tensors

torchvision = pytest.importorskip("torchvision")
tvm = torchvision.models


def image(batch, size):
    return (torch.randn(batch, 3, size, size),)


TORCHVISION = {
    # name: (builder kwargs, image size)
    "resnet18": ({}, 64),
    "resnet50": ({}, 64),
    "mobilenet_v3_small": ({}, 64),
    "efficientnet_b0": ({}, 64),
    "densenet121": ({}, 64),
    "convnext_tiny": ({}, 64),
    "regnet_y_400mf": ({}, 64),
    "vit_b_16": ({"image_size": 32}, 32),
    "swin_t": ({}, 64),
    "shufflenet_v2_x1_0": ({}, 64),
    "googlenet": ({"init_weights": False}, 64),
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision(name, tmp_path):
    kwargs, size = TORCHVISION[name]
    model = tvm.get_model(name, weights=None, **kwargs)
    round_trip(model, image(2, size), tmp_path=tmp_path, other_batch=(image(3, size), {}))


def test_vit_b_16_full_size_capture_and_chain_of_blocks():
    model = tvm.vit_b_16()
    ir = round_trip(model, image(2, 224), train=False)
    g = ir.graph_of("encoder.layers")
    blocks = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
    assert [list(g.successors(b)) for b in blocks] == [[b] for b in blocks[1:]] + [["output"]]
    assert ir.node("encoder.layers.encoder_layer_0").meta["inputs"] == ["[B, 197, 768]"]


TIMM = ["vit_tiny_patch16_224", "deit_tiny_patch16_224", "convnext_atto"]


@pytest.mark.parametrize("name", TIMM)
def test_timm(name, tmp_path):
    timm = pytest.importorskip("timm")
    extra = {"img_size": 64} if "patch16" in name else {}
    model = timm.create_model(name, pretrained=False, **extra)
    round_trip(model, image(2, 64), tmp_path=tmp_path, other_batch=(image(3, 64), {}))


def text_inputs(vocab, batch=2, seq=12):
    ids = torch.randint(0, vocab, (batch, seq))
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    return {"input_ids": ids, "attention_mask": mask}


SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100,
             max_position_embeddings=64)


def test_hf_bert(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = transformers.BertModel(transformers.BertConfig(**SMALL))
    round_trip(model, (), text_inputs(100), tmp_path=tmp_path, dynamic_seq=True,
               other_batch=((), text_inputs(100, batch=3, seq=9)))


def test_hf_vit(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                 image_size=32, patch_size=8)
    round_trip(transformers.ViTModel(cfg), image(2, 32), tmp_path=tmp_path, other_batch=(image(3, 32), {}))


def test_hf_gpt2(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64)
    kwargs = {**text_inputs(100), "use_cache": False}
    round_trip(transformers.GPT2Model(cfg), (), kwargs, tmp_path=tmp_path, dynamic_seq=True,
               other_batch=((), {**text_inputs(100, batch=3, seq=5), "use_cache": False}))


def test_real_minilm(tmp_path):
    from osf.cli.models import minilm
    spec = minilm()
    ir = round_trip(spec.model, spec.args, spec.kwargs, tmp_path=tmp_path, **spec.trace_options)
    assert ir.num_params == 22_713_216


def test_sam_image_encoder(tmp_path):
    pytest.importorskip("segment_anything")
    from osf.cli.models import _sam
    spec = _sam("tiny")
    round_trip(spec.model, spec.args, tmp_path=tmp_path, other_batch=(image(1, 64), {}))


def test_modules_called_on_several_tensors_are_hooked_and_replaced_as_the_model_called_them(tmp_path):
    """A Hugging Face layer takes the hidden states and the padding mask, its attention returns
    ``(out, None)``, torchvision's ViT calls ``self_attention(x, x, x, need_weights=False)``: hooks on them
    fire on the rebuilt model (loaded from disk) with the original's arguments and outputs, also at another
    sequence length; a copy of the original's attention put in gives the original's outputs; called on its
    own with other tensors where the model passed one tensor three times, the attention says how to call it.
    The encoder returns a model output class: its hook sees the original's, a copy of it put in works."""
    import copy

    import osf
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**SMALL)).eval()
    inputs = text_inputs(100)
    osf.trace(model, (), inputs, dynamic_seq=True).save(tmp_path / "bert")
    rebuilt = osf.load_ir(tmp_path / "bert").build().eval()
    layer, attention = "encoder.layer.0", "encoder.layer.1.attention.self"
    seen: dict[str, list] = {"model": [], "rebuilt": []}
    for key, m in (("model", model), ("rebuilt", rebuilt)):
        for path in (layer, attention):
            m.get_submodule(path).register_forward_hook(
                lambda mod, args, kwargs, out, key=key, path=path: seen[key].append((path, args, kwargs, out)),
                with_kwargs=True)
    for batch in (inputs, text_inputs(100, batch=3, seq=9)):
        seen["model"].clear(), seen["rebuilt"].clear()
        want, got = model(**batch), rebuilt(**batch)
        torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=1e-4)
        assert [s[0] for s in seen["rebuilt"]] == [s[0] for s in seen["model"]] == [layer, attention]
        for (path, args, kwargs, out), (_, want_args, want_kwargs, want_out) in zip(seen["rebuilt"], seen["model"]):
            assert kwargs.keys() == want_kwargs.keys() and type(out) is type(want_out), path
            assert [type(a) for a in args] == [type(a) for a in want_args], path
            for a, b in zip(tensors((args, kwargs, out)), tensors((want_args, want_kwargs, want_out))):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        assert isinstance(seen["rebuilt"][0][1][1], torch.Tensor)  # the padding mask, passed as the model did
        assert seen["rebuilt"][1][3][1] is None  # the attention's (out, None)
    replaced = osf.trace(model, (), inputs).build().eval()
    replaced.encoder.layer[1].attention = copy.deepcopy(model.encoder.layer[1].attention)
    torch.testing.assert_close(replaced(**inputs).last_hidden_state, model(**inputs).last_hidden_state,
                               atol=1e-5, rtol=1e-4)
    # the encoder returns a model output class: hooked, it gives the original's; a copy of it put in works
    outputs = {}
    for key, m in (("model", model), ("rebuilt", rebuilt)):
        m.encoder.register_forward_hook(lambda mod, i, o, key=key: outputs.update({key: o}))
        m(**inputs)
    assert type(outputs["rebuilt"]) is type(outputs["model"])
    assert outputs["rebuilt"].keys() == outputs["model"].keys()
    torch.testing.assert_close(outputs["rebuilt"].last_hidden_state, outputs["model"].last_hidden_state,
                               atol=1e-5, rtol=1e-4)
    replaced.encoder = copy.deepcopy(model.encoder)
    torch.testing.assert_close(replaced(**inputs).last_hidden_state, model(**inputs).last_hidden_state,
                               atol=1e-5, rtol=1e-4)

    vit = tvm.vit_b_16(image_size=32).eval()
    x = image(2, 32)[0]
    rebuilt_vit = osf.trace(vit, (x,)).build().eval()
    outs = {}
    for key, m in (("model", vit), ("rebuilt", rebuilt_vit)):
        m.encoder.layers[0].self_attention.register_forward_hook(lambda mod, i, o, key=key: outs.update({key: o}))
        m(x)
    assert outs["rebuilt"][1] is None and outs["model"][1] is None
    torch.testing.assert_close(outs["rebuilt"][0], outs["model"][0], atol=1e-5, rtol=1e-4)
    tokens = torch.randn(2, 5, 768)
    with pytest.raises(TypeError, match=r"as \(x0, x0, x0, need_weights=False\)"):
        rebuilt_vit.encoder.layers[0].self_attention(tokens, tokens.clone(), tokens, need_weights=False)
    alone = rebuilt_vit.encoder.layers[0].self_attention(tokens, tokens, tokens, need_weights=False)
    torch.testing.assert_close(alone[0], vit.encoder.layers[0].self_attention(tokens, tokens, tokens,
                                                                                need_weights=False)[0])
