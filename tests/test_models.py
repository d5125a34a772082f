"""Networks, losses, image pool and the two translation models, on tiny sizes (32 px, ngf 8, one residual block)."""

from __future__ import annotations

import dataclasses
import io

import kornia.color
import pytest
import torch

from stainshift.errors import StainshiftError
from stainshift.losses import GANLoss
from stainshift.models import (
    ColorizationGAN,
    CycleGAN,
    ImagePool,
    build_model,
    model_options,
)
from stainshift.models.cut import CUT
from stainshift.models.kinds import Kind
from stainshift.models.registry import model_class, names, translator_from_checkpoint
from stainshift.nets import PatchDiscriminator, ResnetGenerator, UnetGenerator

TINY = {
    "cyclegan": {"ngf": 8, "n_blocks": 1, "ndf": 8, "crop_size": 32, "load_size": 36, "batch_size": 1},
    "colorization": {"ngf": 8, "num_downs": 5, "ndf": 8, "crop_size": 32, "load_size": 36, "batch_size": 2},
    "cut": {"ngf": 8, "n_blocks": 1, "ndf": 8, "crop_size": 32, "load_size": 36, "batch_size": 1,
            "nce_layers": (0, 4, 8, 10), "num_patches": 32, "mlp_nc": 16},
}


def tiny(name: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return build_model(name, "cpu", **{**TINY[name], **extra})


def batch(name: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """Smooth synthetic 'cells': a dark disc on a light background, different tints per domain."""
    gen = torch.Generator().manual_seed(seed)
    n = TINY[name]["batch_size"]
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = (((yy - 16) ** 2 + (xx - 16) ** 2) < 64).float()
    out = {}
    for key, tint in (("src", (0.5, 0.3, 0.6)), ("dst", (0.7, 0.4, 0.5))):
        base = 0.9 - disc * (0.9 - torch.tensor(tint).view(3, 1, 1))
        out[key] = (base + 0.03 * torch.randn(n, 3, 32, 32, generator=gen)).clamp(0, 1)
    return out


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- networks -------------------------------------------------------------------------------------------------------
def test_resnet_generator_shape_and_range():
    net = ResnetGenerator(3, 3, ngf=8, n_blocks=2)
    y = net(torch.randn(2, 3, 32, 40) * 3)
    assert y.shape == (2, 3, 32, 40)
    assert y.min() >= -1 and y.max() <= 1
    assert net.multiple == 4
    paper = ResnetGenerator(3, 3)  # ResNet-9, ngf 64: the reference generator's 11.378 M parameters
    assert sum(p.numel() for p in paper.parameters()) == 11_378_179


def test_unet_generator_shape_range_and_dropout():
    net = UnetGenerator(1, 2, num_downs=5, ngf=8)
    y = net(torch.randn(2, 1, 64, 32) * 3)
    assert y.shape == (2, 2, 64, 32)
    assert y.min() >= -1 and y.max() <= 1
    assert net.multiple == 32
    n_dropout = sum(isinstance(m, torch.nn.Dropout) for m in UnetGenerator(3, 3, num_downs=8, ngf=4).modules())
    assert n_dropout == 3  # pix2pix: dropout in the three decoder layers above the bottleneck
    assert not any(isinstance(m, torch.nn.Dropout) for m in UnetGenerator(1, 2, 5, 4, dropout=False).modules())


def test_patch_discriminator_is_70x70():
    assert PatchDiscriminator.receptive_field(3) == 70
    for norm in ("instance", "batch"):
        d = PatchDiscriminator(3, ndf=8, n_layers=3, norm=norm)
        assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)
    paper = PatchDiscriminator(3)
    assert sum(p.numel() for p in paper.parameters()) == 2_764_737


def test_gan_losses():
    pred = torch.tensor([[[[2.0, -1.0]]]])
    assert GANLoss("lsgan")(pred, True).item() == pytest.approx((1 + 4) / 2)
    assert GANLoss("lsgan")(pred, False).item() == pytest.approx((4 + 1) / 2)
    vanilla = torch.nn.functional.binary_cross_entropy_with_logits(pred, torch.ones_like(pred)).item()
    assert GANLoss("vanilla")(pred, True).item() == pytest.approx(vanilla)
    assert GANLoss("hinge")(pred, True).item() == pytest.approx((0 + 2) / 2)
    assert GANLoss("hinge")(pred, False).item() == pytest.approx((3 + 0) / 2)
    assert GANLoss("hinge")(pred, True, for_discriminator=False).item() == pytest.approx(-0.5)
    assert GANLoss("lsgan")([pred, pred], True).item() == pytest.approx(5.0)  # multi-scale: summed
    with pytest.raises(ValueError, match="valid"):
        GANLoss("wasserstein")


def test_image_pool_replays_history_and_round_trips():
    torch.manual_seed(0)
    pool = ImagePool(3)
    first = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 2)
    assert torch.equal(pool.query(first), first)  # filling: images pass through
    rng = torch.get_rng_state()
    copy = ImagePool(3)
    copy.load_state_dict(pool.state_dict())
    new = torch.full((20, 1, 2, 2), 9.0)
    out = pool.query(new)
    assert (out != 9).any() and (out == 9).any()  # some old images come back, some new pass through
    torch.set_rng_state(rng)
    assert torch.equal(copy.query(new), out)
    assert torch.equal(torch.stack(copy.images), torch.stack(pool.images))
    assert torch.equal(ImagePool(0).query(new), new)


# -- registry and presets -------------------------------------------------------------------------------------------
def test_registry_and_paper_presets():
    learned = {name: model_class(name) for name in names(Kind.LEARNED)}
    from stainshift.models.class_cyclegan import ClassCycleGAN
    from stainshift.models.distilled import Distilled
    from stainshift.models.mask_cyclegan import MaskCycleGAN
    from stainshift.models.pix2pix import Pix2Pix
    from stainshift.models.pix2pixhd import Pix2PixHD

    assert {"cyclegan": CycleGAN, "colorization": ColorizationGAN, "cut": CUT, "pix2pix": Pix2Pix,
            "pix2pixhd": Pix2PixHD, "maskcyclegan": MaskCycleGAN, "classcyclegan": ClassCycleGAN,
            "distilled": Distilled} == learned
    student = model_options("distilled", "paper")  # StainNet: 1x1 convs 3 -> 32 -> 32 -> 3, SGD 0.01, cosine
    assert (student.channels, student.layers, student.optimizer, student.lr, student.epochs, student.batch_size,
            student.crop_size) == (32, 3, "sgd", 0.01, 300, 10, 256)
    rare = model_options("classcyclegan", "paper")  # paper 003's block 3: the block 1 CycleGAN, 200 epochs
    assert (rare.ngf, rare.n_blocks, rare.epochs + rare.epochs_decay, rare.keep_epochs) == \
        (64, 9, 200, (10, 15, 20, 25, 200))
    x = model_options("pix2pix", "paper")  # pix2pix as papers 002 / 004 use it
    assert (x.num_downs, x.ngf, x.ndf, x.n_layers_d, x.discriminator, x.norm, x.gan_mode, x.lambda_L1) == \
        (8, 64, 64, 3, "patch", "batch", "vanilla", 100)
    hd = model_options("pix2pixhd", "paper")  # NVIDIA's defaults
    assert (hd.ngf, hd.n_downsample_global, hd.n_blocks_global, hd.n_blocks_local, hd.num_d, hd.n_layers_d,
            hd.gan_mode, hd.lambda_feat, hd.feat_num, hd.nef, hd.n_clusters) == \
        (64, 4, 9, 3, 2, 3, "lsgan", 10, 3, 16, 10)
    for cls in learned.values():
        assert {"paper", "cpu"} <= set(cls.presets())
    p = model_options("cyclegan", "paper")
    assert (p.ngf, p.n_blocks, p.ndf, p.n_layers_d, p.norm, p.gan_mode, p.pool_size) == \
        (64, 9, 64, 3, "instance", "lsgan", 50)
    assert (p.lambda_A, p.lambda_B, p.lambda_identity, p.lr, p.beta1) == (10, 10, 0.5, 2e-4, 0.5)
    assert (p.epochs, p.epochs_decay, p.load_size, p.crop_size, p.batch_size) == (100, 100, 286, 256, 1)
    assert p.keep_epochs == (10, 15, 20, 25, 200)
    c = model_options("colorization", "paper")
    assert (c.ngf, c.num_downs, c.ndf, c.norm, c.dropout, c.gan_mode, c.lambda_L1) == \
        (64, 8, 64, "batch", True, "vanilla", 100)
    assert (c.lr, c.beta1, c.epochs, c.epochs_decay, c.load_size, c.crop_size, c.batch_size) == \
        (2e-4, 0.5, 100, 100, 286, 256, 1)
    cut = model_options("cut", "paper")  # the reference's CUT mode
    assert (cut.lambda_gan, cut.lambda_nce, cut.nce_idt, cut.nce_layers, cut.num_patches, cut.nce_t, cut.mlp_nc) == \
        (1.0, 1.0, True, (0, 4, 8, 12, 16), 256, 0.07, 256)
    fast = model_options("cut", "fast-cpu")
    assert (fast.nce_idt, fast.lambda_nce, fast.flip_equivariance) == (False, 10.0, True)
    cpu = model_options("cyclegan")
    assert cpu.keep_epochs[:3] == (1, 2, 3) and cpu.crop_size < p.crop_size
    over = model_options("cyclegan", "cpu", epochs=3, keep_epochs=[3, 1], lr=1)
    assert over.epochs == 3 and over.keep_epochs == (1, 3) and over.lr == 1.0


@pytest.mark.parametrize("call, words", [
    (lambda: build_model("stargan"), ["stargan", "colorization", "cyclegan"]),
    (lambda: model_options("cyclegan", "gpu"), ["gpu", "cpu", "paper"]),
    (lambda: model_options("cyclegan", "cpu", ngff=3), ["ngff", "ngf", "n_blocks"]),
    (lambda: model_options("colorization", "cpu", crop_size=100), ["crop_size", "32"]),
    (lambda: model_options("cyclegan", "cpu", gan_mode="wgan"), ["wgan", "lsgan"]),
])
def test_registry_errors_are_one_line(call, words):
    with pytest.raises(StainshiftError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_same_seed_same_weights():
    a, b = tiny("cyclegan", seed=3), tiny("cyclegan", seed=3)
    assert all(torch.equal(x, y) for x, y in zip(weights(a).values(), weights(b).values(), strict=True))


# -- training -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cyclegan", "colorization", "cut"])
def test_train_steps_change_weights_and_return_finite_losses(name):
    model = tiny(name)
    before = weights(model)
    for _ in range(2):
        losses = model.train_step(batch(name))
    expected = {"cyclegan": {"G_gan", "G_cycle", "G_idt", "G", "D_A", "D_B"},
                "colorization": {"G_gan", "G_L1", "G", "D_real", "D_fake", "D"},
                "cut": {"G_gan", "NCE", "NCE_Y", "G", "D"}}[name]
    assert set(losses) == expected
    assert all(isinstance(v, float) and torch.isfinite(torch.tensor(v)) for v in losses.values())
    after = weights(model)
    for net, module in model.networks().items():
        keys = [f"{net}.{k}" for k in module.state_dict()]
        assert any(not torch.equal(before[k], after[k]) for k in keys), f"{net} did not change"


def test_colorization_ignores_the_source():
    a, b = tiny("colorization"), tiny("colorization")
    data = batch("colorization")
    torch.manual_seed(5)
    a.train_step(data)
    torch.manual_seed(5)
    b.train_step({"src": torch.zeros_like(data["src"]), "dst": data["dst"]})
    assert all(torch.equal(x, y) for x, y in zip(weights(a).values(), weights(b).values(), strict=True))


def test_amp_bfloat16_step_runs_on_cpu():
    model = tiny("cyclegan")
    model.amp_dtype = torch.bfloat16
    losses = model.train_step(batch("cyclegan"))
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values())


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
def test_learning_rate_schedule_constant_then_linear():
    model = tiny("cyclegan", epochs=2, epochs_decay=3)
    lrs = []
    for _ in range(5):
        lrs.append(model.learning_rates()["G"])
        model.end_epoch()
    lrs.append(model.learning_rates()["G"])
    assert lrs == pytest.approx([2e-4, 2e-4, 1.5e-4, 1e-4, 0.5e-4, 0.0])


def test_grad_sync_called_for_each_optimizer():
    model = tiny("cyclegan")
    seen: list[int] = []
    model.grad_sync = lambda params: seen.append(len(list(params)))
    model.train_step(batch("cyclegan"))
    n_g = len(list(model.G_A.parameters())) * 2
    n_d = len(list(model.D_A.parameters())) * 2
    assert seen == [n_g, n_d]


@pytest.mark.parametrize("name", ["cyclegan", "colorization", "cut"])
def test_training_state_round_trip_is_exact(name):
    data = [batch(name, seed) for seed in (1, 2, 3)]
    trained = tiny(name)
    for b in data[:2]:
        trained.train_step(b)
    trained.end_epoch()
    buffer = io.BytesIO()
    torch.save(trained.training_state(), buffer)
    buffer.seek(0)
    resumed = tiny(name, seed=99)  # different initial weights: everything must come from the state
    resumed.load_training_state(torch.load(buffer, weights_only=False))
    for model in (trained, resumed):
        torch.manual_seed(7)  # pool choices and dropout come from torch's global RNG (the loop restores it)
        model.train_step(data[2])
    a, b = weights(trained), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert trained.learning_rates() == resumed.learning_rates()


def test_training_state_errors_are_one_line():
    state = tiny("cyclegan").training_state()
    with pytest.raises(StainshiftError, match="cyclegan") as info:
        tiny("colorization").load_training_state(state)
    assert "\n" not in str(info.value)
    with pytest.raises(StainshiftError) as info:
        tiny("cyclegan", ngf=4).load_training_state(state)
    assert "\n" not in str(info.value)


# -- translators ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cyclegan", "colorization", "cut"])
def test_translator_any_size(name):
    translator = tiny(name).translator().eval()
    for h, w in ((37, 53), (32, 32), (5, 3)):
        with torch.no_grad():
            y = translator(torch.rand(2, 3, h, w))
        assert y.shape == (2, 3, h, w)
        assert y.min() >= 0 and y.max() <= 1


def test_translator_shares_weights_with_model():
    model = tiny("cyclegan")
    translator = model.translator().eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        before = translator(x)
        model.train_step(batch("cyclegan"))
        translator.eval()
        assert not torch.equal(before, translator(x))


def test_colorization_keeps_the_input_lightness():
    model = tiny("colorization")
    model.train_step(batch("colorization"))
    translator = model.translator().eval()
    x = batch("colorization", seed=4)["src"][:, :, :29, :31]
    with torch.no_grad():
        y = translator(x)
    L_in, L_out = kornia.color.rgb_to_lab(x)[:, 0], kornia.color.rgb_to_lab(y)[:, 0]
    assert (L_in - L_out).abs().mean() < 0.5  # L in [0, 100]; only out-of-gamut clipping may move it
    assert (L_in - L_out).abs().max() < 5


@pytest.mark.parametrize("name", ["cyclegan", "colorization", "cut"])
def test_translator_checkpoint_round_trip(name):
    model = tiny(name)
    translator = model.translator()
    with torch.no_grad():
        translator.train()(torch.rand(2, 3, 32, 32))  # moves batch-norm running statistics off their defaults
    translator.eval()
    ckpt = translator.checkpoint()
    assert set(ckpt) == {"model", "options", "translator", "format"}
    assert ckpt["model"] == name and ckpt["format"] == 1
    assert ckpt["options"] == dataclasses.asdict(model.options)
    buffer = io.BytesIO()
    torch.save({**ckpt, "epoch": 3}, buffer)  # extra keys (the loop adds epoch, run, src, dst) are ignored
    buffer.seek(0)
    loaded = translator_from_checkpoint(torch.load(buffer, weights_only=False))
    assert not loaded.training
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        assert torch.equal(loaded(x), translator(x))


@pytest.mark.parametrize("mutate, words", [
    (lambda c: c.pop("translator"), ["translator"]),
    (lambda c: c.update(model="stargan"), ["stargan", "cyclegan"]),
    (lambda c: c.update(format=7), ["format"]),
    (lambda c: c["options"].update(ngf=16), ["weights"]),
    (lambda c: c["options"].update(bogus=1), ["bogus"]),
])
def test_translator_checkpoint_errors_are_one_line(mutate, words):
    ckpt = tiny("cyclegan").translator().checkpoint()
    mutate(ckpt)
    with pytest.raises(StainshiftError) as info:
        translator_from_checkpoint(ckpt)
    assert "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(StainshiftError):
        translator_from_checkpoint("not a dict")  # type: ignore[arg-type]


# -- stable-training options ----------------------------------------------------------------------------------------
def test_weight_average_is_the_exponential_average_of_the_steps():
    from stainshift.nets.averaging import WeightAverage

    net = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    avg = WeightAverage(net, decay=0.5)
    expected = torch.zeros(1, 2)
    for step, value in enumerate((1.0, 2.0, 3.0, 4.0)):
        net.weight.data.fill_(value)
        avg.update(net)
        decay = min(0.5, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * value
    assert torch.allclose(avg.average.weight, expected)
    assert int(avg.updates) == 4
    assert not any(p.requires_grad for p in avg.parameters())


def test_cyclegan_with_weight_average_translates_with_the_average_and_resumes_exactly():
    data = [batch("cyclegan", seed) for seed in (1, 2, 3)]
    trained = tiny("cyclegan", ema_decay=0.9)
    for b in data[:2]:
        trained.train_step(b)
    translator = trained.translator()
    assert translator.generator is trained.G_A_ema.average
    pairs = zip(trained.G_A.parameters(), translator.generator.parameters(), strict=True)
    assert not all(torch.equal(a, b) for a, b in pairs)
    buffer = io.BytesIO()
    torch.save(trained.training_state(), buffer)
    buffer.seek(0)
    resumed = tiny("cyclegan", seed=99, ema_decay=0.9)
    resumed.load_training_state(torch.load(buffer, weights_only=False))
    for model in (trained, resumed):
        torch.manual_seed(7)
        model.train_step(data[2])
    a, b = weights(trained), weights(resumed)
    assert any(k.startswith("G_A_ema.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the epoch file holds a plain generator: it loads without the average's bookkeeping
    rebuilt = type(trained).new_translator(trained.options)
    rebuilt.load_state_dict(trained.translator().checkpoint()["translator"])


def test_resize_convolution_generator_has_no_transposed_convolutions_and_keeps_the_size():
    net = ResnetGenerator(3, 3, ngf=8, n_blocks=1, upsample="resize")
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    assert net(torch.randn(1, 3, 32, 40)).shape == (1, 3, 32, 40)
    with pytest.raises(StainshiftError, match="upsample"):
        tiny("cyclegan", upsample="pixelshuffle")
    with pytest.raises(StainshiftError, match="ema_decay"):
        tiny("cyclegan", ema_decay=1.0)


# -- CUT ------------------------------------------------------------------------------------------------------------
def test_patch_nce_rewards_outputs_whose_patches_match_the_inputs_at_the_same_place():
    from stainshift.models.cut import patch_nce

    torch.manual_seed(0)
    key = torch.nn.functional.normalize(torch.randn(2, 16, 8), dim=-1)
    same = patch_nce(key.clone(), key, 0.07)
    shuffled = patch_nce(key[:, torch.randperm(16)], key, 0.07)
    assert same < 0.1 < shuffled  # the positive is the same position's key


def test_cut_has_one_generator_and_fastcut_skips_the_identity_term():
    model = tiny("cut")
    assert set(model.networks()) == {"G", "D", "F"}
    assert len(model.F.mlps) == 4
    fast = tiny("cut", nce_idt=False, lambda_nce=10.0, flip_equivariance=True)
    for _ in range(3):  # mirrored and plain steps
        assert fast.train_step(batch("cut"))["NCE_Y"] == 0.0
    with pytest.raises(StainshiftError, match="nce_layers"):
        tiny("cut", nce_layers=(0, 30))


@pytest.mark.parametrize("name", ["cyclegan", "cut"])
def test_init_from_an_epoch_file_with_a_weight_average_loads_the_live_generator(name):
    source = tiny(name)
    source.train_step(batch(name))
    ckpt = source.translator().checkpoint()
    target = tiny(name, seed=5, ema_decay=0.9)
    assert target.load_initial(ckpt) == ["translator"]
    live = target.G_A if name == "cyclegan" else target.G
    average = target.G_A_ema if name == "cyclegan" else target.G_ema
    want = source.translator().generator.state_dict()
    assert all(torch.equal(want[k], v) for k, v in live.state_dict().items())
    assert all(torch.equal(want[k], v) for k, v in average.average.state_dict().items())
    assert int(average.updates) == 0
