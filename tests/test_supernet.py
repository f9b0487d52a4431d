"""Running subnets on the shared weights: outputs and gradients equal the extracted standalone subnet."""
from __future__ import annotations

import contextlib
import copy
import re

import pytest
import torch

import osf
from models import ALL, _first, supernet
from osf.space.subnet import subnet_ir


def _loss(y) -> torch.Tensor:
    return _first(y).float().square().mean()


def _steps(sn: osf.Supernet, sub: torch.nn.Module, arch: osf.Arch, *args) -> tuple:
    """A loss and its backward through the supernet at ``arch`` and through its extracted ``sub``: both outputs."""
    sn.zero_grad(set_to_none=True)
    with sn.set_arch(arch):
        y = sn(*args)
    _loss(y).backward()
    y_sub = sub(*args)
    _loss(y_sub).backward()
    return y, y_sub


def _cut_grads(sn: osf.Supernet, arch: osf.Arch) -> dict[str, torch.Tensor]:
    """The shared gradients cut down to ``arch`` (canonical name -> gradient of the kept weights)."""
    grads = {k: (t.grad if t.grad is not None else torch.zeros_like(t)) for k, t in sn.tensors().items()}
    return subnet_ir(sn.space, arch, tensors=grads).tensors


class _VectorReadout(torch.nn.Module):
    """D-FINE-like: features contracted by ``F.linear`` with a 1-D weight, wide enough (2^19) that a cut
    2-D weight of its size would run through a ``_CutLinear`` (which takes matrices only)."""

    def __init__(self, width: int = 1 << 19) -> None:
        super().__init__()
        self.a = torch.nn.Linear(4, width)
        self.v = torch.nn.Parameter(torch.randn(width) / width ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(torch.relu(self.a(x)), self.v)


def test_a_wide_one_dimensional_linear_weight_on_shared_weights_equals_the_extracted_subnet():
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    sn = osf.Supernet(_VectorReadout(), (x,))
    (group,) = sn.space.groups
    arch = osf.Arch({group.key: 3 << 17}, sn.space.max().depth)  # 3/4 of the width: 2^18.6 kept elements
    sub = sn.extract(arch)
    y, y_sub = _steps(sn, sub, arch, x)
    torch.testing.assert_close(y, y_sub, rtol=1e-4, atol=1e-5)
    cut, aliases = _cut_grads(sn, arch), sn.subnet_ir(arch).aliases
    for qual, p in sub.named_parameters():
        torch.testing.assert_close(cut[aliases[qual]], p.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_subnet_on_shared_weights_equals_the_extracted_subnet(name):
    sn, _, args, kwargs = supernet(name)
    sn.eval()
    for arch in [sn.space.min(), *(sn.space.sample(100 + i) for i in range(3))]:
        sub = sn.extract(arch).eval()
        sn.zero_grad(set_to_none=True)
        with sn.set_arch(arch):
            y = sn(*args, **kwargs)
            _loss(y).backward()
        y_sub = sub(*args, **kwargs)
        _loss(y_sub).backward()
        torch.testing.assert_close(_first(y), _first(y_sub), rtol=1e-4, atol=1e-5)
        cut = _cut_grads(sn, arch)
        sub_ir_aliases = sn.subnet_ir(arch).aliases
        checked = 0
        for qual, p in sub.named_parameters():
            if p.grad is None:
                continue
            torch.testing.assert_close(cut[sub_ir_aliases[qual]], p.grad, rtol=1e-4, atol=1e-5,
                                       msg=lambda m, q=qual: f"gradient of {q}: {m}")
            checked += 1
        assert checked > 0
        # weights the subnet does not use get no gradient
        used = set(sub_ir_aliases.values())
        for canon, t in sn.tensors().items():
            if canon not in used and isinstance(t, torch.nn.Parameter):
                assert t.grad is None or not t.grad.any(), canon
    sn.zero_grad(set_to_none=True)
    assert sn.arch == sn.space.max()  # the context manager restored the default


def test_set_arch_validates_and_restores():
    sn, _, args, _ = supernet("resnet18")
    small = sn.space.min()
    with pytest.raises(ValueError, match="unknown width group 'nope'"):
        sn.set_arch(osf.Arch(width={"nope": 3}))
    other = supernet("vit_b_16")[0].space.sample(0)
    with pytest.raises(ValueError, match="unknown"):
        sn.set_arch(other)
    with sn.set_arch(small):
        assert sn.arch == small
        with sn.set_arch(sn.space.sample(1)):
            pass
        assert sn.arch == small
    assert sn.arch == sn.space.max()
    sn.set_arch(small)  # plain form stays set
    assert sn.arch == small
    sn.set_arch(None)


def test_max_subnet_is_the_model_and_weights_are_shared_not_copied():
    sn, model, args, _ = supernet("resnet18")
    with torch.no_grad():
        torch.testing.assert_close(sn(*args), model(*args), rtol=1e-4, atol=1e-5)
    before = {k: t.data_ptr() for k, t in sn.tensors().items()}
    src = sn.program(sn.space.min()).train_fn.__osf_source__
    assert ".clone(" not in src and ".contiguous(" not in src
    with sn.set_arch(sn.space.min()), torch.no_grad():
        sn(*args)
    assert before == {k: t.data_ptr() for k, t in sn.tensors().items()}
    # an in-place change of a shared weight is seen by every subnet at once
    w = sn.tensors()["conv1.weight"]
    with torch.no_grad(), sn.set_arch(sn.space.min()):
        y0 = sn(*args)
        w.mul_(2)
        y1 = sn(*args)
        w.div_(2)
    assert not torch.allclose(y0, y1)


@pytest.mark.parametrize("name", ["resnet18", "vit_b_16", "googlenet"])
def test_reused_gradient_buffers_never_leak_an_earlier_step(name):
    """Cut weights send their gradients into a reusable full-size buffer that only the blocks used are
    zeroed in (prefixes; ViT's fused q/k/v rows and GoogLeNet's concatenated input channels keep several
    ranges): a sequence of steps (mixed archs, the max subnet's ordinary accumulation, the same arch again,
    whose first gradients are copied in one batch, a foreign in-place edit of ``.grad``) must give every
    step the gradients of a supernet that never ran before."""
    sn, _, args, _ = supernet(name)
    sn.eval()
    space = sn.space

    def step(net: osf.Supernet, archs: list[osf.Arch]) -> dict[str, torch.Tensor | None]:
        net.zero_grad(set_to_none=True)
        for arch in archs:
            with net.set_arch(arch):
                _loss(net(*args)).backward()
        return {k: None if t.grad is None else t.grad.clone() for k, t in net.tensors().items()
                if isinstance(t, torch.nn.Parameter)}

    steps = [[space.sample(1)], [space.min()], [space.sample(2), space.min(), space.sample(3)],
             [space.max(), space.min()], [space.sample(4)], [space.min()], [space.min()], [space.min()]]
    for i, archs in enumerate(steps):
        got = step(sn, archs)
        fresh = osf.Supernet(None, ir=sn.ir, sort=False).eval()
        fresh.load_state_dict(sn.state_dict())
        want = step(fresh, archs)
        for name, g in want.items():
            assert (g is None) == (got[name] is None), (i, name)
            if g is not None:
                torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-5 * float(g.abs().max()), msg=lambda m, n=name: f"step {i}, {n}: {m}")
        if i in (2, 6):  # an in-place edit osf did not make: the next reuse must zero the whole buffer
            for t in sn.tensors().values():
                if isinstance(t, torch.nn.Parameter) and t.grad is not None:
                    t.grad.add_(1.0)
        if i == 4:
            sn.release_grad_buffers()
    sn.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name, frozen_part", [("resnet18", (".bn", "downsample")),
                                               ("vit_b_16", ("ln_", "mlp.0.weight", "in_proj_bias"))])
def test_frozen_weights_get_no_gradient_and_the_others_theirs(name, frozen_part):
    """Cut weights are read a few per autograd node, large linear weights through a linear that writes
    their gradient in place; freezing some of them (fine-tuning a part) must leave exactly those without a
    gradient and give the rest what the extracted subnet gets."""
    shared, _, args, _ = supernet(name)
    sn = osf.Supernet(None, ir=shared.ir, sort=False).eval()  # its own copy: the shared one stays trainable
    sn.load_state_dict(shared.state_dict())
    arch = sn.space.sample(7)
    frozen = [name for name, p in sn.named_parameters() if any(part in name for part in frozen_part)]
    for name, p in sn.named_parameters():
        p.requires_grad_(name not in frozen)
    sub = sn.extract(arch).eval()
    sn.zero_grad(set_to_none=True)
    with sn.set_arch(arch):
        _loss(sn(*args)).backward()
    _loss(sub(*args)).backward()
    params = dict(sn.named_parameters())
    assert all(params[name].grad is None for name in frozen)
    cut = _cut_grads(sn, arch)
    aliases = sn.subnet_ir(arch).aliases
    trained = [(qual, p) for qual, p in sub.named_parameters() if p.requires_grad]
    assert trained and len(trained) < len(list(sub.parameters()))
    for qual, p in trained:
        torch.testing.assert_close(cut[aliases[qual]], p.grad, rtol=1e-4, atol=1e-5)


def test_an_arch_trained_again_follows_its_standalone_twin():
    """A program hands out the same prefix views of the shared weights while they live on the same
    storage: over several optimizer steps they must follow the in-place updates, give the gradients the
    extracted subnet gets, and be rebuilt when a weight is moved to new storage."""
    shared, _, args, _ = supernet("resnet18")
    sn = osf.Supernet(None, ir=shared.ir, sort=False).eval()
    sn.load_state_dict(shared.state_dict())
    arch = sn.space.sample(11)
    sub = sn.extract(arch).eval()
    opt_sn = torch.optim.SGD(sn.parameters(), lr=0.05, momentum=0.9)
    opt_sub = torch.optim.SGD(sub.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for net, opt in ((sn, opt_sn), (sub, opt_sub)):
            opt.zero_grad(set_to_none=True)
            with sn.set_arch(arch):
                _loss(net(*args)).backward()
            opt.step()
    with sn.set_arch(arch), torch.no_grad():
        torch.testing.assert_close(sn(*args), sub(*args), rtol=1e-4, atol=1e-5)
    trained = dict(sn.extract(arch).named_parameters())
    for qual, p in sub.named_parameters():
        torch.testing.assert_close(trained[qual], p, rtol=1e-5, atol=1e-6, msg=lambda m, q=qual: f"{q}: {m}")
    aliases = sn.subnet_ir(arch).aliases
    name = next(aliases[qual] for qual, p in sub.named_parameters()
                if p.dim() > 1 and p.shape != sn.tensors()[aliases[qual]].shape)  # a cut weight
    weight = sn.tensors()[name]
    weight.data = weight.data * 2  # new storage, same Parameter object
    sub = sn.extract(arch).eval()
    sn.zero_grad(set_to_none=True)
    with sn.set_arch(arch):
        y = sn(*args)
        _loss(y).backward()
    _loss(sub(*args)).backward()
    torch.testing.assert_close(y, sub(*args), rtol=1e-4, atol=1e-5)
    sub_grads = {aliases[qual]: p.grad for qual, p in sub.named_parameters()}
    torch.testing.assert_close(_cut_grads(sn, arch)[name], sub_grads[name], rtol=1e-4, atol=1e-5)
    with sn.set_arch(arch):
        loss = _loss(sn(*args))
    with torch.no_grad():
        weight.add_(1.0)  # an optimizer step between a forward and its backward
    with pytest.raises(RuntimeError, match=f"{name!r} was modified in place"):
        loss.backward()
    sn.zero_grad(set_to_none=True)


def _step(sn: osf.Supernet, program, args, kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor | None]]:
    sn.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks for both programs
    y = _first(sn.net.run_generated(program.train_fn, program.eval_fn, args, kwargs))
    _loss(y).backward()
    return y.detach(), {k: None if t.grad is None else t.grad.clone() for k, t in sn.tensors().items()}


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "googlenet", "vit_b_16", "bert"])
def test_the_shared_template_computes_what_a_program_compiled_for_the_arch_computes(name):
    """Switching archs binds one generated template (guards, argument tables, weight readers) instead of
    compiling each arch: outputs, gradients and which weights get a gradient at all (an optimizer skips
    those without) must equal the program generated from the arch's own rewritten IR — for depth-wise
    convolutions, concatenations, fused q/k/v heads, dynamic-batch views and attention masks."""
    from osf.supernet.program import compile_program
    from osf.space.subnet import subnet_structure
    sn, _, args, kwargs = supernet(name)
    assert sn.template_status == "template"
    an = sn.space.analysis
    for arch in [sn.space.min(), *(sn.space.sample(40 + i) for i in range(3))]:
        bound = sn._get_template().bind(arch)
        own = compile_program(subnet_structure(sn.space, arch), an.tensors, an.dims, sn.space.kept_indices(arch),
                              sn._grads)
        (y1, g1), (y2, g2) = _step(sn, bound, args, kwargs), _step(sn, own, args, kwargs)
        torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)
        assert {k for k, g in g1.items() if g is None} == {k for k, g in g2.items() if g is None}
        for k, g in g1.items():
            if g is not None:
                torch.testing.assert_close(g, g2[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    sn.zero_grad(set_to_none=True)


def test_switching_to_a_new_arch_generates_no_code(monkeypatch):
    import osf.ir.codegen as codegen
    sn, _, args, _ = supernet("vit_b_16")
    sn.program(sn.space.max())  # the template is generated once, here at the latest

    def refuse(*_args, **_kwargs):
        raise AssertionError("code was compiled on an arch switch")
    monkeypatch.setattr(codegen, "compile", refuse, raising=False)
    with torch.no_grad():
        for i in range(5):
            with sn.set_arch(sn.space.sample(70 + i)):
                sn(*args)


def test_a_model_the_template_cannot_express_compiles_each_arch(monkeypatch):
    import osf.supernet.supernet as supernet_module
    from osf.supernet.template import TemplateUnsupported
    shared, _, args, _ = supernet("resnet18")

    def unsupported(*_args, **_kwargs):
        raise TemplateUnsupported("an op it has no form for")
    monkeypatch.setattr(supernet_module, "ProgramTemplate", unsupported)
    monkeypatch.setattr(supernet_module, "ExtractionTemplate", unsupported)
    sn = osf.Supernet(None, ir=shared.ir, sort=False).eval()
    sn.load_state_dict(shared.state_dict())
    assert sn.template_status == "per arch: an op it has no form for"
    assert sn.extraction_status == "per arch: an op it has no form for"
    arch = sn.space.sample(5)
    with sn.set_arch(arch), torch.no_grad():
        torch.testing.assert_close(sn(*args), sn.extract(arch).eval()(*args), rtol=1e-4, atol=1e-5)


class _DenseToy(torch.nn.Module):
    """DenseNet's pattern: each layer's input concatenates the stem and every earlier layer's output, so
    the last layers' batch norms and convolutions depend on the widths of many groups."""

    def __init__(self, layers: int = 5, growth: int = 16) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, growth, 3, padding=1)
        self.layers = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.BatchNorm2d(growth * (i + 1)), torch.nn.ReLU(),
                                torch.nn.Conv2d(growth * (i + 1), growth, 3, padding=1)) for i in range(layers))
        self.head = torch.nn.Linear(growth * (layers + 1), 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = torch.cat([x, layer(x)], 1)
        return self.head(x.mean((2, 3)))


def test_width_tables_forget_their_oldest_combinations_so_memory_stays_bounded(monkeypatch):
    """The templates remember what each op and tensor needs per combination of the widths it depends on,
    the last ``WIDTHS_KEPT`` combinations only: behind DenseNet's concatenations nearly every sampled arch
    is a new combination, and unbounded tables grew by ~2 MB per arch on DenseNet-121 (index tensors
    included), without end in a training run. With a limit of 4, tables stay at 4 over 40 archs, and archs
    whose entries were dropped still compute what their extracted models compute."""
    import osf.space.liveness as liveness
    import osf.supernet.template as template
    monkeypatch.setattr(liveness, "WIDTHS_KEPT", 4)
    monkeypatch.setattr(template, "WIDTHS_KEPT", 4)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    sn = osf.Supernet(_DenseToy(), (x,), multiple_of=4).eval()
    assert len(sn.space.groups) == 6 and sn.template_status == "template"
    archs = [sn.space.sample(i) for i in range(40)]
    with torch.no_grad():
        for arch in archs:
            with sn.set_arch(arch):
                sn(x)
            sn.extract(arch)
    bound, extraction = sn._get_template(), sn._get_extraction_template()
    tables = [t for g in bound.graphs.values() for _, t, _ in g.dynamic] + list(bound.tensor_tables.values())
    memos = ([t.values for t in tables] + list(bound.dim_cuts.memo.values())
             + list(extraction.cuts.tensors.values()) + list(extraction.cuts.dims.memo.values()))
    assert max(len(m) for m in memos) == 4
    sn._compiled.clear()  # bind the first archs again, from tables that dropped them
    with torch.no_grad():
        for arch in archs[:4]:
            with sn.set_arch(arch):
                y = sn(x)
            torch.testing.assert_close(y, sn.extract(arch).eval()(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "googlenet", "densenet121", "vit_b_16", "bert",
                                  "sam"])
def test_extraction_through_the_template_builds_what_the_archs_rewritten_ir_builds(name):
    """``extract`` binds one generated template per supernet (no code per arch): the model it gives must be
    the one built from the arch's own rewritten IR — the same modules, ``state_dict`` (names, shapes,
    values), outputs in training and eval mode, and IR structure (what pickling writes); extracting
    further archs compiles nothing, and the model holds no reference to the supernet's weights."""
    import gc
    import weakref
    from osf.ir.codegen import Blueprint
    from osf.space.subnet import subnet_ir
    sn, _, args, kwargs = supernet(name)
    sn = copy.deepcopy(sn)  # its own generated code: the cached supernet may have extracted before
    sn.extract(sn.space.max())
    assert sn.extraction_status == "template"
    for arch in [sn.space.min(), *(sn.space.sample(80 + i) for i in range(3))]:
        with _no_compile():
            got = sn.extract(arch)
        assert sn._compiled[sn._key(arch)].blueprint.parts is not None  # bound from the template
        ir = subnet_ir(sn.space, arch, tensors=sn.tensors())
        want = Blueprint(ir).instantiate(ir.tensors)
        assert [n for n, _ in got.named_modules()] == [n for n, _ in want.named_modules()]
        state, expected = got.state_dict(), want.state_dict()
        assert list(state) == list(expected)
        for k, t in expected.items():
            assert torch.equal(state[k], t), k
        for mode in ("train", "eval"):
            outs = []
            for model in (got, want):
                getattr(model, mode)()
                torch.manual_seed(0)  # the same dropout masks
                with torch.no_grad():
                    outs.append(model(*args, **kwargs))
            torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
        assert got._osf_blueprint.structure_json() == ir.to_json()
    gc.disable()
    try:
        probe = weakref.ref(sn.extract(arch))
        assert probe() is None  # freed at once, holding no reference cycle (its weights with it)
    finally:
        gc.enable()
    weights = [weakref.ref(t) for t in sn.tensors().values()]
    del sn
    gc.collect()
    assert all(w() is None for w in weights)  # the extracted models did not keep them alive
    got.eval()
    with torch.no_grad():
        torch.testing.assert_close(copy.deepcopy(got)(*args, **kwargs), got(*args, **kwargs), rtol=0, atol=0)


@contextlib.contextmanager
def _no_compile():
    import osf.ir.codegen as codegen

    def refuse(*_args, **_kwargs):
        raise AssertionError("code was compiled for an extraction")
    codegen.compile = refuse
    try:
        yield
    finally:
        del codegen.compile


def test_a_deep_copy_runs_on_its_own_weights():
    """Bound programs read the modules of their supernet: a copy (e.g. an EMA model) must bind its own."""
    shared, _, args, _ = supernet("resnet18")
    sn = osf.Supernet(None, ir=shared.ir, sort=False).eval()
    sn.load_state_dict(shared.state_dict())
    arch = sn.space.sample(3)
    sn.set_arch(arch)
    twin = copy.deepcopy(sn)
    assert twin.arch == arch
    with torch.no_grad():
        before = sn(*args)
        for p in twin.parameters():
            p.mul_(0.5)
        torch.testing.assert_close(sn(*args), before)
        assert not torch.allclose(twin(*args), before)
        torch.testing.assert_close(twin(*args), twin.extract(arch).eval()(*args), rtol=1e-4, atol=1e-5)


def test_torch_compile_of_a_supernet_follows_every_arch_and_extracted_subnets_compile():
    """``torch.compile(supernet)`` runs the supernet eagerly (each arch would be a graph of its own): the
    second arch used to fail inside Dynamo (``NameError: __resume_at_...``), as every arch's program shares
    one code object. An extracted subnet is plain code that Dynamo traces whole."""
    from osf.cli.builtin import TinyViT
    torch.manual_seed(0)
    x = torch.randn(4, 1, 8, 8)
    sn = osf.Supernet(TinyViT(dim=32, depth=2, mlp=64), (x,))
    compiled = torch.compile(sn, backend="eager")
    for seed in (1, 2, 3):
        arch = sn.space.sample(seed)
        sn.set_arch(arch)
        sub = sn.extract(arch)
        out = compiled(x)
        out.square().mean().backward()
        torch.testing.assert_close(out, sub(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(torch.compile(sub, backend="eager", fullgraph=True)(x), sub(x))


def test_a_contracted_unit_whose_output_nobody_reads_leaves_no_assignment():
    """HRNet's multi-resolution fuse: with the fuse residuals dropped, a contracted branch's output is dead
    and so is the value that was its input; the template must not assign from it (the rewrite removes
    both). Seen on timm's hrnet_w18_small, which no other test names."""
    timm = pytest.importorskip("timm")
    from osf.supernet.program import compile_program
    from osf.space.subnet import subnet_structure
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    sn = osf.Supernet(timm.create_model("hrnet_w18_small").train(), (x,))
    assert sn.template_status == "template"
    an = sn.space.analysis
    for arch in (sn.space.min(), sn.space.sample(1)):
        own = compile_program(subnet_structure(sn.space, arch), an.tensors, an.dims, sn.space.kept_indices(arch),
                              sn._grads)
        (y1, g1), (y2, g2) = _step(sn, sn._get_template().bind(arch), (x,), {}), _step(sn, own, (x,), {})
        torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)
        assert {k for k, g in g1.items() if g is None} == {k for k, g in g2.items() if g is None}


def _matmul_kernels(fn) -> list[str]:
    from torch.profiler import profile
    with profile() as prof:
        fn()
    return sorted(e.key for e in prof.events() if e.key in ("aten::mm", "aten::bmm", "aten::addmm"))


@pytest.mark.parametrize("path", ["template", "per arch"])
def test_without_grad_the_shared_weights_run_the_extracted_subnets_kernels(path, monkeypatch):
    """Under ``no_grad`` (evaluation, search) the q/k/v projection of a ViT with pruned heads reads a
    gathered copy of its fused weight; ``matmul`` folds the projection's non-contiguous 3-D input into one
    ``mm`` only for a weight that requires grad, as the extracted subnet's does. The copy must say so, or
    the shared weights run a ``bmm`` there (2.2x slower on ViT-B/16)."""
    if path == "per arch":
        import osf.supernet.supernet as supernet_module
        from osf.supernet.template import TemplateUnsupported

        def unsupported(*_args, **_kwargs):
            raise TemplateUnsupported("compile each arch")
        monkeypatch.setattr(supernet_module, "ProgramTemplate", unsupported)
    shared, _, args, _ = supernet("vit_b_16")
    sn = osf.Supernet(None, ir=shared.ir, sort=False).eval()
    arch = sn.space.min()
    heads = [g.key for g in sn.space.groups if g.key.endswith(".heads")]
    assert heads and all(arch.width[k] < sn.space.max().width[k] for k in heads)
    sub = sn.extract(arch).eval()
    with sn.set_arch(arch), torch.no_grad():
        assert _matmul_kernels(lambda: sn(*args)) == _matmul_kernels(lambda: sub(*args))
        assert "aten::mm" in _matmul_kernels(lambda: sn(*args))


def test_no_grad_and_autocast_blocks_of_forward_on_shared_weights():
    """Training mode on ``toys.ForwardBlocks``: the spectral-normed layer's width is prunable (its power
    iteration's ``mv``/``vdot`` follow the cut), and the supernet at an arch gives the extracted subnet's
    outputs, gradients and updated power-iteration buffers; the no_grad block's module gets no gradient."""
    from toys import ForwardBlocks
    torch.manual_seed(0)
    x = torch.randn(4, 8)
    sn = osf.Supernet(ForwardBlocks(), (x,))
    assert any(g.key.startswith("sn.") for g in sn.space.groups)
    sn.train()
    for arch in [sn.space.min(), sn.space.sample(1)]:
        sub = sn.extract(arch).train()
        y, y_sub = _steps(sn, sub, arch, x)
        torch.testing.assert_close(y, y_sub, rtol=1e-4, atol=1e-5)
        cut = _cut_grads(sn, arch)
        aliases = sn.subnet_ir(arch).aliases
        for qual, p in sub.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(cut[aliases[qual]], p.grad, rtol=1e-4, atol=1e-5)
        assert sn.tensors()["target.weight"].grad is None
        assert not hasattr(sub, "target") or sub.target.weight.grad is None
        buffers = subnet_ir(sn.space, arch, tensors=sn.tensors()).tensors
        for qual, b in sub.named_buffers():
            torch.testing.assert_close(buffers[aliases[qual]], b, msg=lambda m, q=qual: f"buffer {q}: {m}")


def test_extracted_models_and_supernets_pickle_and_load_back(tmp_path):
    """``torch.save(model)`` pickles the whole module; osf's classes are generated, so a rebuilt or
    extracted model is pickled as its IR's structure, its tensors and each module's attributes, and a
    supernet as its IR, shared tensors, space options and arch. Loaded in a fresh process, they compute
    what they computed, keep tied weights tied, and a model changed behind ``__setattr__`` is refused; modules
    put in are pickled as they are."""
    import io
    import pickle
    import subprocess
    import sys
    from toys import SharedInChild, TiedLM
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 5))
    lm = osf.Supernet(TiedLM(), (ids,))
    sub = lm.extract(lm.space.sample(1))
    sub.train()
    sub.norm.eval()
    sub.note = "kept"
    loaded = pickle.loads(pickle.dumps(sub))
    assert type(loaded).__name__ == "TiedLM" and loaded.note == "kept"
    assert loaded.training and not loaded.norm.training and loaded.emb.weight is loaded.out.weight
    assert loaded.state_dict().keys() == sub.state_dict().keys()
    torch.testing.assert_close(loaded(ids), sub(ids), rtol=0, atol=0)
    loaded(ids).square().mean().backward()  # it trains: the tied weight gets the gradient of both uses
    assert loaded.emb.weight.grad is not None and loaded.emb.weight.grad.abs().sum() > 0

    x = torch.randn(2, 8, 6, 6)
    shared = osf.trace(SharedInChild().eval(), (x,)).build()  # one module at several paths stays one
    again = pickle.loads(pickle.dumps(shared))
    assert getattr(again.blocks, "0").cpe is again.cpe is getattr(again.blocks, "1").cpe
    torch.testing.assert_close(again(x), shared(x), rtol=0, atol=0)

    sn, _, args, kwargs = supernet("resnet18")
    arch = sn.space.sample(2)
    sn.set_arch(arch)
    sn.eval()
    with torch.no_grad():
        expected = sn(*args, **kwargs)
    path = tmp_path / "supernet.pt"
    torch.save({"supernet": sn, "args": args, "expected": expected, "extracted": sn.extract(arch).eval()}, path)
    script = (f"import torch\nd = torch.load({str(path)!r}, weights_only=False)\nsn = d['supernet']\n"
              "assert not sn.training and sn.arch.key() == osf_key\n"
              "with torch.no_grad():\n"
              "    torch.testing.assert_close(sn(*d['args']), d['expected'], rtol=0, atol=0)\n"
              "    torch.testing.assert_close(d['extracted'](*d['args']), d['expected'], rtol=1e-4, atol=1e-5)\n"
              "    torch.testing.assert_close(sn.extract(sn.arch).eval()(*d['args']), d['expected'], rtol=1e-4, "
              "atol=1e-5)\nprint('ok')\n")
    run = subprocess.run([sys.executable, "-c", f"osf_key = {arch.key()!r}\n" + script], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]

    swapped = copy.deepcopy(sub)
    object.__setattr__(swapped, "_modules", {**swapped._modules, "norm": torch.nn.LayerNorm(sub.norm.weight.shape[0])})
    with pytest.raises(pickle.PicklingError, match="module 'norm' is a torch.nn.modules.normalization.LayerNorm"):
        torch.save(swapped, io.BytesIO())  # a module swapped in behind __setattr__: the forward never calls it
    sub.eval()
    sub.out = torch.nn.Linear(sub.out.weight.shape[1], 7)  # put in: pickled as it is, put in again on loading
    sub.norm = torch.nn.LayerNorm(sub.norm.weight.shape[0])
    loaded = pickle.loads(pickle.dumps(sub))
    assert loaded.state_dict().keys() == sub.state_dict().keys() and type(loaded.out) is torch.nn.Linear
    torch.testing.assert_close(loaded(ids), sub(ids), rtol=0, atol=0)
    assert loaded(ids).shape[-1] == 7


def test_a_module_put_in_an_extracted_model_is_called_where_the_old_one_ran():
    """`model.fc = nn.Linear(..., 7)`, `nn.Identity()` for features, a block dropped by hand, another
    activation, a LoRA-style wrapper around a rebuilt layer: the forward is generated again at the next call,
    calling the new module on what the old one took. Compared with the eager original changed alike."""
    import torchvision
    from torch import nn
    torch.manual_seed(0)
    sn, model, args, _ = supernet("resnet18")
    rebuilt, eager = osf.trace(model, args).build().eval(), copy.deepcopy(model).eval()
    head = nn.Linear(512, 7)
    for m in (rebuilt, eager):
        m.fc = copy.deepcopy(head)
        m.layer2[1] = nn.Identity()
        m.relu = nn.GELU()  # ReLU(inplace=True): the model reads only what it returns
    torch.testing.assert_close(rebuilt(*args), eager(*args), rtol=1e-4, atol=1e-5)
    assert "fc.weight" in rebuilt.state_dict() and not any(k.startswith("layer2.1.") for k in rebuilt.state_dict())
    sub = sn.extract(sn.space.sample(3)).eval()  # a subnet: a new head on its features
    features = copy.deepcopy(sub)
    features.fc = nn.Identity()
    head = nn.Linear(sub.fc.weight.shape[1], 7)
    sub.fc = head
    torch.testing.assert_close(sub(*args), head(features(*args)), rtol=1e-4, atol=1e-5)
    calls = []
    sub.fc.register_forward_hook(lambda *_: calls.append("fc"))  # a module of your own: its hooks run
    sub(*args).square().mean().backward()
    assert calls == ["fc"] and sub.fc.weight.grad is not None and sub.conv1.weight.grad is not None
    copied = copy.deepcopy(sub)  # its own generated code, on its own modules
    copied.fc = nn.Identity()
    assert copied(*args).shape == (args[0].shape[0], head.in_features) and sub(*args).shape[-1] == 7
    # a LoRA-style wrapper calls the rebuilt layer it wraps (a torch.nn layer runs its own forward)
    class LowRank(nn.Module):
        def __init__(self, base: nn.Linear) -> None:
            super().__init__()
            self.base, self.down = base, nn.Linear(base.weight.shape[1], 2, bias=False)
            self.up = nn.Linear(2, base.weight.shape[0], bias=False)
            nn.init.zeros_(self.up.weight)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + self.up(self.down(x))
    vit_sn, _, vit_args, _ = supernet("vit_b_16")
    vit = vit_sn.extract(vit_sn.space.sample(2)).eval()
    expected = vit(*vit_args)
    linears = [(name, m) for name, m in vit.named_modules() if isinstance(m, nn.Linear) and ".mlp." in name]
    for name, m in linears:
        parent, _, local = name.rpartition(".")
        setattr(vit.get_submodule(parent), local, LowRank(m))
    torch.testing.assert_close(vit(*vit_args), expected, rtol=1e-4, atol=1e-5)  # zero-initialised up
    # called on its own, a rebuilt module runs the ops of its call (Conv2d's forward would need padding_mode)
    torch.testing.assert_close(sub.conv1(args[0]), torch.nn.functional.conv2d(args[0], sub.conv1.weight, None, 2, 3))
    out_proj = vit.encoder.layers.encoder_layer_1.self_attention.out_proj  # read by the attention, never called:
    tokens = torch.randn(3, out_proj.weight.shape[1])                      # its class's forward on its tensors
    torch.testing.assert_close(out_proj(tokens), torch.nn.functional.linear(tokens, out_proj.weight, out_proj.bias))
    # refused: removal, a supernet's modules, and where a module cannot stand in for the old one's calls
    pinned = (r"submodule 'fc' \(osf: torch.nn.modules.linear.Linear\) of this model rebuilt by osf cannot be "
              r"replaced: a supernet")
    for target in (sn.net, copy.deepcopy(sn).net):  # the supernet runs its programs on the modules it built
        with pytest.raises(osf.ModuleReplacedError, match=pinned):
            target.fc = nn.Linear(head.in_features, 7)
    with pytest.raises(osf.ModuleReplacedError, match="'conv1'.*cannot be removed"):
        del sub.conv1
    with pytest.raises(osf.ModuleReplacedError, match="'fc'.*cannot be removed"):
        sub.fc = None
    rebuilt = osf.trace(torchvision.models.resnet18(num_classes=10).eval(), args).build()
    rebuilt.fc = nn.Linear(512, 3)  # a plain rebuild too
    assert rebuilt(*args).shape == (args[0].shape[0], 3)


def test_a_module_that_returns_its_input_is_called_where_it_ran():
    """A features model's ``head = nn.Identity()`` and its ``norm`` run no op: capture marks each call with an
    alias of the value (assigned, not called, in generated code), so a subnet takes a new head there and a
    hook on the Identity fires; the marks are no units, cost no FLOPs and leave the space as it was."""
    from torch import nn

    class Features(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.drop = nn.Linear(16, 32), nn.Dropout(0.5)
            self.block = nn.Sequential(nn.Linear(32, 64), nn.ReLU(inplace=True), nn.Linear(64, 32))
            self.norm, self.head = nn.Identity(), nn.Identity()  # the ReLU returns its input too, changed

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.drop(self.stem(x))
            return self.head(self.norm(h + self.block(h)))

    torch.manual_seed(0)
    model, x = Features().eval(), torch.randn(4, 16)
    sn = osf.Supernet(model, (x,))
    assert [u.key for u in sn.space.units] == ["<root>/residual:block"] and len(sn.space.groups) == 1
    sub = sn.extract(sn.space.min()).eval()
    marks = [line.split(" = ")[1] for line in sub._osf_train_fn.__osf_source__.splitlines()
             if re.search(r"\balias(_\d+)? = (?!None)", line)]
    assert len(marks) == 2 and all(re.fullmatch(r"\w+", value) for value in marks)  # `alias = add`: no call
    assert [op.target for op in sn.ir.graph.ops].count("aten.alias.default") == 2  # none for the in-place ReLU
    with torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        model(x)
    assert sn.cost(sn.space.max())["flops"] == counter.get_total_flops()
    features = sub(x)
    seen = []
    sub.norm.register_forward_hook(lambda module, inputs, out: seen.append(out))
    sub.head = nn.Linear(32, 3)
    torch.testing.assert_close(sub(x), sub.head(features))
    torch.testing.assert_close(seen[0], features)


@pytest.mark.parametrize("name", ["resnet18", "hf_vit"])
def test_every_module_of_a_rebuilt_model_gives_way_to_the_original_module(name):
    """The graph surgery checked module by module: each module of a rebuilt model that may be replaced is
    replaced by (a copy of) the original model's module there; the outputs stay the original's."""
    from torch.utils._pytree import tree_leaves
    _, model, args, kwargs = supernet(name)
    model = copy.deepcopy(model).eval()
    rebuilt = osf.trace(model, args, kwargs).build().eval()
    with torch.no_grad():
        expected = [t for t in tree_leaves(model(*args, **kwargs)) if isinstance(t, torch.Tensor)]
    replaced = 0
    for path, module in model.named_modules():
        parent, _, local = path.rpartition(".")
        if not path or local not in rebuilt.get_submodule(parent)._modules:
            continue
        changed = copy.deepcopy(rebuilt)
        try:
            setattr(changed.get_submodule(parent), local, copy.deepcopy(module))
        except osf.ModuleReplacedError:
            continue
        replaced += 1
        with torch.no_grad():
            got = [t for t in tree_leaves(changed(*args, **kwargs)) if isinstance(t, torch.Tensor)]
        assert len(got) == len(expected), path
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=path)
    assert replaced >= len(list(model.modules())) // 2


class CountCalls:
    """A forward hook that pickles (a lambda does not)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        self.calls += 1


def test_hooks_and_wrappers_on_blocks_of_an_extracted_subnet_see_and_compute_what_the_subnet_does():
    """A forward hook on a block gets the values the subnet computes there (the pooled features are what
    its head reads); a block wrapped in activation checkpointing runs on its own, with the subnet's outputs
    and gradients; a pickled model keeps its hooks firing."""
    import pickle
    from torch import nn
    from torch.utils.checkpoint import checkpoint

    class Checkpointed(nn.Module):
        def __init__(self, block: nn.Module) -> None:
            super().__init__()
            self.block = block

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return checkpoint(self.block, x, use_reentrant=False)

    sn, _, args, _ = supernet("resnet18")
    arch = sn.space.sample(5)
    sub, plain = sn.extract(arch).train(), sn.extract(arch).train()
    pooled = []
    sub.avgpool.register_forward_hook(lambda module, inputs, out: pooled.append(out))
    out = sub(*args)
    torch.testing.assert_close(out, torch.nn.functional.linear(pooled[0].flatten(1), sub.fc.weight, sub.fc.bias))
    sub.layer2[0] = Checkpointed(sub.layer2[0])
    sub.layer3 = Checkpointed(sub.layer3)
    torch.testing.assert_close(sub(*args), plain(*args), rtol=1e-4, atol=1e-5)
    sub(*args).square().mean().backward()
    plain(*args).square().mean().backward()
    for name, p in plain.named_parameters():
        got = sub.get_parameter(name.replace("layer2.0.", "layer2.0.block.").replace("layer3.", "layer3.block."))
        torch.testing.assert_close(got.grad, p.grad, rtol=1e-4, atol=1e-5, msg=name)
    hooked = sn.extract(arch).eval()
    hooked.layer1.register_forward_hook(CountCalls())
    loaded = pickle.loads(pickle.dumps(hooked))
    loaded(*args)
    assert next(iter(loaded.layer1._forward_hooks.values())).calls == 1  # the loaded model's own copy


def test_a_block_that_reads_a_size_computed_in_another_is_called_with_it_computed_again():
    """torch.export reads each symbolic size once: torchvision's ViT computes batch × heads (``12*B``) in its
    first block and every later block reads that value. The first block gives way to a module (later blocks
    then read ``12*B`` from the input's batch), and a hooked later block runs on its own (it computes
    ``12*B`` from its input)."""
    _, model, args, _ = supernet("vit_b_16")
    model = copy.deepcopy(model).eval()
    rebuilt = osf.trace(model, args).build().eval()
    first, later = "encoder_layer_0", "encoder_layer_5"
    rebuilt.encoder.layers.register_module(first, copy.deepcopy(getattr(model.encoder.layers, first)))
    seen = {}
    getattr(rebuilt.encoder.layers, later).register_forward_hook(lambda m, i, o: seen.setdefault("rebuilt", o))
    getattr(model.encoder.layers, later).register_forward_hook(lambda m, i, o: seen.setdefault("model", o))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*args), model(*args), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seen["rebuilt"], seen["model"], rtol=1e-4, atol=1e-5)


def test_every_module_hooked_at_once_as_a_summary_tool_does_then_unhooked():
    """A model summary hooks every module for one call: hooks on a Sequential and on the block inside it
    that computes ``12*B`` for the others (the size computed again from that block's own input, not from the
    model's, which the Sequential's call does not take) see the original's values; once every handle is
    removed the model runs its ops itself again (no module but the root is called)."""
    _, model, args, _ = supernet("vit_b_16")
    model = copy.deepcopy(model).eval()
    rebuilt = osf.trace(model, args).build().eval()
    seen: dict[str, dict] = {"rebuilt": {}, "model": {}}

    def note(side: str, path: str):
        return lambda module, inputs, out: seen[side].setdefault(path, out)
    paths = ["encoder.layers", "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_0.mlp", "encoder"]
    handles = [rebuilt.get_submodule(p).register_forward_hook(note("rebuilt", p)) for p in paths]
    for p in paths:
        model.get_submodule(p).register_forward_hook(note("model", p))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(*args), model(*args), rtol=1e-4, atol=1e-5)
    for p in paths:
        torch.testing.assert_close(seen["rebuilt"][p], seen["model"][p], rtol=1e-4, atol=1e-5, msg=p)
    handles[0].remove()
    with torch.no_grad():
        expected = model(*args)
    calls = []
    watch = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(m))
    try:
        rebuilt(*args)
        assert rebuilt.encoder.layers not in calls and rebuilt.encoder in calls  # the others keep their hooks
        for handle in handles[1:]:
            handle.remove()
        calls.clear()
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(*args), expected, rtol=1e-4, atol=1e-5)
        assert calls == [rebuilt]
    finally:
        watch.remove()


def test_fx_symbolic_trace_and_torchvision_feature_extraction_on_an_extracted_subnet():
    """``torch.fx.symbolic_trace`` runs the generated forward on proxies (named parameters, no input checks),
    calling every module that can run on its own, so torchvision's ``create_feature_extractor`` finds a
    subnet's ``layer3`` by its module path and returns what a hook there sees; the model is left running
    its ops inline."""
    from torchvision.models.feature_extraction import create_feature_extractor
    sn, _, args, _ = supernet("resnet18")
    arch = next(a for a in (sn.space.sample(i) for i in range(50)) if "layer3" in sn.extract(a)._modules)
    sub = sn.extract(arch).eval()
    seen = []
    handle = sub.layer3.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        expected = sub(*args)
    handle.remove()
    traced = torch.fx.symbolic_trace(sub)
    with torch.no_grad():
        torch.testing.assert_close(traced(*args), expected)
        features = create_feature_extractor(sub, return_nodes={"layer3": "mid", "fc": "out"})(*args)
    torch.testing.assert_close(features["mid"], seen[0])
    torch.testing.assert_close(features["out"], expected)
    calls = []
    watch = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(m))
    try:
        with torch.no_grad():
            torch.testing.assert_close(sub(*args), expected)
    finally:
        watch.remove()
    assert calls == [sub]


def test_peft_lora_fine_tunes_an_extracted_subnet_and_merges_back():
    """PEFT finds the subnet's nn.Linear layers (``in_features`` / ``out_features`` read from their weights),
    puts its LoRA layers in their place (called where they ran, each calling the rebuilt layer it wraps),
    trains only the adapters, and ``merge_and_unload`` puts the rebuilt layers back with the update merged."""
    peft = pytest.importorskip("peft")
    sn, _, args, kwargs = supernet("bert")
    sub = sn.extract(sn.space.sample(4)).eval()
    with torch.no_grad():
        before = sub(*args, **kwargs).logits
    tuned = peft.get_peft_model(sub, peft.LoraConfig(r=4, lora_alpha=8,
                                                             target_modules=["query", "value", "classifier"]))
    torch.testing.assert_close(tuned(*args, **kwargs).logits, before, rtol=0, atol=0)  # lora_B starts at zero
    trainable = [p for p in tuned.parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in tuned.named_parameters() if p.requires_grad)
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        (tuned(*args, **kwargs).logits - 1).square().mean().backward()
        optimizer.step()
    with torch.no_grad():
        adapted = tuned(*args, **kwargs).logits
        assert (adapted - before).abs().max() > 1e-3
        merged = tuned.merge_and_unload()
        assert not any("lora" in n for n in merged.state_dict())
        torch.testing.assert_close(merged(*args, **kwargs).logits, adapted, rtol=1e-4, atol=1e-5)


def test_the_docs_example_of_a_new_head_and_features_runs():
    from pathlib import Path
    text = (Path(__file__).parents[1] / "docs" / "space.md").read_text()
    namespace: dict = {}
    exec(compile(text.split("```python\n# replace_example\n")[1].split("```")[0], "replace_example", "exec"), namespace)
    sub = namespace["sub"]
    assert namespace["logits"].shape == (2, 7)
    assert namespace["features"].shape == (2, sub.layer4[-1].bn2.weight.shape[0])
    assert namespace["stages"]["layer3"].shape[:2] == (2, sub.layer3[-1].bn2.weight.shape[0])


def test_a_module_is_refused_where_it_could_not_stand_in_for_the_old_ones_calls():
    """A dict under a tuple key, a tensor read from elsewhere, a tensor read elsewhere, a container whose children the
    model calls one by one, an object returned that pytree does not open, an IR without module-call records:
    each a ModuleReplacedError that says why. A
    module that changed its input in place may give way (export reads the changed value from the op's
    output afterwards), and one called on two tensors."""
    from torch import nn

    class Mix(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a * b

    class Pick(nn.Module):
        def forward(self, parts: dict) -> torch.Tensor:
            return parts[("a", 0)] - parts["b"]

    class Bump(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.add_(1.0)

    class Boxed:  # an object torch's pytree does not open
        def __init__(self, value: torch.Tensor) -> None:
            self.value = value

    class Box(nn.Module):
        def forward(self, x: torch.Tensor) -> Boxed:
            return Boxed(x * 3)

    class Tied(nn.Module):  # reads the weight of a module it does not hold as a child
        def __init__(self, source: nn.Linear) -> None:
            super().__init__()
            self.__dict__["source"] = source

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.linear(x, self.source.weight)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inp, self.mix, self.bump, self.pick, self.box = nn.Linear(8, 8), Mix(), Bump(), Pick(), Box()
            self.blocks = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
            self.tied = Tied(self.inp)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inp(x)
            y = self.pick({("a", 0): self.mix(h, x), "b": x})  # plain keys alone are passed
            for block in self.blocks:
                y = block(y)
            z = self.tied(y) * 2
            self.bump(z)
            return z + y + self.box(x).value

    x = torch.randn(2, 8)
    model = Net()
    ir = osf.trace(model, (x,))
    rebuilt = ir.build()
    cases = {"pick": "calls it other than on tensors and constants, returning tensors "
                     "\\(called with 1 positional argument\\(s\\), not all of them tensors or constants\\)",
             "tied": "takes 2 value\\(s\\) from the rest of the model",
             "blocks": "'blocks.0' runs outside a call of it", "inp": "reads its tensor 'inp.weight' outside its calls",
             "box": "returning tensors \\(returns a Boxed\\)"}
    for name, why in cases.items():
        with pytest.raises(osf.ModuleReplacedError, match=f"'{name}'.*cannot be replaced by a torch.nn.*{why}"):
            setattr(rebuilt, name, nn.Identity())
    rebuilt.blocks[1] = nn.Linear(8, 8)  # one tensor in, one out
    rebuilt.bump = nn.Identity()
    rebuilt.mix = Mix()  # two tensors in, one out: called as mix(h, x)
    model.blocks[1], model.bump = copy.deepcopy(rebuilt.blocks[1]), nn.Identity()
    torch.testing.assert_close(rebuilt(x), model(x))
    del ir.info["scopes"]  # as an IR saved by an osf that did not record module calls
    with pytest.raises(osf.ModuleReplacedError, match="does not record module calls.*trace the original model again"):
        earlier = ir.build()
        earlier.blocks[0] = nn.Linear(8, 8)


def test_containers_of_an_extracted_model_index_iterate_and_count_their_submodules_by_original_name():
    """`features[3]`, `for block in layer1`, `len(blocks)` as on the original's Sequential / ModuleList; a subnet
    keeps the original names, so a dropped block is an error naming the ones kept (plain iteration over
    __getitem__ would have stopped silently at the first gap)."""
    sn, model, args, _ = supernet("mobilenet_v3_small")
    full = sn.extract(sn.space.max())
    assert [type(m).__name__ for m in full.features] == [type(m).__name__ for m in model.features]
    assert len(full.features) == len(model.features) and full.features[-1] is list(full.features)[-1]
    assert full.features[1].block[0][0].weight.shape == model.features[1].block[0][0].weight.shape
    arch = next(a for a in (sn.space.sample(i) for i in range(50)) if len(sn.extract(a).features) < len(model.features))
    sub = sn.extract(arch)
    names = list(sub.features._modules)
    gap = next(i for i in range(len(model.features)) if str(i) not in names)
    assert list(sub.features) == [sub.features[int(n)] for n in names] and len(sub.features) == len(names)
    with pytest.raises(IndexError, match=rf"has no submodule {gap}; its submodules, by their original names: '0'"):
        sub.features[gap]
    with pytest.raises(KeyError, match="no submodule 'nope'"):
        sub.features["nope"]
    with pytest.raises(TypeError, match="not subscriptable: it has no submodules"):
        sub.classifier[0][0]
    assert bool(sub.classifier[0]) and len(sub.classifier[0]) == 0


def test_a_sequential_with_named_children_indexes_by_the_original_position():
    """torchvision's ViT names its encoder layers (``nn.Sequential(OrderedDict(encoder_layer_0=...))``) and
    users index them by position (``encoder.layers[0]``, for a hook or a freeze): an int is a position among
    the original's children, so a subnet's layer 4 is the original's layer 4 even when layer 3 was dropped,
    and a dropped one is an IndexError that names the kept ones."""
    sn, model, args, _ = supernet("vit_b_16")
    original = model.encoder.layers
    rebuilt = osf.trace(model, args).build()  # unlike the supernet's, its channels are in the original order
    for i in range(len(original)):
        assert rebuilt.encoder.layers[i] is getattr(rebuilt.encoder.layers, f"encoder_layer_{i}")
    x = torch.randn(2, 5, 768)  # the traced 32x32 image: 4 patches and the class token
    torch.testing.assert_close(rebuilt.encoder.layers[5](x), original[5](x), atol=1e-5, rtol=1e-4)
    with pytest.raises(osf.InputError, match=r"EncoderBlock .* shape \(any, 5, 768\) as traced; got \(2, 50, 768\)"):
        rebuilt.encoder.layers[5](torch.randn(2, 50, 768))  # not a raw reshape error deep in its ops
    arch = next(a for a in (sn.space.sample(i) for i in range(50))
                if 0 < len(sn.extract(a).encoder.layers) < len(original))
    sub = sn.extract(arch)
    kept = list(sub.encoder.layers._modules)
    gap = next(i for i in range(len(original)) if f"encoder_layer_{i}" not in kept)
    after = next(i for i in range(gap + 1, len(original)) if f"encoder_layer_{i}" in kept)
    assert sub.encoder.layers[after] is getattr(sub.encoder.layers, f"encoder_layer_{after}")
    assert sub.encoder.layers[-1] is getattr(sub.encoder.layers, kept[-1])  # the last one it has
    with pytest.raises(IndexError, match=rf"has no submodule {gap}; its submodules, by their original names: "
                                         rf"'{kept[0]}'"):
        sub.encoder.layers[gap]
    with pytest.raises(IndexError, match=f"has no submodule {len(original)}"):
        sub.encoder.layers[len(original)]
    sub.encoder.layers[after] = copy.deepcopy(sub.encoder.layers[after])  # put in by position, as named
    torch.testing.assert_close(sub(*args), sn.extract(arch)(*args))


def test_an_extracted_module_shows_its_cut_sizes_and_says_where_a_constructor_attribute_went():
    """A rebuilt module holds tensors, not constructor arguments (``stride`` is not kept, ``groups`` or
    ``num_heads`` would be stale once widths shrink): its repr shows its own tensors' shapes, and a missing
    attribute names them instead of nn.Module's bare "has no attribute". Arguments that are a size of one
    of its tensors (``in_features``: ``capture.size_arguments``) are read from the tensor."""
    sn, model, _, _ = supernet("mobilenet_v3_small")
    sub = sn.extract(sn.space.min())
    head = sub.classifier[-1]
    out_features, in_features = head.weight.shape
    assert in_features < model.classifier[-1].in_features
    assert (head.in_features, head.out_features) == (in_features, out_features)
    assert f"weight {out_features}x{in_features}, bias {out_features}" in repr(head)
    assert f"weight {out_features}x{in_features}" in repr(sub)  # printed within the whole model
    stem, depthwise = sub.features[0][0], sub.features[1].block[0][0]
    assert stem.out_channels == stem.weight.shape[0] and stem.in_channels == 3
    channels = depthwise.weight.shape[0]
    with pytest.raises(AttributeError, match=rf"'Conv2d' object has no attribute 'out_channels': .*"
                                             rf"torch.nn.modules.conv.Conv2d.*\(weight {channels}x1x3x3"):
        depthwise.out_channels  # one more channel than groups is no conv: not a plain size
    with pytest.raises(AttributeError, match="no attribute 'stride'"):
        stem.stride
    with pytest.raises(AttributeError, match="tensors of its submodules"):
        sub.classifier.num_classes
    assert not hasattr(head, "_private") and head.weight is head._parameters["weight"]
    assert sub.features[0][1].running_mean is sub.features[0][1]._buffers["running_mean"]


def test_rebuilt_torch_layers_are_instances_of_their_class_so_isinstance_loops_reach_them():
    """``for m in model.modules(): if isinstance(m, nn.Conv2d): ...`` (re-initialising a subnet to train it
    from scratch, freezing BatchNorm) silently skipped every layer of an extracted model: its modules were
    only named after the torch.nn classes. They now derive from them (containers and classes outside
    torch.nn do not), keep parameters registered as None (``Conv2d(bias=False).bias``), and behave as any
    rebuilt module otherwise (state_dict metadata, ``.to``, copies)."""
    from torch import nn
    torch.manual_seed(0)
    sn, model, args, _ = supernet("resnet18")
    sub = sn.extract(sn.space.sample(1))
    originals = dict(model.named_modules())
    for name, module in sub.named_modules():
        original = originals[name]
        torch_layer = type(original).__module__.startswith("torch.nn.") and not isinstance(
            original, (nn.Sequential, nn.ModuleList, nn.ModuleDict))
        assert isinstance(module, type(original)) == torch_layer, name
    assert not isinstance(sub, type(model)) and not isinstance(sub.layer4, nn.Sequential)
    convs = [m for m in sub.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.bias is None for m in convs)  # registered as None, as in the original
    # re-initialise, as one would to train the subnet from scratch
    before = {k: v.clone() for k, v in sub.state_dict().items()}
    for m in sub.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    changed = {k for k, v in sub.state_dict().items() if not torch.equal(v, before[k])}
    assert {f"{n}.weight" for n, m in sub.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))} <= changed
    # freeze BatchNorm while training: its running statistics stay
    sub.train()
    for m in sub.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    stats = {k: v.clone() for k, v in sub.state_dict().items() if "running" in k}
    sub(*args).sum().backward()
    assert stats and all(torch.equal(v, sub.state_dict()[k]) for k, v in stats.items())
    # nn.Module's behaviour, not the layer's: metadata version, moving, copying, loading
    assert sub.state_dict()._metadata["bn1"]["version"] == 1
    sub.eval()
    y = sub(*args)
    assert torch.equal(copy.deepcopy(sub)(*args), y)
    sub.load_state_dict(sub.state_dict())
    assert sub.double().fc.weight.dtype == torch.float64 and torch.allclose(sub(args[0].double()).float(), y, atol=1e-4)
    with pytest.raises(AttributeError, match="no attribute 'track_running_stats'.*BatchNorm2d"):
        sub.bn1.reset_parameters()  # a layer method reading a constructor attribute says so
    state = {k: v.clone() for k, v in sub.state_dict().items()}
    with pytest.raises(AttributeError, match="track_running_stats"):  # it would set momentum=None, which the
        torch.optim.swa_utils.update_bn([args[0]], sub)               # generated forward cannot follow
    assert all(torch.equal(v, sub.state_dict()[k]) for k, v in state.items())  # stopped before changing anything


def test_tracing_an_extracted_model_again_keeps_its_hierarchy_and_its_tensors():
    """A second search within an extracted (e.g. fine-tuned) subnet: ``osf.trace`` returns the subnet's own
    IR over the model's current tensors (a new trace of its generated forward, which never calls its
    submodules, would put every op in the root: no module-wise units, no motifs, no class names), with no
    warning per module; a model whose tensors changed shape since is traced again, and still computes the
    same function."""
    import warnings
    sn, _, args, _ = supernet("resnet18")
    arch = sn.space.sample(1)
    sub = sn.extract(arch).eval()
    with torch.no_grad():
        sub.fc.weight.mul_(2)  # fine-tuned since
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = osf.Supernet(sub, args)
    assert not [w for w in caught if "will never be called" in str(w.message)]
    reference = osf.SearchSpace(sn.subnet_ir(arch))
    assert [u.key for u in again.space.units] == [u.key for u in reference.units] and again.space.units
    assert len(again.space.groups) == len(reference.groups)
    assert again.ir.modules["fc"].meta["class"] == "torch.nn.modules.linear.Linear"
    torch.testing.assert_close(again.extract(again.space.max()).eval()(*args), sub(*args), rtol=1e-4, atol=1e-5)
    assert osf.trace(sub, args, dynamic_spatial=True).info["trace_options"]["dynamic_spatial"]  # other options: traced
    sub.fc.weight = torch.nn.Parameter(torch.randn(7, sub.fc.weight.shape[1]))  # a 7-class head: traced again
    sub.fc.bias = torch.nn.Parameter(torch.zeros(7))
    retraced = osf.trace(sub, args)
    assert retraced.modules[""].meta["num_params"] == sum(p.numel() for p in sub.parameters())
    torch.testing.assert_close(retraced.build().eval()(*args), sub(*args))


def test_the_model_and_the_ir_passed_in_are_never_modified():
    """A traced IR holds the model's own tensors. The supernet sorted them by salience in place at
    construction and every optimizer step trained them: the user's model changed under them. The
    supernet's weights are its own copy, whether it traced the model or was given an IR."""
    import torchvision
    torch.manual_seed(0)
    model, x = torchvision.models.resnet18(num_classes=10).eval(), torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ir = osf.trace(model, (x,))
    ir_before = {k: t.clone() for k, t in ir.tensors.items()}
    for sn in (osf.Supernet(model, (x,)), osf.Supernet(None, ir=ir)):
        sn.train()
        optimizer = torch.optim.SGD(sn.parameters(), lr=0.1)
        with sn.set_arch(sn.space.sample(0)):
            sn(x).square().mean().backward()
        optimizer.step()
        assert any(not torch.equal(t, ir_before[k]) for k, t in sn.tensors().items())  # it did train
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(t, ir_before[k]) for k, t in ir.tensors.items())
    assert all(m._ir is ir for m in ir.modules.values())
    claimed = osf.Supernet(None, ir=ir, copy_ir=False)  # saves the copy: sorts and trains the IR's tensors
    assert all(claimed.tensors()[k].data_ptr() == t.data_ptr() for k, t in ir.tensors.items())
    assert any(not torch.equal(t, ir_before[k]) for k, t in ir.tensors.items())  # sorted in place


def test_subnets_keep_the_hooks_of_blocks_returning_their_inner_modules_tuples():
    """Each block returns its inner module's ``(x, gate)`` as it is (a mark of a mark), and the gate, which
    nobody reads, is computed anyway: in the rebuilt model and in every subnet (blocks and layers dropped)
    a hook on each kept block and inner module fires with a tuple, and the outputs are the supernet's. A
    layer contracted next to a block reads the block's result through its mark, so the block's call still
    gives back only what it returns."""
    import warnings

    from torch import nn

    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.g = nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            gate = self.g(x).sigmoid()
            return x + self.a(x) * gate, gate

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Inner()

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.inner(x)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks, self.head = nn.ModuleList([Block() for _ in range(3)]), nn.Linear(16, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for block in self.blocks:
                x, _ = block(x)
            return self.head(x)

    torch.manual_seed(0)
    model, x = Net().eval(), torch.randn(2, 16)
    supernet = osf.Supernet(model, (x,))
    archs = [supernet.space.max(), supernet.space.min(), *(supernet.space.sample(i) for i in range(1, 5))]
    assert any(not keep for a in archs for keep in a.depth.values())
    for arch in archs:
        small = supernet.extract(arch).eval()
        supernet.set_arch(arch)
        fired, hooked = [], []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for name, module in small.named_modules():
                if name.count(".") == 1 or name.endswith(".inner"):
                    hooked.append(name)
                    module.register_forward_hook(lambda m, i, o, name=name: fired.append((name, type(o))))
        torch.testing.assert_close(small(x), supernet(x), atol=1e-5, rtol=1e-4)
        assert sorted(fired) == sorted((name, tuple) for name in hooked), arch


def test_extracted_subnets_call_modules_on_several_tensors_as_their_model_did():
    """A subnet (layers and branches dropped, widths cut) keeps the marks of what each module was called on:
    hooks on a Hugging Face layer given the padding mask and on its attention fire once per call, leave the
    outputs as they were and see what the module gives when called on its own with the arguments the hook
    saw; a wrapper of yours put around an attention calls it as the model did, with the same outputs."""
    from torch import nn
    transformers = pytest.importorskip("transformers")

    class Wrapped(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                                  vocab_size=100, max_position_embeddings=64)
    ids = torch.randint(0, 100, (2, 12))
    mask = torch.ones_like(ids)
    mask[0, -4:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    sn = osf.Supernet(transformers.BertModel(cfg).eval(), (), inputs)
    hooked_layers = 0
    for arch in [sn.space.min(), *(sn.space.sample(seed) for seed in range(4))]:
        plain = sn.extract(arch).eval()
        want = plain(**inputs).last_hidden_state
        sub = sn.extract(arch).eval()
        names = dict(sub.named_modules())
        paths = [p for p in names if re.fullmatch(r"encoder\.layer\.\d+(\.attention\.self)?", p)]
        seen: dict[str, list] = {p: [] for p in paths}
        for p in paths:
            names[p].register_forward_hook(lambda m, a, k, o, p=p: seen[p].append((a, k, o)), with_kwargs=True)
        torch.testing.assert_close(sub(**inputs).last_hidden_state, want)
        assert all(len(seen[p]) == 1 for p in paths), (arch, seen)
        calls = {p: seen[p][0] for p in paths}  # a layer called alone below calls its attention again
        for p in paths:
            args, kwargs, out = calls[p]
            if not p.endswith("self"):
                assert isinstance(args[1], torch.Tensor) and not args[1][0].all()  # the padding mask
                hooked_layers += 1
            alone = names[p](*args, **kwargs)
            torch.testing.assert_close(alone[0] if isinstance(alone, tuple) else alone,
                                       out[0] if isinstance(out, tuple) else out)
        wrapped = sn.extract(arch).eval()
        for p in paths:
            if p.endswith("attention.self"):
                parent, _, local = p.rpartition(".")
                setattr(wrapped.get_submodule(parent), local, Wrapped(wrapped.get_submodule(p)))
        torch.testing.assert_close(wrapped(**inputs).last_hidden_state, want)
    assert hooked_layers >= 5
