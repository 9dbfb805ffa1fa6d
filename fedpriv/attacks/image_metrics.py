"""How close a reconstruction is to the original: PSNR, SSIM (dm-pix), and best matching.

Images are `[..., H, W, C]` floats in [0, 1]. Both metrics compare images one to one;
`match` pairs a set of reconstructions with a set of originals first, because an
attack on a batch recovers the images in no particular order.

PSNR and SSIM are dm-pix's (the field's JAX implementation); ours was replaced after
tests/test_attack_metrics.py showed both agree to float32 rounding and dm-pix's SSIM
measured 2.8x less CPU time (docs/results/algorithms.md, "dm-pix").
"""
from __future__ import annotations

import dm_pix as pix
import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

# PSNR is infinite for identical images; the cap keeps results finite (and
# JSON-serialisable): 100 dB, a mean squared error of 1e-10.
PSNR_CAP = 100.0


def _as_batch(a: jax.Array, b: jax.Array):
  """Broadcasts to one shape and flattens the leading axes: dm-pix takes `[N, H, W, C]`."""
  a, b = jnp.broadcast_arrays(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
  lead = a.shape[:-3]
  return a.reshape((-1,) + a.shape[-3:]), b.reshape((-1,) + b.shape[-3:]), lead


def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  """Peak signal-to-noise ratio in dB for images in [0, 1], per image:
  `[..., H, W, C] -> [...]` (inputs broadcast), capped at `PSNR_CAP`."""
  a, b, lead = _as_batch(a, b)
  return jnp.minimum(pix.psnr(a, b), PSNR_CAP).reshape(lead)


def ssim(a: jax.Array, b: jax.Array, max_val: float = 1.0, filter_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> jax.Array:
  """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004), per image.

  dm-pix's `ssim`: a Gaussian window (`filter_size` taps, std `sigma`) applied without
  padding; the window shrinks to the image size for images smaller than it.

  Args:
    a, b: `[..., H, W, C]` images.

  Returns:
    `[...]` SSIM values in [-1, 1]; 1 only for identical images.
  """
  a, b, lead = _as_batch(a, b)
  size = min(filter_size, a.shape[-3], a.shape[-2])
  return pix.ssim(a, b, max_val=max_val, filter_size=size, filter_sigma=sigma, k1=k1,
                  k2=k2).reshape(lead)


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
