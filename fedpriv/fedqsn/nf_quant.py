"""NormalFloat-style (NF-b) blockwise quantization of the large weight matrices.

The code has 2^b + 1 symmetric levels taken from normal quantiles (METHOD.md, tier 1):
the positive side is the standard normal quantiles at 2^(b-1) evenly spaced
probabilities from 0.9677083 down to 0.5 (0.5 itself excluded), the negative side their
negatives, plus 0; all divided by the largest, so the levels span [-1, 1]. For b=2 they are
{0, +-0.3379, +-1}. (QLoRA's NF4, Dettmers et al. 2023, builds its levels the same way.)

A weight `[..., out]` is viewed as `out` columns of `fan_in = prod(...)` values (one per
output unit, the layout of a PyTorch `[out, in]` matrix); each column is cut into blocks of
`block_size` consecutive values (the last one may be partial), each block is divided by
its absolute maximum (its float32 scale) and every value rounds to the nearest level.
Rounding is deterministic, so quantizing twice changes nothing, and the largest
magnitude of every block is kept exactly. A masked (all-zero) column quantizes to zeros.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtri

from fedpriv.fedqsn.units import ModelSpec

TOP_PROBABILITY = 0.9677083
NO_QUANTIZATION = 32


@functools.lru_cache(maxsize=None)
def nf_levels(bits: int) -> np.ndarray:
  """The 2^bits + 1 NF levels in increasing order, float32, in [-1, 1]."""
  if not 1 <= bits <= 16:
    raise ValueError(f"NF quantization needs 1 <= bits <= 16, got {bits}")
  half = 2 ** (bits - 1)
  probs = np.linspace(TOP_PROBABILITY, 0.5, half + 1)[:-1]
  positive = ndtri(probs) / ndtri(TOP_PROBABILITY)
  levels = np.concatenate([-positive, [0.0], positive[::-1]])
  levels.setflags(write=False)
  return levels.astype(np.float32)


def num_blocks(fan_in: int, block_size: int) -> int:
  return -(-fan_in // block_size)


def _columns(w: jax.Array, block_size: int) -> jax.Array:
  """`[..., out] -> [out, blocks, block_size]` (zero-padded along fan-in)."""
  out = w.shape[-1]
  cols = w.reshape(-1, out).T
  fan_in = cols.shape[1]
  pad = num_blocks(fan_in, block_size) * block_size - fan_in
  cols = jnp.pad(cols, ((0, 0), (0, pad)))
  return cols.reshape(out, -1, block_size)


def _uncolumns(blocks: jax.Array, shape: tuple) -> jax.Array:
  out = shape[-1]
  fan_in = int(np.prod(shape[:-1]))
  return blocks.reshape(out, -1)[:, :fan_in].T.reshape(shape)


def nf_encode(w: jax.Array, bits: int, block_size: int):
  """Codes and scales of one weight.

  Returns:
    `(codes, scales)`: `codes` int32 `[out, blocks, block_size]` level indices (padding
    positions hold the index of level 0), `scales` float32 `[out, blocks]` absmaxes.
  """
  levels = jnp.asarray(nf_levels(bits))
  blocks = _columns(w.astype(jnp.float32), block_size)
  scales = jnp.abs(blocks).max(axis=-1)
  safe = jnp.where(scales > 0, scales, 1.0)
  normalized = jnp.where(scales[..., None] > 0, blocks / safe[..., None], 0.0)
  midpoints = (levels[1:] + levels[:-1]) / 2
  codes = jnp.searchsorted(midpoints, normalized).astype(jnp.int32)
  return codes, scales


def nf_decode(codes: jax.Array, scales: jax.Array, bits: int, shape: tuple,
              dtype=jnp.float32) -> jax.Array:
  """Inverse of `nf_encode` up to rounding: level * block scale, back in `shape`."""
  levels = jnp.asarray(nf_levels(bits))
  return _uncolumns(levels[codes] * scales[..., None], tuple(shape)).astype(dtype)


def nf_quantize_leaf(w: jax.Array, bits: int, block_size: int) -> jax.Array:
  """`w` rounded to its NF-b code (same shape and dtype)."""
  codes, scales = nf_encode(w, bits, block_size)
  return nf_decode(codes, scales, bits, w.shape, w.dtype)


def nf_quantize(params, spec: ModelSpec, bits: int, block_size: int):
  """Quantizes the spec's large weights; everything else passes through. bits=32: none."""
  if bits == NO_QUANTIZATION:
    return params
  return spec.map(
      lambda name, x: nf_quantize_leaf(x, bits, block_size) if name in spec.quantized else x,
      params)
