"""stainshift.metrics against direct numpy / scipy computations on small arrays, and known cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.ndimage import convolve1d
from scipy.stats import wasserstein_distance

from stainshift.metrics import (
    frechet_distance,
    lab_pixels,
    psnr,
    random_directions,
    sliced_wasserstein,
    sorted_projections,
    ssim_gray,
    wasserstein_1d_sorted,
)


def _gauss(sigma: float, size: int) -> np.ndarray:
    x = np.arange(size) - size // 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable filtering with reflected borders (numpy's 'mirror': d c b | a b c d | c b a)."""
    return convolve1d(convolve1d(image, kernel, axis=0, mode="mirror"), kernel, axis=1, mode="mirror")


def _ssim_reference(a: np.ndarray, b: np.ndarray, blur: float = 0.0) -> float:
    """SSIM of two RGB HxWx3 float images in [0, 1], grayscale (ITU-R 601), mean of the valid part of the map."""
    weights = np.array([0.299, 0.587, 0.114])
    x, y = a @ weights, b @ weights
    if blur:
        k = _gauss(blur, 2 * math.ceil(3 * blur) + 1)
        x, y = _filter(x, k), _filter(y, k)
    g = _gauss(1.5, 11)
    mx, my = _filter(x, g), _filter(y, g)
    sxx, syy, sxy = _filter(x * x, g) - mx**2, _filter(y * y, g) - my**2, _filter(x * y, g) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s[5:-5, 5:-5].mean())


def _batch(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


@pytest.fixture
def pair(rng):
    base = rng.random((24, 20, 3))
    other = np.clip(0.7 * base + 0.2 + rng.normal(0, 0.05, base.shape), 0, 1)
    return base.astype(np.float32), other.astype(np.float32)


def test_ssim_gray_matches_a_numpy_computation(pair, rng):
    a, b = pair
    c = rng.random((24, 20, 3)).astype(np.float32)
    got = ssim_gray(_batch([a, a]), _batch([b, c]))
    assert got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), [_ssim_reference(a, b), _ssim_reference(a, c)], atol=2e-4)
    blurred = ssim_gray(_batch([a]), _batch([b]), blur_sigma=1.0)
    np.testing.assert_allclose(blurred.numpy(), [_ssim_reference(a, b, blur=1.0)], atol=2e-4)


def test_ssim_gray_known_cases(pair):
    a, b = pair
    assert ssim_gray(_batch([a]), _batch([a])).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim_gray(_batch([a]), _batch([a]), blur_sigma=2.0).item() == pytest.approx(1.0, abs=1e-5)
    # a change of colour that keeps the luma (here: the gray version of the image itself) is invisible to it
    gray = np.repeat((a @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, axis=2)
    assert ssim_gray(_batch([a]), _batch([gray])).item() == pytest.approx(1.0, abs=1e-4)
    assert ssim_gray(_batch([a]), _batch([b])).item() < 0.99
    with pytest.raises(ValueError, match="smaller than"):
        ssim_gray(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="shapes differ"):
        ssim_gray(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))


def test_psnr_matches_numpy(pair):
    a, b = pair
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    assert psnr(_batch([a]), _batch([b])).item() == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)
    assert psnr(_batch([a]), _batch([a])).item() == pytest.approx(100.0)


def test_lab_pixels_known_colours_and_determinism(rng):
    white, black, red = (np.full((4, 4, 3), v, np.float32) for v in (1.0, 0.0, 0.0))
    red[..., 0] = 1.0
    lab = lab_pixels(_batch([white, black, red]), n_per_image=100)
    assert lab.shape == (48, 3)  # fewer pixels than asked: every pixel
    np.testing.assert_allclose(lab[:16].numpy(), np.tile([100.0, 0.0, 0.0], (16, 1)), atol=0.05)
    np.testing.assert_allclose(lab[16:32].numpy(), 0.0, atol=0.05)
    np.testing.assert_allclose(lab[32:].numpy(), np.tile([53.24, 80.09, 67.20], (16, 1)), atol=0.1)

    images = [torch.rand(3, 20, 20, generator=torch.Generator().manual_seed(i)) for i in range(5)]
    once = lab_pixels(images, n_per_image=50, seed=3)
    assert once.shape == (250, 3)
    assert torch.equal(once, lab_pixels(images, n_per_image=50, seed=3))
    by_batch = torch.cat([lab_pixels(images[:2], 50, seed=3), lab_pixels(images[2:], 50, seed=3, first_index=2)])
    assert torch.equal(once, by_batch)
    assert not torch.equal(once, lab_pixels(images, n_per_image=50, seed=4))
    # different sizes in one list
    assert lab_pixels([torch.rand(3, 5, 6), torch.rand(3, 30, 30)], n_per_image=40).shape == (70, 3)


def test_sliced_wasserstein_matches_scipy_per_direction(rng):
    for n, m in ((40, 40), (37, 100), (1, 5)):
        a, b = rng.normal(size=(n, 3)), rng.normal(size=(m, 3)) * 2 + 1
        directions = random_directions(3, 16, seed=5).numpy()
        expected = np.mean([wasserstein_distance(a @ d, b @ d) for d in directions.T])
        assert sliced_wasserstein(a, b, n_projections=16, seed=5) == pytest.approx(expected, rel=1e-9)
    assert np.allclose(np.linalg.norm(directions, axis=0), 1.0)


def test_sliced_wasserstein_known_cases(rng):
    a = rng.normal(size=(200, 3))
    assert sliced_wasserstein(a, a) == 0.0
    assert sliced_wasserstein(a, a[::-1].copy()) == pytest.approx(0.0, abs=1e-12)  # order does not matter
    shift = np.array([3.0, -1.0, 2.0])
    directions = random_directions(3, 64, seed=0).numpy()
    # a translated copy: every 1D distance is |shift . direction|
    assert sliced_wasserstein(a, a + shift) == pytest.approx(np.abs(shift @ directions).mean(), rel=1e-9)
    # reusing a sorted reference gives the same number
    d = random_directions(3, 64, seed=0)
    reused = wasserstein_1d_sorted(sorted_projections(a, d), sorted_projections(a[:50] + 1, d)).mean()
    assert float(reused) == pytest.approx(sliced_wasserstein(a, a[:50] + 1), rel=1e-12)
    with pytest.raises(ValueError):
        sliced_wasserstein(a, np.zeros((5, 2)))
    with pytest.raises(ValueError):
        sliced_wasserstein(a, np.zeros((0, 3)))


def _fd_reference(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula, with the symmetric form Tr sqrt(A^1/2 B A^1/2) of Tr sqrtm(A B)."""
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca).real
    eig = np.linalg.eigvalsh(root @ cb @ root)
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(eig.clip(0)).sum())


def test_frechet_distance_matches_numpy(rng):
    a = rng.normal(size=(200, 4))
    b = rng.normal(size=(150, 4)) @ np.diag([1.0, 2.0, 0.5, 1.0]) + np.array([1.0, 0.0, -1.0, 0.5])
    assert frechet_distance(a, b, shrinkage=0) == pytest.approx(_fd_reference(a, b), rel=1e-6)
    # 1D: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2
    x, y = rng.normal(size=(500, 1)), rng.normal(size=(400, 1)) * 3 + 2
    expected = (x.mean() - y.mean()) ** 2 + (x.std(ddof=1) - y.std(ddof=1)) ** 2
    assert frechet_distance(x, y, shrinkage=0) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_shrinkage_and_small_samples(rng):
    from sklearn.covariance import ledoit_wolf

    a, b = rng.normal(size=(12, 30)), rng.normal(size=(15, 30)) + 0.3
    # Ledoit-Wolf (default): the textbook formula on the shrunk covariances
    ca, cb = ledoit_wolf(a)[0], ledoit_wolf(b)[0]
    root = scipy.linalg.sqrtm(ca).real
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(
        np.linalg.eigvalsh(root @ cb @ root).clip(0)).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)
    # fixed shrinkage s: (1 - s) C + s tr(C)/D I
    s = 0.3
    cov = np.cov(a, rowvar=False)
    shrunk = (1 - s) * cov + s * np.trace(cov) / 30 * np.eye(30)
    assert frechet_distance(a, a, shrinkage=s) == pytest.approx(0.0, abs=1e-6)
    assert np.trace(shrunk) == pytest.approx(np.trace(cov))
    # n < D: singular covariances, still finite and >= 0; identical inputs ~0 whatever the estimate
    for shrinkage in (0, 0.3, "ledoit-wolf"):
        value = frechet_distance(a, b, shrinkage=shrinkage)
        assert math.isfinite(value) and value > 0
        assert frechet_distance(a, a, shrinkage=shrinkage) == pytest.approx(0.0, abs=1e-4)
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(frechet_distance(a, b))
    with pytest.raises(ValueError):
        frechet_distance(a, b[:, :5])
    with pytest.raises(ValueError, match="shrinkage"):
        frechet_distance(a, b, shrinkage=2.0)
