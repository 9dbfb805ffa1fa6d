"""PSNR, SSIM (dm-pix) and best matching of reconstructions; dm-pix agrees with the
implementation it replaced."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedpriv.attacks import image_metrics


def images(n, seed, h=28, w=28, c=1):
  return np.random.default_rng(seed).uniform(size=(n, h, w, c)).astype(np.float32)


def gaussian_window(size=11, sigma=1.5):
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  w = np.exp(-r * r / (2.0 * sigma * sigma))
  return w / w.sum()


def our_psnr(a, b):
  """fedpriv's PSNR before dm-pix: 10 log10(1 / MSE), MSE floored at 1e-10."""
  mse = jnp.mean(jnp.square(a - b), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(1.0 / jnp.maximum(mse, 1e-10))


def our_ssim(a, b, size=11, sigma=1.5, k1=0.01, k2=0.03):
  """fedpriv's SSIM before dm-pix: separable 'valid' Gaussian filtering by convolution."""
  a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
  n, h, w, c = a.shape
  window = jnp.asarray(gaussian_window(size, sigma), jnp.float32)

  def filt(x):
    planes = jnp.moveaxis(x, -1, 1).reshape(n * c, 1, h, w)
    dn = ("NCHW", "OIHW", "NCHW")
    for kernel in (window.reshape(1, 1, size, 1), window.reshape(1, 1, 1, size)):
      planes = jax.lax.conv_general_dilated(planes, kernel, (1, 1), "VALID",
                                            dimension_numbers=dn)
    return jnp.moveaxis(planes.reshape(n, c, h - size + 1, w - size + 1), 1, -1)

  mu_a, mu_b = filt(a), filt(b)
  var_a, var_b = filt(a * a) - mu_a ** 2, filt(b * b) - mu_b ** 2
  cov = filt(a * b) - mu_a * mu_b
  c1, c2 = k1 ** 2, k2 ** 2
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2) /
              ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
  return ssim_map.mean(axis=(1, 2, 3))


def naive_ssim(a, b, size=11, sigma=1.5, k1=0.01, k2=0.03):
  """SSIM window by window, with explicit weights (a slow, independent formulation)."""
  g = gaussian_window(size, sigma)
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
  np.testing.assert_allclose(image_metrics.psnr(x, x), image_metrics.PSNR_CAP, rtol=1e-6)


@pytest.mark.parametrize("shape", [(6, 28, 28, 1), (3, 16, 20, 3)])
def test_dm_pix_agrees_with_our_former_implementation(shape):
  x = images(shape[0], 11, *shape[1:])
  for noise in (0.02, 0.1, 0.3):  # from nearly identical to unrelated structure
    y = np.clip(x + noise * np.random.default_rng(12).normal(size=x.shape), 0, 1)
    y = y.astype(np.float32)
    np.testing.assert_allclose(image_metrics.ssim(y, x), our_ssim(y, x), atol=2e-5)
    np.testing.assert_allclose(image_metrics.psnr(y, x), our_psnr(y, x), rtol=1e-5)


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
