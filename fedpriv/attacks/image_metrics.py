"""How close a reconstruction is to the original: PSNR, SSIM, and best matching.

Images are `[..., H, W, C]` floats in [0, 1]. Both metrics compare images one to one;
`match` pairs a set of reconstructions with a set of originals first, because an
attack on a batch recovers the images in no particular order.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

# PSNR is infinite for identical images; the floor on the mean squared error caps it at
# 100 dB so results stay finite (and JSON-serialisable).
MSE_FLOOR = 1e-10


def psnr(a: jax.Array, b: jax.Array, max_val: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB, per image: `[..., H, W, C] -> [...]`.

  10 log10(max_val^2 / MSE), with MSE floored at `MSE_FLOOR` (100 dB for max_val 1).
  """
  mse = jnp.mean(jnp.square(a.astype(jnp.float32) - b.astype(jnp.float32)), axis=(-3, -2, -1))
  return 10.0 * jnp.log10(max_val ** 2 / jnp.maximum(mse, MSE_FLOOR))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  """A normalised 1-D Gaussian of `size` taps (the SSIM window is its outer product)."""
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  w = np.exp(-r * r / (2.0 * sigma * sigma))
  return (w / w.sum()).astype(np.float32)


def _filter(x: jax.Array, window: jax.Array) -> jax.Array:
  """Separable 'valid' Gaussian filtering of `[N, H, W, C]`, channel by channel."""
  n, h, w, c = x.shape
  k = window.shape[0]
  planes = jnp.moveaxis(x, -1, 1).reshape(n * c, 1, h, w)
  dn = ("NCHW", "OIHW", "NCHW")
  planes = jax.lax.conv_general_dilated(planes, window.reshape(1, 1, k, 1), (1, 1), "VALID",
                                        dimension_numbers=dn)
  planes = jax.lax.conv_general_dilated(planes, window.reshape(1, 1, 1, k), (1, 1), "VALID",
                                        dimension_numbers=dn)
  return jnp.moveaxis(planes.reshape(n, c, h - k + 1, w - k + 1), 1, -1)


def ssim(a: jax.Array, b: jax.Array, max_val: float = 1.0, filter_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004), per image.

  Local means, variances and covariance come from a Gaussian window (`filter_size`
  taps, std `sigma`) applied without padding; the SSIM map
  `(2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2))`,
  C1 = (k1 L)^2, C2 = (k2 L)^2, is averaged over positions and channels. The window
  shrinks to the image size for images smaller than it.

  Args:
    a, b: `[..., H, W, C]` images.

  Returns:
    `[...]` SSIM values in [-1, 1]; 1 only for identical images.
  """
  a = jnp.asarray(a, jnp.float32)
  b = jnp.asarray(b, jnp.float32)
  lead, (h, w, c) = a.shape[:-3], a.shape[-3:]
  size = min(filter_size, h, w)
  window = jnp.asarray(gaussian_window(size, sigma))
  a = a.reshape((-1, h, w, c))
  b = b.reshape((-1, h, w, c))
  mu_a, mu_b = _filter(a, window), _filter(b, window)
  var_a = _filter(a * a, window) - mu_a * mu_a
  var_b = _filter(b * b, window) - mu_b * mu_b
  cov = _filter(a * b, window) - mu_a * mu_b
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2) /
              ((mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)))
  return ssim_map.mean(axis=(1, 2, 3)).reshape(lead)


def match(reconstructions, originals) -> np.ndarray:
  """For each original, the index of its reconstruction under the best assignment.

  Pairs maximise the total PSNR (Hungarian algorithm); with more reconstructions than
  originals (an attack on a sum of several clients) the extra ones stay unmatched.

  Args:
    reconstructions: `[R, H, W, C]`.
    originals: `[O, H, W, C]`, O <= R.

  Returns:
    `[O]` int indices into `reconstructions`.
  """
  rec = jnp.asarray(reconstructions)
  org = jnp.asarray(originals)
  if org.shape[0] > rec.shape[0]:
    raise ValueError(f"{org.shape[0]} originals but only {rec.shape[0]} reconstructions")
  scores = np.asarray(psnr(org[:, None], rec[None, :]))  # [O, R]
  rows, cols = linear_sum_assignment(-scores)
  out = np.empty(org.shape[0], np.int64)
  out[rows] = cols
  return out


def compare(reconstructions, originals) -> dict:
  """Matches reconstructions to originals and scores each pair.

  Returns:
    `{"order": [O] indices, "psnr": [O], "ssim": [O]}` (numpy), pair i being
    `originals[i]` with `reconstructions[order[i]]`.
  """
  order = match(reconstructions, originals)
  rec = jnp.asarray(reconstructions)[order]
  org = jnp.asarray(originals)
  return {"order": order, "psnr": np.asarray(psnr(rec, org)),
          "ssim": np.asarray(ssim(rec, org))}
