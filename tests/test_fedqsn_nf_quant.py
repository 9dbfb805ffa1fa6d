"""NF-b quantization: levels from the formula, idempotent, absmax-preserving, nearest."""
import statistics

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from fedpriv.fedqsn import nf_quant
from fedpriv.fedqsn.units import dense_spec


def formula_levels(bits):
  """METHOD.md's recipe, computed independently (the stdlib's normal quantile)."""
  inv = statistics.NormalDist().inv_cdf
  half = 2 ** (bits - 1)
  top = 0.9677083
  probs = [top - k * (top - 0.5) / half for k in range(half)]  # excludes 0.5
  pos = [inv(p) / inv(top) for p in probs]
  return sorted([-v for v in pos] + [0.0] + pos)


@pytest.mark.parametrize("bits", range(2, 9))
def test_levels_match_the_formula(bits):
  levels = nf_quant.nf_levels(bits)
  assert len(levels) == 2 ** bits + 1
  np.testing.assert_allclose(levels, formula_levels(bits), atol=1e-6)
  np.testing.assert_array_equal(levels, -levels[::-1])  # symmetric
  assert levels[0] == -1.0 and levels[-1] == 1.0 and 0.0 in levels
  assert np.all(np.diff(levels) > 0)


def test_two_bit_levels_are_the_stated_ones():
  np.testing.assert_allclose(nf_quant.nf_levels(2), [-1, -0.3379, 0, 0.3379, 1], atol=1e-4)


def _blocks(w, block_size):
  out = w.shape[-1]
  cols = np.asarray(w).reshape(-1, out).T
  return [cols[o, i:i + block_size] for o in range(out)
          for i in range(0, cols.shape[1], block_size)]


@settings(max_examples=8, deadline=None)
@given(shape=st.sampled_from([(7, 3), (5, 5, 2, 4), (64, 8), (3, 1), (130, 2)]),
       bits=st.integers(2, 8), block_size=st.sampled_from([1, 4, 16, 64]),
       seed=st.integers(0, 2 ** 16), spread=st.floats(1e-3, 1e3))
def test_quantization_is_idempotent_absmax_preserving_and_nearest(shape, bits, block_size,
                                                                   seed, spread):
  w = spread * jax.random.normal(jax.random.key(seed), shape)
  q = nf_quant.nf_quantize_leaf(w, bits, block_size)
  assert q.shape == w.shape and q.dtype == w.dtype
  np.testing.assert_array_equal(nf_quant.nf_quantize_leaf(q, bits, block_size), q)
  levels = nf_quant.nf_levels(bits).astype(np.float64)
  for wb, qb in zip(_blocks(w, block_size), _blocks(q, block_size)):
    a = np.abs(wb).max()
    assert np.abs(qb).max() == a  # the block's absmax survives exactly
    # Every value is a level times the block scale, and the nearest one.
    err = np.abs(wb[:, None] - levels[None, :] * a).min(axis=1)
    np.testing.assert_allclose(np.abs(wb - qb), err, rtol=1e-5, atol=1e-6 * a)


def test_zero_columns_stay_zero_and_blocks_run_along_fan_in():
  w = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
  w[:, 1] = 0.0  # a masked unit
  w[0, 2] = 100.0  # a huge value in column 2's first block only
  q = np.asarray(nf_quant.nf_quantize_leaf(jnp.asarray(w), 2, 4))
  np.testing.assert_array_equal(q[:, 1], 0.0)
  # Column 0 is unaffected by column 2's outlier (its own blocks, its own scales).
  np.testing.assert_array_equal(q[:, 0], np.asarray(nf_quant.nf_quantize_leaf(
      jnp.asarray(w[:, :1]), 2, 4))[:, 0])
  # Column 2's second block has its own scale too.
  assert np.abs(q[4:, 2]).max() == np.abs(w[4:, 2]).max()


def test_only_large_weights_are_quantized():
  rng = np.random.default_rng(1)
  params = {"fc1": {"kernel": rng.normal(size=(6, 5)), "bias": rng.normal(size=(5,))},
            "fc2": {"kernel": rng.normal(size=(5, 3)), "bias": rng.normal(size=(3,))}}
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  spec = dense_spec(params, head="fc2")
  q = nf_quant.nf_quantize(params, spec, 2, 4)
  assert len(np.unique(np.asarray(q["fc1"]["kernel"]))) < 30  # quantized
  for leaf in (("fc1", "bias"), ("fc2", "kernel"), ("fc2", "bias")):
    np.testing.assert_array_equal(q[leaf[0]][leaf[1]], params[leaf[0]][leaf[1]])
  assert nf_quant.nf_quantize(params, spec, 32, 4) is params
