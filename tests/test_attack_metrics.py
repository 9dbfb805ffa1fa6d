"""PSNR, SSIM and best matching of reconstructions."""
import math

import numpy as np
import pytest

from fedpriv.attacks import image_metrics


def images(n, seed, h=28, w=28, c=1):
  return np.random.default_rng(seed).uniform(size=(n, h, w, c)).astype(np.float32)


def naive_ssim(a, b, size=11, sigma=1.5, k1=0.01, k2=0.03):
  """SSIM window by window, with explicit weights (a slow, independent formulation)."""
  g = image_metrics.gaussian_window(size, sigma).astype(np.float64)
  win = np.outer(g, g)
  c1, c2 = k1 ** 2, k2 ** 2
  a = a.astype(np.float64)[..., 0]
  b = b.astype(np.float64)[..., 0]
  vals = []
  for i in range(a.shape[0] - size + 1):
    for j in range(a.shape[1] - size + 1):
      pa, pb = a[i:i + size, j:j + size], b[i:i + size, j:j + size]
      ma, mb = (win * pa).sum(), (win * pb).sum()
      va = (win * (pa - ma) ** 2).sum()
      vb = (win * (pb - mb) ** 2).sum()
      cov = (win * (pa - ma) * (pb - mb)).sum()
      vals.append((2 * ma * mb + c1) * (2 * cov + c2) /
                  ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
  return float(np.mean(vals))


def test_identical_images_give_the_maximum():
  x = images(3, 0)
  np.testing.assert_allclose(image_metrics.ssim(x, x), 1.0, atol=1e-5)
  np.testing.assert_allclose(image_metrics.psnr(x, x),
                             10 * math.log10(1 / image_metrics.MSE_FLOOR), rtol=1e-6)


def test_noise_lowers_both_monotonically():
  x = images(4, 1) * 0.5 + 0.25
  rng = np.random.default_rng(2)
  psnrs, ssims = [], []
  for scale in (0.01, 0.05, 0.2):
    y = np.clip(x + scale * rng.normal(size=x.shape), 0, 1).astype(np.float32)
    psnrs.append(np.asarray(image_metrics.psnr(y, x)))
    ssims.append(np.asarray(image_metrics.ssim(y, x)))
  assert np.all(np.diff(np.stack(psnrs), axis=0) < 0)
  assert np.all(np.diff(np.stack(ssims), axis=0) < 0)
  assert np.all(ssims[-1] < 0.9)


def test_psnr_matches_its_definition():
  x = images(2, 3)
  y = np.clip(x + 0.1, 0, 1)
  mse = ((x - y) ** 2).mean(axis=(1, 2, 3))
  np.testing.assert_allclose(image_metrics.psnr(y, x), 10 * np.log10(1 / mse), rtol=1e-5)


@pytest.mark.parametrize("seed", [4, 5])
def test_ssim_matches_a_window_by_window_computation(seed):
  x = images(1, seed, 16, 16)
  y = np.clip(x * 0.7 + 0.2 * images(1, seed + 10, 16, 16), 0, 1)
  got = float(image_metrics.ssim(y, x)[0])
  np.testing.assert_allclose(got, naive_ssim(y[0], x[0]), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got, float(image_metrics.ssim(x, y)[0]), rtol=1e-5)  # symmetric


def test_ssim_sees_structure_that_psnr_does_not():
  """A brightness shift keeps structure (high SSIM) at the same PSNR as structured noise."""
  x = images(1, 6) * 0.2 + 0.4
  shifted = x + 0.1
  rng = np.random.default_rng(7)
  noisy = x + rng.choice([-0.1, 0.1], size=x.shape)
  np.testing.assert_allclose(image_metrics.psnr(shifted, x), image_metrics.psnr(noisy, x),
                             rtol=1e-4)
  assert float(image_metrics.ssim(shifted, x)[0]) > float(image_metrics.ssim(noisy, x)[0]) + 0.3


def test_match_undoes_a_permutation_and_ignores_extras():
  orig = images(4, 8)
  perm = np.random.default_rng(9).permutation(6)
  pool = np.concatenate([orig, images(2, 10)])[perm]
  order = image_metrics.match(pool, orig)
  np.testing.assert_array_equal(pool[order], orig)
  scores = image_metrics.compare(pool, orig)
  assert np.all(scores["ssim"] > 0.999)
  with pytest.raises(ValueError):
    image_metrics.match(orig[:2], orig)
