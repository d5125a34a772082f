"""pix2pixHD from masks: discriminator pyramid and feature matching, the edge channel (with instance edges where cells
touch), per-region style clusters drawn per cell, the local enhancer started from a global run, the perceptual loss
from local files, and that training learns a pair."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from stainshift.errors import StainshiftError
from stainshift.models.pix2pixhd import Pix2PixHD, StyleBank, feature_matching_loss
from stainshift.models.registry import model_options
from stainshift.nets.pix2pixhd_nets import MultiscaleDiscriminator, instance_means, paint_instances
from stainshift.synth.encoding import encode, regions
from stainshift.train.checkpoints import file_hash

BACKGROUND, CYTOPLASM, NUCLEUS = 0, 1, 2


def _tiny(**overrides) -> Pix2PixHD:
    torch.manual_seed(0)
    return Pix2PixHD(model_options("pix2pixhd", "tiny", **overrides))


def _cell(tint: float = 0.0, size: int = 32, nucleus: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """A 3 x size x size image in [0, 1] and its 1 x size x size mask (0 / 128 / 255): a square cell, its nucleus
    ``nucleus`` pixels wide (0: none), darker inside; ``tint`` shifts the cell's colour."""
    mask = torch.zeros(1, size, size)
    a, b = size // 4, 3 * size // 4
    mask[:, a:b, a:b] = 128
    if nucleus:
        c = size // 2 - nucleus // 2
        mask[:, c:c + nucleus, c:c + nucleus] = 255
    colours = torch.tensor([[0.92, 0.90, 0.88], [0.80 - tint, 0.55, 0.75 + tint / 2], [0.35, 0.20 + tint, 0.55]])
    image = colours[regions(mask[None])[0]].permute(2, 0, 1)
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(int(tint * 100)))
    return (image + 0.02 * noise).clamp(0, 1), mask


def _batch(*cells: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"image": torch.stack([c[0] for c in cells]), "mask": torch.stack([c[1] for c in cells])}


# -- discriminators and losses --------------------------------------------------------------------------------------
def test_multiscale_discriminator_returns_num_d_lists_of_n_layers_plus_2_features():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(7, ndf=4, n_layers=3, num_d=3)
    x = torch.rand(2, 7, 64, 64)
    out = d(x)
    assert len(out) == 3 and all(len(scale) == 3 + 2 for scale in out)
    assert all(scale[-1].shape[1] == 1 for scale in out)  # the patch logits come last
    assert [scale[0].shape[1] for scale in out] == [4, 4, 4] and out[0][3].shape[1] == 4 * 8  # channels capped at 8ndf
    # scale i sees the input average-pooled i times (3x3, stride 2, padding not counted)
    pooled = F.avg_pool2d(F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), 3, 2, 1, count_include_pad=False)
    assert torch.allclose(d.scales[2](pooled)[-1], out[2][-1])
    assert out[1][0].shape[-1] < out[0][0].shape[-1]


def test_feature_matching_and_gan_loss_match_the_reference_formula_by_hand():
    model = _tiny(num_d=2, n_layers_d=2, lambda_feat=10.0)
    image, mask = _cell(0.1)
    labels = mask[None]
    condition = encode(labels, "onehot", True)
    real = image[None] * 2 - 1
    fake = torch.rand_like(real) * 2 - 1
    with torch.no_grad():
        pred_fake = model.D(torch.cat([condition, fake], 1))
        pred_real = model.D(torch.cat([condition, real], 1))
        # 1 / num_d * 4 / (n_layers_d + 1) * L1 over every layer but the logits, times lambda_feat
        by_hand = sum(0.5 * (4 / 3) * (f - r).abs().mean() * 10.0
                      for fi, ri in zip(pred_fake, pred_real, strict=True)
                      for f, r in zip(fi[:-1], ri[:-1], strict=True))
        gan_by_hand = sum(((fi[-1] - 1) ** 2).mean() for fi in pred_fake)  # LSGAN, generator side
        losses = model.generator_losses(condition, fake, real)
    assert len(pred_fake[0]) == 2 + 2
    assert losses["G_feat"].item() == pytest.approx(float(by_hand), rel=1e-5)
    assert losses["G_gan"].item() == pytest.approx(float(gan_by_hand), rel=1e-5)
    assert "G_vgg" not in losses  # no perceptual file, no perceptual term
    assert feature_matching_loss(pred_real, pred_real, 2).item() == 0.0


def test_instance_average_pooling_paints_each_region_with_its_mean():
    features = torch.arange(2 * 2 * 4 * 4, dtype=torch.float32).view(2, 2, 4, 4)
    index = torch.zeros(2, 4, 4, dtype=torch.long)
    index[0, :2] = 1
    index[1, 0, 0] = 2  # one pixel
    means, counts = instance_means(features, index, 3)
    assert counts.tolist() == [[8, 8, 0], [15, 0, 1]]
    assert torch.allclose(means[0, 1], features[0][:, :2].mean((1, 2)))
    assert torch.allclose(means[1, 2], features[1, :, 0, 0]) and means[1, 1].abs().sum() == 0
    painted = paint_instances(means, index)
    assert torch.allclose(painted[0, :, 3, 3], means[0, 0]) and torch.allclose(painted[1, :, 0, 0], means[1, 2])


# -- the edge channel -----------------------------------------------------------------------------------------------
def test_the_region_edge_channel_is_a_generator_input_and_changes_the_image():
    with_edges, without = _tiny(), _tiny(edges=False)
    feat = with_edges.options.feat_num
    assert with_edges.G.features[1].in_channels == 3 + 1 + feat  # one-hot regions, edges, style features
    assert without.G.features[1].in_channels == 3 + feat
    _, mask = _cell()
    x = encode(mask[None], "onehot", edges=True)
    edge = x[0, 3]
    assert edge.dtype == torch.float32 and set(edge.unique().tolist()) == {-1.0, 1.0}
    assert edge[8, 16] == 1 and edge[7, 16] == 1 and edge[2, 2] == -1  # both sides of the cell's border
    styles = torch.zeros(1, feat, 32, 32)
    no_edge = x.clone()
    no_edge[:, 3] = -1
    with torch.no_grad():
        a = with_edges.G(torch.cat([x, styles], 1))
        b = with_edges.G(torch.cat([no_edge, styles], 1))
    assert (a - b).abs().max() > 1e-4


# -- styles ---------------------------------------------------------------------------------------------------------
def test_style_bank_clusters_each_region_largest_first_and_keeps_a_single_sample():
    gen = torch.Generator().manual_seed(0)
    blobs = [torch.tensor([0.5, 0.0, 0.0]) + 0.01 * torch.randn(6, 3, generator=gen),
             torch.tensor([-0.5, 0.0, 0.0]) + 0.01 * torch.randn(3, 3, generator=gen)]
    one = torch.tensor([[0.1, 0.2, 0.3]])
    bank = StyleBank(3, 4, 3)
    bank.fit([[blobs[0][:3], blobs[0][3:], blobs[1]], [], [one]])
    assert bank.counts.tolist() == [4, 0, 1]  # 9 distinct samples -> 4 clusters; none; a single sample -> 1
    assert bank.n_styles == 1
    bank = StyleBank(3, 2, 3)
    bank.fit([[torch.cat(blobs)], [], [one]])
    assert torch.allclose(bank.centres[0, 0], blobs[0].mean(0), atol=1e-6)  # the larger cluster first
    assert torch.allclose(bank.centres[0, 1], blobs[1].mean(0), atol=1e-6)
    assert torch.equal(bank.centres[2, 0], one[0]) and bank.centres[2, 1].abs().sum() == 0
    assert bank.centres[1].abs().sum() == 0
    again = StyleBank(3, 2, 3)
    again.fit([[torch.cat(blobs)], [], [one]])
    assert torch.equal(again.centres, bank.centres)  # deterministic
    picked = bank.vectors(2, 0)
    assert torch.equal(picked[:, 1], torch.zeros(2, 3))  # a region without clusters gets zero features


def test_an_epoch_ends_with_style_clusters_for_every_region_even_a_few_pixel_nucleus():
    model = _tiny(n_clusters=3)
    assert model.styles.n_styles == 0
    model.train_step(_batch(_cell(0.0, nucleus=0), _cell(0.1, nucleus=0)))
    model.train_step(_batch(_cell(0.2, nucleus=2), _cell(0.3, nucleus=0)))  # the only nucleus: 2 x 2 pixels
    model.end_epoch()
    counts = model.styles.counts.tolist()
    assert counts[BACKGROUND] == 3 and counts[CYTOPLASM] == 3  # 4 samples each, at most n_clusters
    assert counts[NUCLEUS] == 1  # one image had a nucleus, and its 4 pixels were enough
    assert model._style_crops == []  # cleared: nothing carried over the epoch boundary
    assert model.styles.centres[NUCLEUS, 0].abs().sum() > 0 and model.styles.centres[NUCLEUS, 1:].abs().sum() == 0
    saved = model.translator().checkpoint()["translator"]
    assert torch.equal(saved["styles.counts"], model.styles.counts)  # every epoch file carries its clusters


def test_style_clusters_come_from_the_epochs_final_encoder():
    """The reference clusters the training set's features under the trained encoder: here the epoch's crops are
    encoded again when the epoch ends, not taken from the encoder as it was at each step."""
    model = _tiny(n_clusters=8)  # more clusters than samples: every sample is its own centre
    batches = [_batch(_cell(0.0), _cell(0.2)), _batch(_cell(0.1), _cell(0.3))]
    images = torch.cat([b["image"] for b in batches])
    region = regions(torch.cat([b["mask"] for b in batches]))
    with torch.no_grad():
        first_encoder, _ = model.E.instance_features(images * 2 - 1, region, 3)
    for b in batches:
        model.train_step(b)
    with torch.no_grad():  # the crops as kept (8-bit) under the encoder after the last step
        final_encoder, _ = model.E.instance_features((images * 255).round() / 255 * 2 - 1, region, 3)
    model.end_epoch()
    for r in (BACKGROUND, CYTOPLASM, NUCLEUS):
        centres = model.styles.centres[r, :model.styles.counts[r]]
        assert len(centres) == 4
        assert all(torch.isclose(centres, f, atol=1e-5).all(1).any() for f in final_encoder[:, r])
        assert not all(torch.isclose(centres, f, atol=1e-4).all(1).any() for f in first_encoder[:, r])


def _styled_translator() -> Pix2PixHD:
    model = _tiny(n_clusters=3)
    for tints in ((0.0, 0.15), (0.3, 0.45), (0.05, 0.35)):
        model.train_step(_batch(*(_cell(t) for t in tints)))
    model.end_epoch()
    return model


def test_a_fixed_style_is_deterministic_different_styles_differ_and_sampled_styles_follow_the_seed():
    model = _styled_translator()
    translator = model.translator().eval()
    assert translator.n_styles == 3
    _, mask = _cell()
    x = mask[None]
    with torch.no_grad():
        translator.style = 0
        first = translator(x)
        torch.manual_seed(123)
        again = translator(x)
        translator.style = 2
        other = translator(x)
        translator.style = None
        sampled = []
        for seed in (1, 1, 2, 3, 4):
            torch.manual_seed(seed)
            sampled.append(translator(x))
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-4
    assert torch.equal(sampled[0], sampled[1])
    assert any(not torch.equal(sampled[0], s) for s in sampled[2:])
    translator.style = 3
    with pytest.raises(StainshiftError, match="styles 0 to 2"):
        translator(x)


def _two_touching_cells() -> tuple[torch.Tensor, torch.Tensor]:
    """A 1 x 1 x 32 x 48 label map of two square cells side by side (cytoplasm touching, one region) and their ids."""
    labels = torch.zeros(1, 1, 32, 48)
    ids = torch.zeros(1, 32, 48, dtype=torch.long)
    for k, (a, b) in enumerate(((4, 24), (24, 44)), start=1):
        labels[..., 6:26, a:b] = 128
        labels[..., 12:20, a + 6:a + 14] = 255
        ids[:, 6:26, a:b] = 200 + k  # instance ids as `synth masks` writes them (class * stride + cell)
    return labels, ids


def test_an_instance_map_draws_the_border_between_touching_cells_and_styles_each_cell():
    labels, ids = _two_touching_cells()
    region_only = encode(labels, "onehot", edges=True)[0, 3]
    with_ids = encode(labels, "onehot", edges=True, instances=ids)[0, 3]
    assert region_only[16, 23] == -1 and region_only[16, 24] == -1  # one cytoplasm: no border between the cells
    assert with_ids[16, 23] == 1 and with_ids[16, 24] == 1  # the instance edge on both sides of where they touch
    assert torch.equal(with_ids.clamp(min=0) * (region_only > 0), region_only.clamp(min=0))  # a superset
    single_labels, single_ids = labels[..., :24], (ids[..., :24] > 0).long()  # one cell: nothing new
    single = encode(single_labels, "onehot", True, instances=single_ids)
    assert torch.equal(single, encode(single_labels, "onehot", True))

    translator = _styled_translator().translator().eval()
    with torch.no_grad():
        translator.style = 1
        fixed = translator.translate_instances(labels, ids)
        assert fixed.shape == (1, 3, 32, 48) and (fixed - translator(labels)).abs().max() > 1e-4  # the edge counts
        _, cell = _cell()
        one = translator.translate_instances(cell[None], (cell > 0).long())
        assert torch.allclose(one, translator(cell[None]), atol=1e-6)  # a single cell: what the model learnt from
        red = (cell == 0).long() * 101  # ids on background pixels (red cells) are not cells the label map draws
        assert torch.allclose(translator.translate_instances(cell[None], (cell > 0).long() + red), one, atol=1e-6)
        translator.style = None
        torch.manual_seed(0)
        again = translator.translate_instances(labels, ids)
        torch.manual_seed(0)
        assert torch.equal(again, translator.translate_instances(labels, ids))  # sampled styles follow the seed
    # every region of every cell draws its own cluster: two cytoplasms differ for some draw, a fixed style is shared
    bank = translator.styles
    groups = torch.tensor([BACKGROUND, CYTOPLASM, NUCLEUS, CYTOPLASM, NUCLEUS])
    draws = []
    for seed in range(8):
        torch.manual_seed(seed)
        draws.append(bank.group_vectors(groups, None))
    assert any(not torch.equal(v[1], v[3]) for v in draws) and any(not torch.equal(v[2], v[4]) for v in draws)
    assert all(any(torch.equal(v[1], c) for c in bank.centres[CYTOPLASM]) for v in draws)  # always a real centre
    fixed_vectors = bank.group_vectors(groups, 2)
    assert torch.equal(fixed_vectors[1], bank.centres[CYTOPLASM, 2]) and torch.equal(fixed_vectors[1], fixed_vectors[3])
    with pytest.raises(StainshiftError, match="id map"):
        translator.translate_instances(labels, ids[0])


def test_style_from_a_real_image_and_zero_styles_before_any_clustering():
    model = _tiny()
    translator = model.translator().eval()
    image, mask = _cell(0.2, size=30)  # not a multiple of the networks' strides
    with torch.no_grad():
        untrained = translator(mask[None])
        zeros = translator.generate(mask[None], torch.zeros(1, model.options.feat_num, 30, 30))
        styles = translator.style_from(image[None], mask[None])
        styled = translator.generate(mask[None], styles)
    assert torch.equal(untrained, zeros)  # no clusters yet: zero style features
    assert styles.shape == (1, model.options.feat_num, 30, 30)
    region = regions(mask[None])[0]
    for r in (BACKGROUND, CYTOPLASM, NUCLEUS):  # one vector per region
        values = styles[0][:, region == r]
        assert torch.allclose(values, values[:, :1].expand_as(values))
    assert styled.shape == (1, 3, 30, 30) and styled.min() >= 0 and styled.max() <= 1
    assert (styled - zeros).abs().max() > 1e-5


# -- local enhancer ---------------------------------------------------------------------------------------------------
def test_a_local_enhancer_starts_from_a_global_run_and_first_trains_only_its_own_layers():
    glob = _tiny(ngf=8)
    glob.train_step(_batch(_cell(0.0), _cell(0.2)))
    glob.end_epoch()
    local = _tiny(ngf=8, n_local_enhancers=1, niter_fix_global=1)
    loaded = local.load_initial(glob.training_state())
    assert loaded == ["G.global_generator", "D", "E", "styles"]
    inner = local.G.global_generator.state_dict()
    assert all(torch.equal(v, inner[k]) for k, v in glob.G.state_dict().items())
    assert torch.equal(local.styles.centres, glob.styles.centres)

    from_epoch = _tiny(ngf=8, n_local_enhancers=1, num_d=1)  # another pyramid: its discriminators start fresh
    assert from_epoch.load_initial(glob.translator().checkpoint()) == ["G.global_generator", "E", "styles"]
    assert all(torch.equal(v, from_epoch.G.global_generator.state_dict()[k]) for k, v in glob.G.state_dict().items())
    with pytest.raises(StainshiftError, match=r"does not fit this pix2pixhd's G\.global_generator"):
        _tiny(ngf=16, n_local_enhancers=1).load_initial(glob.training_state())

    def snapshot(module):
        return {k: v.clone() for k, v in module.state_dict().items()}

    before_global, before_local = snapshot(local.G.global_generator), snapshot(local.G.down)
    local.train_step(_batch(_cell(0.1), _cell(0.3)))  # epoch 1 of niter_fix_global = 1
    assert all(torch.equal(v, local.G.global_generator.state_dict()[k]) for k, v in before_global.items())
    assert any(not torch.equal(v, local.G.down.state_dict()[k]) for k, v in before_local.items())
    assert all(p.requires_grad for p in local.G.parameters())  # restored for the next step
    local.end_epoch()
    local.train_step(_batch(_cell(0.1), _cell(0.3)))  # epoch 2: everything trains
    assert any(not torch.equal(v, local.G.global_generator.state_dict()[k]) for k, v in before_global.items())
    with torch.no_grad():
        y = local.translator().eval()(_cell(size=40)[1][None])
    assert y.shape == (1, 3, 40, 40)


# -- perceptual loss ------------------------------------------------------------------------------------------------
def test_perceptual_loss_from_a_stainshift_classifier_file(tmp_path):
    from stainshift.classify.models import build_classifier, save_classifier

    torch.manual_seed(0)
    clf = build_classifier("resnet18", 2, "batch", None, ["a", "b"], 32)
    path = save_classifier(clf, tmp_path / "clf" / "model.pt")
    model = _tiny(perceptual=path)  # a Path is stored as a string
    assert model.options.perceptual == str(path) and model.options.perceptual_hash == file_hash(path)
    stats = model.perceptual.stages.classifier.net.bn1.running_mean.clone()
    weights = model.perceptual.stages.classifier.net.conv1.weight.clone()
    losses = model.train_step(_batch(_cell(0.0), _cell(0.2)))
    assert losses["G_vgg"] > 0 and torch.isfinite(torch.tensor(losses["G_vgg"]))
    assert not model.perceptual.training  # model.train() leaves the loss network in eval mode
    assert torch.equal(model.perceptual.stages.classifier.net.bn1.running_mean, stats)
    assert torch.equal(model.perceptual.stages.classifier.net.conv1.weight, weights)
    assert "perceptual" not in model.networks()
    assert Pix2PixHD(model.options).perceptual is not None  # resuming with the recorded hash

    path.write_bytes(path.read_bytes() + b"changed")
    with pytest.raises(StainshiftError, match="changed since the run started"):
        Pix2PixHD(model.options)
    missing = tmp_path / "nowhere" / "vgg19.pth"
    with pytest.raises(StainshiftError, match=re.escape(str(missing)) + ".*not found"):
        _tiny(perceptual=str(missing))


def test_perceptual_loss_from_a_vgg19_state_dict_and_a_wrong_file(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])  # vgg19(weights=None).features, without the 120M-parameter classifier
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg19.pth")
    model = _tiny(perceptual=str(tmp_path / "vgg19.pth"))
    assert model.perceptual.source == "vgg19"
    assert torch.equal(model.perceptual.stages.slices[4][-2].weight, features[28].weight)  # conv5_1, before relu5_1
    assert model.train_step(_batch(_cell(0.0), _cell(0.2)))["G_vgg"] > 0
    torch.save({"conv.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(StainshiftError, match=r"other\.pth: not VGG19 weights"):
        _tiny(perceptual=str(tmp_path / "other.pth"))


# -- options and learning -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "expected"), [
    ({"n_local_enhancers": 2}, "n_local_enhancers must be 0 or 1"),
    ({"niter_fix_global": 3}, "niter_fix_global only applies to a local enhancer"),
    ({"crop_size": 30, "load_size": 36}, "crop_size 30 must be a multiple of 4"),
    ({"mask_input": "rgb"}, "mask_input 'rgb' is not one of"),
])
def test_inconsistent_options_are_one_line_errors(overrides, expected):
    with pytest.raises(StainshiftError, match=expected):
        model_options("pix2pixhd", "tiny", **overrides)


def test_a_few_steps_on_one_pair_bring_the_image_closer():
    model = _tiny(use_encoder=False)  # the translator paints with cluster styles: compare without them
    image, mask = _cell(0.1)
    batch = _batch((image, mask))
    translator = model.translator()

    def l1() -> float:
        with torch.no_grad():
            return (translator.eval()(mask[None]) - image[None]).abs().mean().item()

    before = l1()
    for _ in range(30):
        model.train_step(batch)
    assert l1() < 0.5 * before  # measured: 0.43 -> 0.07
