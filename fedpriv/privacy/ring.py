"""Integers in the ring Z_(2^k), k <= 32, held as uint32 (sums wrap modulo 2^32, and
2^k divides 2^32): what secure aggregation masks and what the quantizer's inverse reads
the sum of codes in."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def ring_mask(ring_bits: int) -> jnp.ndarray:
  return jnp.uint32((1 << ring_bits) - 1) if ring_bits < 32 else jnp.uint32(0xFFFFFFFF)


def to_ring(values: jax.Array, ring_bits: int) -> jax.Array:
  """Integers (int32, any sign) as elements of Z_(2^ring_bits)."""
  return lax.bitcast_convert_type(values.astype(jnp.int32), jnp.uint32) & ring_mask(ring_bits)


def from_ring(values: jax.Array, ring_bits: int) -> jax.Array:
  """Ring elements as the integers in [-2^(k-1), 2^(k-1)) they stand for (int32)."""
  v = values.astype(jnp.uint32) & ring_mask(ring_bits)
  if ring_bits == 32:
    return lax.bitcast_convert_type(v, jnp.int32)
  vi = v.astype(jnp.int32)  # < 2^31: exact
  return jnp.where(v >= jnp.uint32(1 << (ring_bits - 1)), vi + jnp.int32(-(1 << ring_bits)), vi)
