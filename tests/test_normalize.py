"""Classical normalizers: numpy references, simulated ground truth, degenerate inputs, state and factory."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from stainshift.data.simulate import render_cells
from stainshift.errors import StainshiftError
from stainshift.normalize import (
    NORMALIZERS,
    ROMANOWSKY_STAIN_VECTORS,
    DegenerateImageWarning,
    HistogramNormalizer,
    MacenkoNormalizer,
    Normalizer,
    ReinhardNormalizer,
    build,
    normalize_images,
)
from stainshift.normalize.macenko import masked_percentile

# ---------------------------------------------------------------------------------------------------------------
# numpy references (float64), written from the method descriptions; sRGB <-> L*a*b* follows kornia's formulas

_RGB2XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
_XYZ2RGB = np.array([[3.2404813432005266, -1.5371515162713185, -0.4985363261688878],
                     [-0.9692549499965682, 1.8759900014898907, 0.0415559265582928],
                     [0.0556466391351772, -0.2040413383665112, 1.0573110696453443]])
_WHITE = np.array([0.95047, 1.0, 1.08883])


def np_rgb_to_lab(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) L*a*b* float64."""
    rgb = image.astype(np.float64) / 255.0
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = lin @ _RGB2XYZ.T / _WHITE
    f = np.where(xyz > 0.008856, np.cbrt(np.maximum(xyz, 0.008856)), 7.787 * xyz + 4.0 / 29.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def np_lab_to_uint8(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([lab[..., 1] / 500.0 + fy, fy, np.maximum(fy - lab[..., 2] / 200.0, 0.0)], -1)
    xyz = np.where(f > 0.2068966, f**3, (f - 4.0 / 29.0) / 7.787) * _WHITE
    lin = xyz @ _XYZ2RGB.T
    rgb = np.where(lin > 0.0031308, 1.055 * np.maximum(lin, 0.0031308) ** (1 / 2.4) - 0.055, 12.92 * lin)
    return np.clip(np.rint(np.clip(rgb, 0, 1) * 255.0), 0, 255).astype(np.uint8)


def np_reinhard(target: list[np.ndarray], sources: list[np.ndarray], min_std: float = 0.5) -> list[np.ndarray]:
    labs = [np_rgb_to_lab(t).reshape(-1, 3) for t in target]
    mean_t = np.mean([lab.mean(0) for lab in labs], 0)  # average of per-image statistics
    std_t = np.mean([lab.std(0) for lab in labs], 0)
    out = []
    for s in sources:
        lab = np_rgb_to_lab(s)
        mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0)
        gain = np.where(std < min_std, 1.0, std_t / np.maximum(std, 1e-12))
        out.append(np_lab_to_uint8((lab - mean) * gain + mean_t))
    return out


def np_macenko_od(image: np.ndarray, beta: float = 0.15, pct: float = 99.0):
    x = image.reshape(-1, 3).T.astype(np.float64)  # (3, N) on 0..255
    sample = x[:, :: max(1, x.shape[1] // 16384)]  # I0 from a regular subsample of at least 16384 pixels
    i0 = np.maximum(np.percentile(sample / 255.0, pct, axis=1) * 255.0, 1.0)
    od = np.log(i0)[:, None] - np.log1p(x)
    return od, (od >= beta).all(0), i0


def np_stain_vectors(od: np.ndarray, order_by: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Two unit stain vectors (rows) from stained OD pixels (3, n), ordered to pair with ``order_by``."""
    _, vecs = np.linalg.eigh(np.cov(od))
    plane = vecs[:, 1:]
    proj = plane.T @ od
    phi = np.arctan2(proj[1], proj[0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v = (plane @ np.array([[np.cos(lo), np.cos(hi)], [np.sin(lo), np.sin(hi)]])).T
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    if (v[0] - v[1]) @ (order_by[0] - order_by[1]) < 0:
        v = v[::-1]
    return v


def np_macenko(target: list[np.ndarray], sources: list[np.ndarray], min_pixels: int = 100) -> list[np.ndarray]:
    refs = np.array(ROMANOWSKY_STAIN_VECTORS, np.float64)
    refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    parts = [np_macenko_od(t) for t in target]
    pooled = np.concatenate([od[:, m] for od, m, _ in parts], 1)  # fit: pool the stained pixels
    v_t = np_stain_vectors(pooled, refs)
    tops = [np.percentile((np.linalg.pinv(v_t.T) @ od)[:, m], 99, axis=1) for od, m, _ in parts
            if m.sum() >= min_pixels]
    top_t, i0_t = np.mean(tops, 0), np.mean([i0 for _, _, i0 in parts], 0)
    out = []
    for s in sources:
        od, m, _ = np_macenko_od(s)
        v = np_stain_vectors(od[:, m], v_t)
        c = np.linalg.pinv(v.T) @ od
        top = np.percentile(c[:, m], 99, axis=1)
        rgb = i0_t[:, None] * np.exp(-(v_t.T @ (c * (top_t / top)[:, None]))) - 1.0
        out.append(np.clip(np.rint(np.clip(rgb / 255.0, 0, 1) * 255.0), 0, 255).T.reshape(s.shape).astype(np.uint8))
    return out


def np_histogram(target: list[np.ndarray], sources: list[np.ndarray], bins: int = 256) -> list[np.ndarray]:
    pooled = np.concatenate([np_rgb_to_lab(t).reshape(-1, 3) for t in target]).T  # (3, n), pooled pixels
    low_t, high_t = pooled.min(1), pooled.max(1)
    high_t = np.maximum(high_t, low_t + 1e-4)
    width_t = (high_t - low_t) / bins
    cdf_t = []
    for c in range(3):
        idx = np.clip(np.floor((pooled[c] - low_t[c]) / width_t[c]), 0, bins - 1).astype(int)
        cdf_t.append(np.concatenate([[0.0], np.cumsum(np.bincount(idx, minlength=bins)) / idx.size]))

    def inverse(c: int, q: np.ndarray) -> np.ndarray:
        j = np.clip(np.searchsorted(cdf_t[c], q, side="right") - 1, 0, bins - 1)
        t0, t1 = cdf_t[c][j], cdf_t[c][j + 1]
        inside = np.clip(np.where(t1 > t0, (q - t0) / np.maximum(t1 - t0, 1e-12), 0.0), 0, 1)
        return low_t[c] + (j + inside) * width_t[c]

    out = []
    for s in sources:
        lab = np_rgb_to_lab(s).reshape(-1, 3).T
        new = np.empty_like(lab)
        for c in range(3):
            v = lab[c]
            lo, hi = v.min(), v.max()
            width = max((hi - lo) / bins, 1e-12)
            pos = (v - lo) / width
            idx = np.clip(np.floor(pos), 0, bins - 1).astype(int)
            frac = np.clip(pos - idx, 0, 1)
            cdf = np.concatenate([[0.0], np.cumsum(np.bincount(idx, minlength=bins)) / v.size])
            edges = inverse(c, cdf)
            new[c] = edges[idx] + (edges[idx + 1] - edges[idx]) * frac
        out.append(np_lab_to_uint8(new.T.reshape(s.shape)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# data


@pytest.fixture(scope="module")
def cells() -> dict[str, np.ndarray]:
    """6 cells (one per class), 64 px, rendered under clinic and hgtp; plus 6 other clinic cells."""
    batch = render_cells(1, ["clinic", "hgtp"], size=64)
    other = render_cells(1, ["clinic"], size=64, start=50)
    return {"clinic": batch.images["clinic"], "hgtp": batch.images["hgtp"], "clinic_other": other.images["clinic"]}


def to_batch(images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(list(images))).permute(0, 3, 1, 2).float() / 255.0


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------------------------
# against the numpy references


def test_lab_reference_matches_kornia(cells):
    import kornia

    image = cells["hgtp"][0]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255.0
    ours = kornia.color.rgb_to_lab(x)[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - np_rgb_to_lab(image)).max() < 1e-9
    back = kornia.color.lab_to_rgb(torch.from_numpy(np_rgb_to_lab(image)).permute(2, 0, 1)[None])
    assert np.array_equal(np_lab_to_uint8(np_rgb_to_lab(image)), image)
    assert np.abs(back[0].permute(1, 2, 0).numpy() * 255 - image).max() < 1e-6


def test_reinhard_matches_numpy(cells):
    target, sources = list(cells["clinic_other"]), list(cells["hgtp"])
    out = normalize_images(build("reinhard").fit(target), sources)
    assert max_diff(out, np_reinhard(target, sources)) <= 1


def test_macenko_matches_numpy(cells):
    target, sources = list(cells["clinic_other"]), list(cells["hgtp"])
    out = normalize_images(build("macenko").fit(target), sources)
    assert max_diff(out, np_macenko(target, sources)) <= 1


def test_macenko_matches_numpy_on_a_large_image(cells):
    """192 px: the illumination comes from a strided subsample; one image per call takes the compacted path."""
    import cv2

    target = [cv2.resize(im, (192, 192), interpolation=cv2.INTER_CUBIC) for im in cells["clinic_other"][:2]]
    sources = [cv2.resize(im, (192, 192), interpolation=cv2.INTER_CUBIC) for im in cells["hgtp"][:2]]
    out = normalize_images(build("macenko").fit(target), sources, batch_size=1)
    assert max_diff(out, np_macenko(target, sources)) <= 1


def test_histogram_matches_numpy(cells):
    target, sources = list(cells["clinic_other"]), list(cells["hgtp"])
    out = normalize_images(build("histogram").fit(target), sources)
    assert max_diff(out, np_histogram(target, sources)) <= 1


def test_histogram_close_to_exact_rank_matching(cells):
    """Binning aside, this is the classic CDF mapping: compare with an exact rank-based match in L*a*b*."""
    target, source = cells["clinic_other"], cells["hgtp"][2]
    pooled = np.concatenate([np_rgb_to_lab(t).reshape(-1, 3) for t in target])
    lab = np_rgb_to_lab(source).reshape(-1, 3)
    exact = np.stack([np.quantile(pooled[:, c], (np.argsort(np.argsort(lab[:, c])) + 0.5) / len(lab))
                      for c in range(3)], 1)
    out = build("histogram").fit(list(target))(to_batch([source]).double())
    got = np_rgb_to_lab(np.rint(out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).reshape(-1, 3)
    assert np.abs(got - np_rgb_to_lab(np_lab_to_uint8(exact.reshape(source.shape))).reshape(-1, 3)).mean() < 0.6


@pytest.mark.parametrize("q", [0.0, 1.0, 37.5, 99.0, 100.0])
def test_masked_percentile_is_numpy_percentile(q):
    g = torch.Generator().manual_seed(1)
    values = torch.randn(3, 2, 500, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 2, 500, generator=g) > 0.6
    mask[0, 0] = False
    got = masked_percentile(values, q, mask).numpy()
    assert np.isnan(got[0, 0])
    for i, j in [(0, 1), (1, 0), (2, 1)]:
        assert got[i, j] == pytest.approx(np.percentile(values[i, j][mask[i, j]].numpy(), q), abs=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# golden behaviour on simulated pairs: hgtp images of the same cells move towards clinic's ground truth


@pytest.mark.parametrize("name", NORMALIZERS)
def test_simulated_hgtp_moves_towards_clinic(name, cells):
    clinic, hgtp = cells["clinic"], cells["hgtp"]
    before = np.abs(hgtp.astype(float) - clinic).mean()
    norm = build(name).fit(list(clinic))
    after = np.abs(np.stack(normalize_images(norm, list(hgtp))).astype(float) - clinic).mean()
    assert after < 0.7 * before, (name, before, after)
    lab_before = np.abs(np_rgb_to_lab(hgtp) - np_rgb_to_lab(clinic)).mean()
    lab_after = np.abs(np_rgb_to_lab(np.stack(normalize_images(norm, list(hgtp)))) - np_rgb_to_lab(clinic)).mean()
    assert lab_after < 0.7 * lab_before


def test_macenko_three_stains_is_exact_on_its_own_target(cells):
    image = cells["clinic"][0]
    out = normalize_images(build("macenko", n_stains=3).fit(image), [image])[0]
    assert np.abs(out.astype(int) - image).max() <= 1


def test_macenko_stains_ordered_azure_first(cells):
    norm = build("macenko").fit(list(cells["clinic"]))
    v = norm.target_stains
    refs = torch.tensor(ROMANOWSKY_STAIN_VECTORS)
    assert float(v[0] @ refs[0] + v[1] @ refs[1]) > float(v[0] @ refs[1] + v[1] @ refs[0])
    assert float(v[0, 0] - v[0, 2]) > float(v[1, 0] - v[1, 2])  # the blue stain absorbs more red, less blue
    assert torch.allclose(v.norm(dim=1), torch.ones(2), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# degenerate inputs


def degenerate_images(size: int = 48) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    lone = np.full((size, size, 3), 250, np.uint8)
    lone[20:24, 20:24] = (110, 40, 140)  # 16 stained pixels: a lone cell fragment on plasma
    noisy = np.clip(150 + rng.normal(0, 0.4, (size, size, 3)), 0, 255).astype(np.uint8)
    return {"white": np.full((size, size, 3), 255, np.uint8), "black": np.zeros((size, size, 3), np.uint8),
            "grey": np.full((size, size, 3), 150, np.uint8), "nearly_uniform": noisy, "lone_cell": lone}


WARNS = {"reinhard": {"white", "black", "grey", "nearly_uniform"},
         "macenko": {"white", "black", "grey", "nearly_uniform", "lone_cell"},
         "histogram": {"white", "black", "grey", "nearly_uniform"}}


@pytest.mark.parametrize("name", NORMALIZERS)
def test_degenerate_images_fall_back_with_a_warning(name, cells):
    norm = build(name).fit(list(cells["clinic"]))
    normal = cells["hgtp"][:1]
    alone = norm(to_batch(normal))
    for case, image in degenerate_images(64).items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = norm(to_batch([image, normal[0]]))
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1, (name, case)
        warned = any(issubclass(w.category, DegenerateImageWarning) for w in caught)
        assert warned == (case in WARNS[name]), (name, case, [str(w.message) for w in caught])
        assert torch.allclose(out[1:], alone, atol=1e-5)  # images of a batch are normalized independently


def test_warning_names_images_across_cpu_sub_batches(cells):
    """256 px images run one per sub-batch on CPU; the warning still gives indices in the caller's batch."""
    import cv2

    norm = build("reinhard").fit(list(cells["clinic"]))
    images = [cv2.resize(im, (256, 256)) for im in cells["hgtp"][:4]]
    images[2] = np.full((256, 256, 3), 255, np.uint8)
    with pytest.warns(DegenerateImageWarning, match=r"image\(s\) \[2\] of the batch"):
        out = norm(to_batch(images))
    assert torch.allclose(out[3:], norm(to_batch(images[3:])), atol=1e-6)


def test_normalize_images_warns_with_list_indices(cells):
    norm = build("histogram").fit(list(cells["clinic"]))
    images = [cells["hgtp"][0], np.zeros((40, 40, 3), np.uint8), cells["hgtp"][1], np.zeros((64, 64, 3), np.uint8)]
    with pytest.warns(DegenerateImageWarning, match=r"image\(s\) \[1, 3\] of the list") as caught:
        out = normalize_images(norm, images)
    assert len(caught) == 1 and caught[0].filename == __file__
    assert [o.shape for o in out] == [im.shape for im in images]


def test_macenko_identity_fallback_leaves_image_unchanged(cells):
    norm = build("macenko", fallback="identity").fit(list(cells["clinic"]))
    x = to_batch([degenerate_images()["lone_cell"]])
    with pytest.warns(DegenerateImageWarning, match="left unchanged"):
        assert torch.equal(norm(x), x)


def test_reinhard_uniform_image_is_shifted_to_the_target_mean(cells):
    norm = build("reinhard").fit(list(cells["clinic"]))
    with pytest.warns(DegenerateImageWarning):
        out = norm(to_batch([degenerate_images()["grey"]]))
    lab = np_rgb_to_lab(np.rint(out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).reshape(-1, 3)
    assert np.allclose(lab.mean(0), norm.target_mean.numpy(), atol=0.5)
    assert lab.std(0).max() < 0.5


def test_macenko_fit_on_blank_target_is_an_error():
    with pytest.raises(StainshiftError, match="stained pixels"):
        build("macenko").fit([np.full((32, 32, 3), 255, np.uint8)])


# ---------------------------------------------------------------------------------------------------------------
# state, factory, inputs


@pytest.mark.parametrize("name", NORMALIZERS)
def test_use_before_fit_is_an_error(name):
    with pytest.raises(StainshiftError, match="not fitted"):
        build(name)(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("name", NORMALIZERS)
def test_state_dict_round_trip(name, cells):
    fitted = build(name).fit(list(cells["clinic"]))
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    fresh = build(name)
    fresh.load_state_dict(torch.load(buffer))
    assert fresh.is_fitted
    x = to_batch(cells["hgtp"][:3])
    assert torch.equal(fresh(x), fitted(x))
    assert {k for k, _ in fitted.named_buffers()} == set(fitted.state_dict())


def test_to_device_and_dtype(cells):
    norm = build("reinhard").fit(list(cells["clinic"]))
    x = to_batch(cells["hgtp"][:2])
    ref = norm(x)
    out = norm.to(torch.float64)(x.double())
    assert out.dtype == torch.float64 and torch.allclose(out.float(), ref, atol=1e-4)
    if torch.cuda.is_available():
        for name in NORMALIZERS:
            n = build(name).fit(list(cells["clinic"]))
            gpu = n.to("cuda")(x.cuda())
            assert gpu.is_cuda and torch.allclose(gpu.cpu(), n.cpu()(x), atol=2e-3)


def test_unknown_name_is_a_one_line_error():
    with pytest.raises(StainshiftError) as info:
        build("vahadane")
    message = str(info.value)
    assert "\n" not in message and all(name in message for name in NORMALIZERS)


def test_bad_options_are_errors():
    with pytest.raises(StainshiftError, match="n_stains"):
        build("macenko", n_stains=4)
    with pytest.raises(StainshiftError, match="unexpected keyword"):
        build("reinhard", beta=0.1)
    with pytest.raises(StainshiftError, match="background"):
        build("macenko", background="white")


def test_factory_types_and_exports():
    assert NORMALIZERS == ("reinhard", "macenko", "histogram")
    for name, cls in zip(NORMALIZERS, (ReinhardNormalizer, MacenkoNormalizer, HistogramNormalizer), strict=True):
        norm = build(name)
        assert type(norm) is cls and isinstance(norm, Normalizer) and isinstance(norm, torch.nn.Module)
    assert build(" Macenko ").name == "macenko"


def test_fit_on_differently_sized_images(cells):
    """Statistics are per image then averaged (Reinhard): the grouping by size must not change them."""
    images = [cells["clinic"][0], cells["clinic"][1][:40, :56], cells["clinic"][2], cells["clinic"][3][10:, 5:]]
    norm = build("reinhard").fit(images)
    labs = [np_rgb_to_lab(im).reshape(-1, 3) for im in images]
    assert np.allclose(norm.target_mean.numpy(), np.mean([lab.mean(0) for lab in labs], 0), atol=1e-3)
    assert np.allclose(norm.target_std.numpy(), np.mean([lab.std(0) for lab in labs], 0), atol=1e-3)
    for name in ("macenko", "histogram"):
        assert build(name).fit(images).is_fitted
    out = normalize_images(norm, images, batch_size=2)
    assert [o.shape for o in out] == [im.shape for im in images] and all(o.dtype == np.uint8 for o in out)
    for image, o in zip(images, out, strict=True):
        single = norm(to_batch([image]))[0].permute(1, 2, 0).numpy()
        assert np.array_equal(o, np.rint(single * 255).astype(np.uint8))


@pytest.mark.parametrize("name", NORMALIZERS)
def test_fit_input_forms_agree(name, cells):
    images = cells["clinic"]
    forms = [list(images), images, torch.from_numpy(images).permute(0, 3, 1, 2), to_batch(images)]
    states = [build(name).fit(f).state_dict() for f in forms]
    for state in states[1:]:
        for key, value in state.items():
            assert torch.allclose(value.float(), states[0][key].float(), atol=1e-5), (name, key)


def test_bad_inputs_are_errors(cells):
    with pytest.raises(StainshiftError, match=r"\[0, 1\]"):
        build("reinhard").fit(to_batch(cells["clinic"]) * 255)
    with pytest.raises(StainshiftError, match="no target images"):
        build("reinhard").fit([])
    norm = build("reinhard").fit(cells["clinic"])
    with pytest.raises(StainshiftError, match=r"\(B, 3, H, W\)"):
        norm(torch.rand(3, 8, 8))
    with pytest.raises(StainshiftError, match="uint8"):
        normalize_images(norm, [np.zeros((8, 8, 3), np.float32)])
