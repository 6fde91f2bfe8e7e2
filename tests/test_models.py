import itertools

import pytest
import torch
import torch.nn.functional as F

from autogan_fast.errors import UsageError
from autogan_fast.models import Discriminator, SharedGenerator, init_weights
from autogan_fast.models.generator import UPSAMPLERS, Norms, PostActBlock, PreActBlock
from autogan_fast.search_space import ARCH_LENGTHS, NORM_TYPES, NUM_CELLS, UP_TYPES, cell_slice

LATENT, GF, DF, BOTTOM = 8, 4, 4, 2  # tiny nets: the tests are about wiring, not capacity
DEFAULT_CELL = (1, 1, 1, 1)  # pre, bn, nearest, shortcut: the arch around the cell under test


def arch_with(stage: int, cell: int, codes: tuple[int, ...], skip_mask: int | None = None) -> list[int]:
    """A stage-`stage` arch with cell `cell` set to `codes`; other cells default, all skip-ins on."""
    arch = []
    for c in range(stage + 1):
        cell_codes = list(codes if c == cell else DEFAULT_CELL)
        if c > 0:
            cell_codes.append(2**c - 1 if skip_mask is None or c != cell else skip_mask)
        arch += cell_codes
    assert len(arch) == ARCH_LENGTHS[stage]
    return arch


# Every (conv, norm, up, shortcut) of every cell at every stage the cell exists in.
CHOICE_CASES = [(stage, cell, codes) for stage in range(NUM_CELLS) for cell in range(stage + 1)
                for codes in itertools.product(range(2), range(3), range(3), range(2))]
# Every skip-in mask of cells 2 and 3 with each upsampling (interpolated or stacked-deconv skips).
SKIP_CASES = [(cell, mask, up) for cell in (1, 2) for mask in range(2**cell) for up in range(3)]


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    gen = SharedGenerator(LATENT, GF, BOTTOM)
    init_weights(gen)
    return gen


def run_forward_backward(gen: SharedGenerator, arch: list[int]) -> torch.Tensor:
    gen.zero_grad(set_to_none=True)
    images = gen(torch.randn(3, LATENT), arch)
    images.square().mean().backward()
    return images


@pytest.mark.parametrize("stage, cell, codes", CHOICE_CASES,
                         ids=[f"stage{s}-cell{c + 1}-{''.join(map(str, k))}" for s, c, k in CHOICE_CASES])
def test_every_choice_runs_forward_and_backward(generator, stage, cell, codes):
    images = run_forward_backward(generator, arch_with(stage, cell, codes))
    resolution = BOTTOM * 2 ** (stage + 1)
    assert images.shape == (3, 3, resolution, resolution)
    assert images.abs().max() <= 1 and torch.isfinite(images).all()
    block = generator.cells[cell].pre1 if codes[0] == 1 else generator.cells[cell].post1
    other = generator.cells[cell].post1 if codes[0] == 1 else generator.cells[cell].pre1
    assert block.conv.weight.grad is not None and block.conv.weight.grad.abs().sum() > 0
    assert other.conv.weight.grad is None  # the unchosen conv type is not on the path
    assert (block.deconv.weight.grad is not None) == (codes[2] == 2)  # deconv only when chosen
    assert (generator.cells[cell].shortcut_conv.weight.grad is not None) == bool(codes[3])
    assert generator.to_rgb[2].weight.grad is not None  # one head shared by every stage
    for later in range(stage + 1, NUM_CELLS):  # cells beyond the stage are not run
        assert all(p.grad is None for p in generator.cells[later].parameters())


@pytest.mark.parametrize("cell, mask, up", SKIP_CASES,
                         ids=[f"cell{c + 1}-mask{m}-up{u}" for c, m, u in SKIP_CASES])
def test_every_skip_mask_feeds_exactly_the_chosen_cells(generator, cell, mask, up):
    run_forward_backward(generator, arch_with(2, cell, (0, 0, up, 0), skip_mask=mask))
    for bit in range(cell):
        earlier = cell - bit  # 1-based number of the earlier cell this bit selects
        used = generator.cells[cell].skip_convs[earlier - 1].weight.grad is not None
        assert used == bool(mask >> bit & 1), f"skip from cell {earlier}"
        deconv_used = generator.cells[cell].skip_deconvs[earlier - 1][0].weight.grad is not None
        assert deconv_used == (bool(mask >> bit & 1) and up == 2)


def test_slices_cover_the_vector():
    assert [cell_slice(c) for c in range(NUM_CELLS)] == [slice(0, 4), slice(4, 9), slice(9, 14)]


@pytest.mark.parametrize("norm", ["none", "bn"])
@pytest.mark.parametrize("training", [True, False])
def test_fused_preactivation_path_equals_the_literal_one(norm, training):
    """norm -> ReLU -> nearest up -> conv through the fused op == the same modules run literally."""
    torch.manual_seed(1)
    block = PreActBlock(5, 6, upsamples=True).double()
    init_weights(block)
    block.norms.bn.running_mean.uniform_(-1, 1)
    block.norms.bn.running_var.uniform_(0.5, 2)
    literal = PreActBlock(5, 6, upsamples=True).double()
    literal.load_state_dict(block.state_dict())
    block.train(training)
    literal.train(training)
    x = torch.randn(4, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    x_literal = x.detach().clone().requires_grad_()
    fused = block(x, norm, "nearest")
    h = F.relu(literal.norms(x_literal, norm))
    expected = literal.conv(F.interpolate(h, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(fused, expected, rtol=1e-10, atol=1e-10)  # float64: only rounding differs
    fused.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(x.grad, x_literal.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(block.norms.bn.weight.grad, literal.norms.bn.weight.grad)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(block.norms.bn, name), getattr(literal.norms.bn, name))


def test_fused_postactivation_path_equals_the_literal_one():
    torch.manual_seed(2)
    block = PostActBlock(3, 5, upsamples=True).double()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    fused = block(x, "in", "nearest")
    literal = F.relu(block.norms.inn(block.conv(F.interpolate(x, scale_factor=2, mode="nearest"))))
    torch.testing.assert_close(fused, literal, rtol=1e-10, atol=1e-10)


def test_every_registered_op_has_its_module():
    """A candidate op of the search space (search_space's registry) is run by the generator: each upsampling
    op has its entry in UPSAMPLERS, each norm runs through `Norms` (an unknown one is refused)."""
    assert set(UPSAMPLERS) == set(UP_TYPES)
    norms = Norms(3)
    x = torch.randn(2, 3, 4, 4)
    for norm in NORM_TYPES:
        assert norms(x, norm).shape == x.shape
    with pytest.raises(ValueError, match="unknown norm"):
        norms(x, "group")


@pytest.mark.parametrize("factor", [2, 4])  # a block's or shortcut's x2; the skip-in from two cells back
def test_nearest_by_factor_is_the_former_resize_to_size(factor):
    """Skip-ins were resized by `F.interpolate(size=...)`, blocks by `scale_factor=2`; one upsampler per op
    now scales by the factor: the same source pixel for every output pixel, bit for bit."""
    x = torch.randn(2, 3, 5, 5)
    by_size = F.interpolate(x, size=(5 * factor, 5 * factor), mode="nearest")
    assert torch.equal(UPSAMPLERS["nearest"](x, factor, None), by_size)


def test_derived_generator_runs_only_its_own_arch():
    """`gen(z)` runs the fixed architecture; `gen(z, arch)` (code written for the search's generator: sample
    grids, the reward) accepts that one only."""
    from autogan_fast.models.derived import DerivedGenerator

    arch = [1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3]
    torch.manual_seed(0)
    gen = DerivedGenerator(arch, LATENT, GF, BOTTOM)
    z = torch.randn(2, LATENT)
    assert torch.equal(gen(z), gen(z, arch)) and torch.equal(gen(z), gen(z, tuple(arch)))
    with pytest.raises(ValueError, match="fixed"):
        gen(z, [0] * 14)


def test_generator_needs_an_arch():
    gen = SharedGenerator(LATENT, GF, BOTTOM)
    with pytest.raises(TypeError, match="arch"):
        gen(torch.randn(1, LATENT))
    with pytest.raises(UsageError, match="position 2: cell 1 up"):
        gen(torch.randn(1, LATENT), [0, 0, 3, 0])  # validated as the forward decodes it
    assert not hasattr(gen, "set_arch") and not hasattr(gen, "arch")  # no architecture held between calls


@pytest.mark.parametrize("stage", range(NUM_CELLS))
def test_discriminator_grows_by_stage(stage):
    torch.manual_seed(0)
    dis = Discriminator(DF)
    init_weights(dis)
    dis.apply_spectral_norm()
    dis.stage = stage
    resolution = BOTTOM * 2 ** (stage + 1)
    out = dis(torch.randn(2, 3, resolution, resolution))
    assert out.shape == (2, 1)
    out.sum().backward()
    used_blocks = stage + 1
    for index, block in enumerate(dis.blocks):
        has_grad = block.c1.weight_orig.grad is not None
        assert has_grad == (index < used_blocks), f"block {index + 1}"
    assert dis.last_block.c1.weight_orig.grad is not None and dis.l5.weight_orig.grad is not None


def test_discriminator_state_dict_keeps_torch_spectral_norm_keys():
    dis = Discriminator(DF)
    dis.apply_spectral_norm()
    keys = set(dis.state_dict())
    assert {"l5.weight_orig", "l5.weight_u", "l5.weight_v"} <= keys
    assert "l5.weight" not in keys
    spectral_layers = [k for k in keys if k.endswith("weight_orig")]
    assert len(spectral_layers) == 11  # AutoGAN's discriminator has 11 SN layers


# ---------------------------------------------------------------------------------------------
# The shared generator against an independent transcription of AutoGAN's `shared_gan.py` /
# `building_blocks_search.py` forward (its control flow, in-place skip-in adds included: fine under
# no_grad), run on our modules' weights. It pins the reference's semantics: the skip output a later
# cell reads includes the earlier cell's own skip-in sums, and one to-RGB head serves every stage.

AUTOGAN_UP = {0: "bilinear", 1: "nearest", 2: "deconv"}
AUTOGAN_NORM = {0: None, 1: "bn", 2: "in"}


def _autogan_block(block, x, norm, up, pre):
    def normed(h):
        return block.norms.bn(h) if norm == "bn" else block.norms.inn(h) if norm == "in" else h

    def upsampled(h):
        if not block.upsamples:
            return h
        return block.deconv(h) if up == "deconv" else F.interpolate(h, scale_factor=2, mode=up)

    if pre:  # PreGenBlock: norm -> ReLU -> up -> conv
        return block.conv(upsampled(F.relu(normed(x))))
    return F.relu(normed(block.conv(upsampled(x))))  # PostGenBlock: up -> conv -> norm -> ReLU


def _autogan_cell(cell, x, skip_ft, codes, num_skip_in):
    conv, norm, up, short_cut = codes[0] == 1, AUTOGAN_NORM[codes[1]], AUTOGAN_UP[codes[2]], codes[3] == 1
    h = _autogan_block(cell.pre1 if conv else cell.post1, x, norm, up, conv)
    _, _, ht, wt = h.size()
    h_skip_out = h
    if num_skip_in:
        skip_ins = [0] * num_skip_in  # AutoGAN's set_arch: bit k of the mask -> skip_ins[-(k + 1)]
        for k, bit in enumerate(bin(codes[4])[2:][::-1]):
            skip_ins[-(k + 1)] = int(bit)
        for earlier, (flag, ft) in enumerate(zip(skip_ins, skip_ft, strict=True), 1):
            if flag:
                op = cell.skip_convs[earlier - 1]
                if up != "deconv":
                    h += op(F.interpolate(ft, size=(ht, wt), mode=up))  # in place: h_skip_out sees it
                else:
                    h += op(cell.skip_deconvs[earlier - 1](ft))  # x2 / x4 by the scale, as skip_deconvx{scale}
    final_out = _autogan_block(cell.pre2 if conv else cell.post2, h, norm, up, conv)
    if short_cut:
        if up != "deconv":
            final_out += cell.shortcut_conv(F.interpolate(x, scale_factor=2, mode=up))
        else:
            final_out += cell.shortcut_conv(cell.shortcut_deconv(x))
    return h_skip_out, final_out


def _autogan_shared_forward(gen, z, arch):
    h = gen.l1(z).view(-1, gen.gf_dim, gen.bottom_width, gen.bottom_width)
    cells = [arch[:4], arch[4:9], arch[9:14]][: (len(arch) - 4) // 5 + 1]
    skips = []
    for i, codes in enumerate(cells):
        skip, h = _autogan_cell(gen.cells[i], h, tuple(skips), codes, i)
        skips.append(skip)
    return gen.to_rgb(h)


@pytest.mark.parametrize("arch", [
    pytest.param([1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 3], id="autogan-a"),  # cell 3 reads cell 2's skip
    pytest.param([0, 1, 2, 1, 1, 2, 2, 0, 1, 0, 1, 2, 1, 2], id="deconv-skips-post-bn"),  # stacked deconvs
    pytest.param([1, 2, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 1], id="bilinear-in-mixed"),  # IN, only the x4 skip
    pytest.param([1, 1, 1, 1, 0, 0, 1, 0, 1], id="stage1"),  # the to-RGB head after cell 2
    pytest.param([0, 0, 1, 0], id="stage0-post-nearest"),  # the fused post-activation path
])
def test_shared_generator_matches_autogans_forward(arch):
    torch.manual_seed(3)
    gen = SharedGenerator(LATENT, GF, BOTTOM)
    init_weights(gen)
    for m in gen.modules():  # non-trivial biases and BN affines, so every term shows
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.BatchNorm2d)) and m.bias is not None:
            torch.nn.init.normal_(m.bias, 0.0, 0.3)
    z = torch.randn(6, LATENT)
    with torch.no_grad():
        ours = gen(z, arch)
        reference = _autogan_shared_forward(gen, z, arch)
    # fp32, same operations up to the fused four-phase conv's summation order: ~1e-7 relative each
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_init_is_xavier_for_conv2d_only_as_autogan():
    """AutoGAN's weights_init matches class names "Conv2d" and "BatchNorm2d": ConvTranspose2d and Linear
    keep PyTorch's default init, every bias too."""
    torch.manual_seed(0)
    gen = SharedGenerator(LATENT, GF, BOTTOM)
    before = {name: p.detach().clone() for name, p in gen.named_parameters()}
    init_weights(gen)
    modules = dict(gen.named_modules())
    for name, p in gen.named_parameters():
        owner, kind = modules[name.rsplit(".", 1)[0]], name.rsplit(".", 1)[1]
        changed = not torch.equal(before[name], p)
        if type(owner) is torch.nn.Conv2d and kind == "weight":
            assert changed, name
        elif isinstance(owner, torch.nn.BatchNorm2d):
            assert changed == (kind == "weight") or (kind == "bias" and torch.all(p == 0)), name
        else:
            assert not changed, f"{name} ({type(owner).__name__}) must keep PyTorch's default init"
    bn_weights = torch.cat([m.weight for m in gen.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert abs(bn_weights.mean().item() - 1.0) < 0.02 and bn_weights.std().item() < 0.05  # N(1, 0.02)


@pytest.mark.parametrize("cells", [
    pytest.param([[0, 1, 2, 1], [1, 0, 2, 1, 1], [0, 2, 2, 0, 3]], id="post-pre-post: shortcuts and skip-ins"),
    pytest.param([[1, 1, 2, 0], [0, 1, 2, 1, 0], [1, 0, 2, 1, 2]], id="pre-post-pre: BN, no-norm, one skip"),
])
def test_the_search_starts_its_deconvs_as_nearest_upsampling(cells):
    """The search's fresh generator (`SharedGAN.fresh_nets`: `init_deconvs_as_nearest`) gives an architecture
    whose every upsampling is "deconv" the same images as with "nearest" (the upsampler, the shortcut's and
    the skip-ins' resizers); at PyTorch's default deconv init they differ completely."""
    from autogan_fast.config import preset_config
    from autogan_fast.engines.eager import SharedGAN

    torch.manual_seed(0)
    config = preset_config("demo").validate()
    gen, _ = SharedGAN.fresh_nets(config, torch.device("cpu"))
    gen.eval()  # running statistics: the two forwards see the same normalization
    z = torch.randn(8, config.latent_dim)
    deconv = [code for cell in cells for code in cell]
    nearest = [1 if position in (2, 6, 11) else code for position, code in enumerate(deconv)]
    with torch.no_grad():
        by_deconv = gen(z, deconv)
        by_nearest = gen(z, nearest)
    # float32 sums in another order (the fused upsample-conv against conv after a deconv): 1e-5 of tanh's range
    torch.testing.assert_close(by_deconv, by_nearest, atol=1e-5, rtol=0)
