"""Privatizers: clipping bound (also for non-finite input), unbiased masking and
quantization, exactly 2^b levels, the norm bound of conditional rounding (also for
non-finite input), noise scales, the discrete Gaussian's distribution and tails, a key
per chained stage, and server inverses that undo the client transforms on sums.

Statistical tests use fixed tolerances derived from the known variances (several
standard errors), never hard-coded random draws."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedpriv.privacy import privatizers as pv


def _tree(seed, shapes, scale):
  rng = np.random.default_rng(seed)
  return {f"w{i}": jnp.asarray(scale * rng.normal(size=s), jnp.float32)
          for i, s in enumerate(shapes)}


shapes_st = st.lists(st.lists(st.integers(1, 5), min_size=0, max_size=3).map(tuple),
                     min_size=1, max_size=4)


@settings(max_examples=15, deadline=None)
@given(shapes=shapes_st, scale=st.floats(1e-3, 1e3), clip=st.floats(1e-2, 10.0),
       seed=st.integers(0, 2 ** 16))
def test_clip_bound_holds_and_preserves_structure(shapes, scale, clip, seed):
  tree = _tree(seed, shapes, scale)
  p = pv.clip_l2(clip)
  out = p.encode(tree, jax.random.key(0), pv.ClientContext())
  chex.assert_trees_all_equal_shapes_and_dtypes(out, tree)
  chex.assert_trees_all_equal(p.decode(out, jax.random.key(0), pv.ServerContext()), out)
  norm = float(pv.global_norm(out))
  assert norm <= clip * (1 + 1e-5)
  before = float(pv.global_norm(tree))
  if before <= clip:  # small updates pass unchanged
    chex.assert_trees_all_close(out, tree, rtol=1e-6)
  else:  # large ones keep their direction and land on the sphere
    np.testing.assert_allclose(norm, clip, rtol=1e-5)


def test_chain_gives_every_stage_its_own_key():
  x = jnp.zeros((1000,), jnp.int32)
  p = pv.chain(pv.discrete_gaussian_noise(3.0), pv.discrete_gaussian_noise(3.0))
  key = jax.random.key(3)
  out = p.encode(x, key)
  one = pv.discrete_gaussian_noise(3.0)
  n0 = one.encode(x, jax.random.fold_in(key, 0), pv.ClientContext())
  n1 = one.encode(x, jax.random.fold_in(key, 1), pv.ClientContext())
  np.testing.assert_array_equal(out, n0 + n1)
  # Two stages with one key would give 2 * n0 (perfectly correlated noise).
  assert int(jnp.abs(out - 2 * n0).max()) > 2
  # Same key, same output: the chain is a pure function.
  np.testing.assert_array_equal(out, p.encode(x, key))
  # The server side too: its stages get fold_in(key, i) and run in reverse order.
  s = pv.chain(pv.central_gaussian_noise(1.0), pv.central_gaussian_noise(1.0))
  z = jnp.zeros((1000,))
  g = pv.central_gaussian_noise(1.0)
  expect = (g.decode(z, jax.random.fold_in(key, 0), pv.ServerContext()) +
            g.decode(z, jax.random.fold_in(key, 1), pv.ServerContext()))
  np.testing.assert_allclose(s.decode(z, key), expect, atol=1e-6)


def test_chain_decodes_in_reverse_order_and_round_contexts_get_their_own_keys():
  calls = []

  def recorder(name):
    return pv.stage(lambda x, k, c: (calls.append(("enc", name, c.round)), x)[1],
                    lambda s, k, c: (calls.append(("dec", name, c.round)), s)[1],
                    lambda k: name + str(int(jax.random.key_data(k)[-1]) % 2 ** 8))

  p = pv.chain(recorder("a"), recorder("b"), recorder("c"))
  key = jax.random.key(0)
  public = p.round_context(key)
  assert len(set(public)) == 3 and [q[0] for q in public] == ["a", "b", "c"]
  p.encode(jnp.zeros(3), key, pv.ClientContext(public))
  p.decode(jnp.zeros(3), key, pv.ServerContext(public))
  assert [c[:2] for c in calls] == [("enc", "a"), ("enc", "b"), ("enc", "c"),
                                    ("dec", "c"), ("dec", "b"), ("dec", "a")]
  assert [c[2] for c in calls] == list(public) + list(public)[::-1]


def test_random_mask_keeps_k_coordinates_and_is_unbiased():
  d, ratio, trials = 50, 0.8, 4000
  x = jnp.asarray(np.random.default_rng(0).normal(size=d), jnp.float32)
  mask = pv.random_mask(ratio, d)
  k = pv.kept_count(d, ratio)
  assert k == 10

  def once(key):
    idx = mask.round_context(key)
    v = mask.encode(x, key, pv.ClientContext(idx))
    assert v.shape == (k,)  # only k values travel
    return mask.decode(v, key, pv.ServerContext(idx))

  draws = jax.vmap(once)(jax.random.split(jax.random.key(1), trials))
  assert draws.shape == (trials, d)
  np.testing.assert_array_equal((draws != 0).sum(1), k)  # exactly k kept every time
  kept = np.asarray(draws != 0)
  np.testing.assert_allclose(np.asarray(draws)[kept] / np.broadcast_to(x, draws.shape)[kept],
                             d / k, rtol=1e-5)
  # E[draw] = x: each coordinate is x_i d/k with probability k/d, else 0.
  var = np.asarray(x) ** 2 * (d / k - 1)
  se = np.sqrt(var / trials)
  err = np.abs(np.asarray(draws.mean(0)) - np.asarray(x))
  assert (err <= 5 * se + 1e-6).all(), (err / se).max()


@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_quantizer_is_unbiased_and_range_is_fixed_by_the_bound(bits):
  bound, trials = 1.0, 3000
  x = jnp.linspace(-0.99, 0.99, 41)
  q = pv.stochastic_quantize(bits, bound)
  one = lambda x, k: q.decode(q.encode(x, k, pv.ClientContext()), k, pv.ServerContext())
  draws = jax.vmap(lambda k: one(x, k))(jax.random.split(jax.random.key(2), trials))
  step = pv.quantizer_step(bits, bound)
  se = math.sqrt(step ** 2 / 4 / trials)  # rounding variance <= step^2/4
  err = np.abs(np.asarray(draws.mean(0)) - np.asarray(x))
  assert (err <= 5 * se).all(), (err / se).max()
  # Every output is one of the 2^b levels -bound + j*step, whatever the data's scale.
  levels = -bound + step * np.arange(2 ** bits)
  big = one(1000.0 * x, jax.random.key(5))
  for out in (np.asarray(draws).ravel(), np.asarray(big)):
    assert np.abs(out[:, None] - levels[None]).min(1).max() < 1e-5
  assert float(jnp.abs(big).max()) <= bound + 1e-6


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_quantizer_uses_exactly_two_to_the_bits_levels(bits):
  x = jnp.linspace(-1.0, 1.0, 2001)
  codes = jax.vmap(lambda k: pv.quantize_codes(x, k, bits, 1.0))(
      jax.random.split(jax.random.key(0), 20))
  assert sorted(np.unique(np.asarray(codes)).tolist()) == list(range(2 ** bits))


def test_conditional_rounding_never_exceeds_its_bound_even_on_fallback():
  bits, clip, k = 4, 1.0, 400
  rng = np.random.default_rng(0)
  x = rng.normal(size=k)
  x = jnp.asarray(x / np.linalg.norm(x) * clip, jnp.float32)
  bound = pv.rounding_norm_bound(clip, bits, k)
  center = pv.codes_center(bits)
  draw = jax.jit(lambda key: pv.conditional_codes(x, key, bits, clip, bound))
  for i in range(20):
    codes, tries = draw(jax.random.key(i))
    assert float(jnp.linalg.norm(codes - center)) <= bound + 1e-4
    assert int(tries) >= 1
  # The fallback (no draw allowed) rounds every code toward the centre: its norm is at
  # most sqrt(||x/step||^2 + k/4), and no randomized rounding can be shorter, so with
  # the fallback's own norm as the bound random draws essentially never qualify.
  fallback, tries = pv.conditional_codes(x, jax.random.key(0), bits, clip, bound, tries=0)
  assert int(tries) == 0
  f_norm = float(jnp.linalg.norm(fallback - center))
  assert f_norm <= math.sqrt((clip / pv.quantizer_step(bits, clip)) ** 2 + k / 4) + 1e-4
  codes, tries = pv.conditional_codes(x, jax.random.key(1), bits, clip, f_norm, tries=3)
  assert int(tries) == 0
  np.testing.assert_array_equal(codes, fallback)
  assert int(codes.min()) >= 0 and int(codes.max()) <= 2 ** bits - 1


def test_gaussian_noise_standard_deviation_matches():
  n, sigma = 200_000, 0.37
  noise = pv.central_gaussian_noise(sigma)
  z = jnp.zeros((n,))
  np.testing.assert_array_equal(noise.encode(z, jax.random.key(0), pv.ClientContext()), z)
  out = noise.decode(z, jax.random.key(0), pv.ServerContext())  # the server adds it
  # The sample std of n normals has relative standard error 1/sqrt(2n) ~ 0.16%.
  np.testing.assert_allclose(float(out.std()), sigma, rtol=5 / math.sqrt(2 * n))
  assert abs(float(out.mean())) < 5 * sigma / math.sqrt(n)


@pytest.mark.parametrize("sigma", [1.5, 40.0])
def test_discrete_gaussian_matches_its_distribution(sigma):
  n = 200_000
  y = np.asarray(pv.sample_discrete_gaussian(jax.random.key(1), (n,), sigma))
  assert y.dtype == np.int32
  support = np.arange(-int(12 * sigma) - 2, int(12 * sigma) + 3)
  pmf = np.exp(-support.astype(float) ** 2 / (2 * sigma ** 2))
  pmf /= pmf.sum()
  var = float((pmf * support ** 2).sum())
  # Variance: relative standard error sqrt(2/n) for a near-normal variable.
  np.testing.assert_allclose(y.var(), var, rtol=5 * math.sqrt(2 / n))
  assert abs(y.mean()) < 5 * math.sqrt(var / n)
  if sigma < 5:  # chi-square goodness of fit on the central atoms
    from scipy import stats  # pylint: disable=import-outside-toplevel
    atoms = np.arange(-4, 5)
    observed = np.array([(y == a).sum() for a in atoms] + [(np.abs(y) > 4).sum()])
    expect = np.array([pmf[support == a][0] for a in atoms] +
                      [pmf[np.abs(support) > 4].sum()]) * n
    p = stats.chisquare(observed, expect).pvalue
    assert p > 1e-4, p


def test_discrete_gaussian_noise_works_under_vmap_and_jit():
  codes = jnp.zeros((3, 5000), jnp.int32)
  p = pv.discrete_gaussian_noise(10.0)
  out = jax.jit(jax.vmap(lambda c, k: p.encode(c, k, pv.ClientContext())))(
      codes, jax.random.split(jax.random.key(0), 3))
  assert out.dtype == jnp.int32 and out.shape == codes.shape
  # Clients get independent noise.
  assert float(jnp.corrcoef(out[0], out[1])[0, 1]) < 0.1
  np.testing.assert_allclose(float(out.std()), 10.0, rtol=0.05)


@settings(max_examples=8, deadline=None)
@given(size=st.integers(1, 40), bits=st.integers(1, 8), bound=st.floats(0.1, 10.0),
       seed=st.integers(0, 2 ** 16))
def test_clipped_quantized_vectors_land_on_levels(size, bits, bound, seed):
  x = jnp.asarray(bound * np.random.default_rng(seed).normal(size=size), jnp.float32)
  p = pv.chain(pv.clip_l2(bound), pv.stochastic_quantize(bits, bound))
  codes = p.encode(x, jax.random.key(seed))
  assert codes.dtype == jnp.int32 and codes.shape == x.shape
  assert int(codes.min()) >= 0 and int(codes.max()) <= 2 ** bits - 1
  out = p.decode(codes, jax.random.key(seed), pv.ServerContext(count=jnp.float32(1)))
  step = pv.quantizer_step(bits, bound)
  j = (np.asarray(out, np.float64) + bound) / step
  assert np.all(np.abs(j - np.round(j)) < 1e-3) and j.min() > -1e-3
  assert j.max() < 2 ** bits - 1 + 1e-3


@settings(max_examples=12, deadline=None)
@given(shapes=shapes_st, dtype=st.sampled_from(["float32", "bfloat16", "float16"]),
       clip=st.floats(0.1, 10.0), sigma=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 2 ** 16))
def test_clip_and_noise_keep_structure_and_dtype_and_are_pure(shapes, dtype, clip, sigma,
                                                              seed):
  tree = jax.tree.map(lambda x: x.astype(dtype), _tree(seed, shapes, 3.0))
  copy = jax.tree.map(np.array, tree)
  p = pv.chain(pv.clip_l2(clip), pv.central_gaussian_noise(sigma))
  key = jax.random.key(seed)
  run = lambda t: p.decode(p.encode(t, key), key)
  out = run(tree)
  again = jax.jit(run)(tree)
  chex.assert_trees_all_equal_shapes_and_dtypes(out, tree)
  chex.assert_trees_all_equal(jax.tree.map(np.array, tree), copy)  # input untouched
  chex.assert_trees_all_close(out, again, atol=1e-2 if dtype != "float32" else 1e-6)
  if sigma == 0:  # the clip holds to the dtype's precision
    tol = {"float32": 1e-5, "bfloat16": 2e-2, "float16": 2e-3}[dtype]
    assert float(pv.global_norm(jax.tree.map(lambda x: x.astype(jnp.float32), out))) \
        <= clip * (1 + tol) * (1 + tol)


def test_mask_indices_draw_uniform_subsets_and_break_ties_by_position():
  size, keep, trials = 6, 2, 6000
  draws = np.asarray(jax.vmap(lambda k: pv.mask_indices(k, size, keep))(
      jax.random.split(jax.random.key(3), trials)))
  assert (np.diff(draws, axis=1) > 0).all()  # sorted, distinct
  # Every one of the 15 pairs is equally likely: counts within 5 standard errors.
  pairs = np.bincount(draws[:, 0] * size + draws[:, 1], minlength=size * size)
  pairs = pairs[[i * size + j for i in range(size) for j in range(i + 1, size)]]
  p = 1 / len(pairs)
  assert (np.abs(pairs - trials * p) <= 5 * np.sqrt(trials * p * (1 - p))).all(), pairs
  u = jnp.asarray([5, 1, 3, 3, 3, 9, 0], jnp.uint32)
  np.testing.assert_array_equal(pv.smallest_keys(u, 3), [1, 2, 6])  # 0, 1, first 3
  np.testing.assert_array_equal(pv.smallest_keys(u, 5), [1, 2, 3, 4, 6])
  np.testing.assert_array_equal(pv.smallest_keys(u, 7), np.arange(7))
  big = jnp.asarray([2 ** 32 - 1, 2 ** 32 - 1, 7], jnp.uint32)
  np.testing.assert_array_equal(pv.smallest_keys(big, 2), [0, 2])


# -- non-finite and overflowing updates (issue 12, item 4) ----------------------------

special = st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e20, 0.0, 0.3, -1.0])


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.one_of(special, st.floats(-10, 10)), min_size=1, max_size=60),
       bits=st.integers(2, 10), clip=st.floats(0.05, 5.0), seed=st.integers(0, 2 ** 16))
def test_the_sensitivity_bound_holds_for_any_input_including_non_finite(values, bits, clip,
                                                                        seed):
  """Mask scale, clip and conditional quantization as the mechanism chains them: the
  centred codes' norm is at most Delta (what the accountant relies on), whatever the
  input, and a non-finite input is encoded exactly as the zero vector is."""
  x = jnp.asarray(values, jnp.float32)
  k = x.shape[0]
  delta = pv.rounding_norm_bound(clip, bits, k)
  p = pv.chain(pv.clip_l2(clip), pv.stochastic_quantize(bits, clip, delta))
  key = jax.random.key(seed)
  codes = np.asarray(p.encode(x * jnp.float32(1.7), key))  # a mask scale can overflow too
  assert codes.min() >= 0 and codes.max() <= 2 ** bits - 1
  assert np.linalg.norm(codes - pv.codes_center(bits)) <= delta * (1 + 1e-6)
  clipped = pv.clip_l2(clip).encode(x, key, pv.ClientContext())
  assert np.all(np.isfinite(np.asarray(clipped)))
  assert float(pv.global_norm(clipped)) <= clip * (1 + 1e-5)
  if not np.isfinite(float(pv.global_norm(x * jnp.float32(1.7)))):
    np.testing.assert_array_equal(codes, p.encode(jnp.zeros_like(x), key))


def test_clip_turns_overflowing_and_nan_updates_into_zeros():
  clip = pv.clip_l2(1.0)
  for bad in ([3e38, -3e38, 1.0], [np.nan, 0.0, 0.0], [np.inf, 1.0, 2.0], [1e20] * 3):
    out = clip.encode(jnp.asarray(bad, jnp.float32), None, pv.ClientContext())
    np.testing.assert_array_equal(out, 0.0)
  # A finite norm is clipped as usual (3e18^2 still fits a float32 sum of squares).
  out = clip.encode(jnp.asarray([3e18, 4e18], jnp.float32), None, pv.ClientContext())
  np.testing.assert_allclose(out, [0.6, 0.8], rtol=1e-6)


# -- the server's inverse of quantization ----------------------------------------------


@pytest.mark.parametrize("ring_bits", [32, 16])
def test_dequantize_sum_removes_the_centres_exactly_in_the_ring(ring_bits):
  bits, bound, n = 13, 0.5, 7  # centred sums fit 16 signed bits, uncentred ones do not
  rng = np.random.default_rng(0)
  codes = rng.integers(0, 2 ** bits, size=(n, 50)).astype(np.int32)
  noise = rng.integers(-40, 41, size=(n, 50)).astype(np.int32)
  per_client = codes + noise
  expect = (per_client - pv.codes_center(bits)).sum(0) * pv.quantizer_step(bits, bound)
  if ring_bits == 32:
    total = jnp.asarray(per_client).sum(0)  # an int32 sum
  else:  # ring elements, summed with wrap-around (the uncentred sum exceeds 2^15)
    total = pv.ring.to_ring(jnp.asarray(per_client), ring_bits).sum(0, dtype=jnp.uint32)
    assert int(per_client.sum(0).max()) >= 2 ** (ring_bits - 1)
  out = pv.dequantize_sum(total, jnp.float32(n), bits, bound, ring_bits)
  np.testing.assert_allclose(np.asarray(out), expect, rtol=1e-6, atol=1e-6)


# -- the discrete Gaussian sampler (issue 12, item 6) -----------------------------------


def test_exponentials_reach_the_far_tail_accurately():
  """E = -log(u) from 64 random bits: exact to ~4e-6 down to u = 2^-64 (E = 44.36),
  where a float32 uniform stops at E = 15.9."""
  hi = np.array([0, 0, 0, 1, 2 ** 8, 2 ** 20, 2 ** 31, 2 ** 32 - 1, 12345], np.uint64)
  lo = np.array([0, 1, 2 ** 31, 0, 7, 2 ** 32 - 1, 0, 2 ** 32 - 1, 999], np.uint64)
  e = np.asarray(pv.exponential_from_bits(jnp.asarray(hi, jnp.uint32),
                                          jnp.asarray(lo, jnp.uint32)))
  exact = np.array([-math.log((int(h) * 2 ** 32 + int(l) + 1) / 2 ** 64)
                    for h, l in zip(hi, lo)])
  np.testing.assert_allclose(e, exact, atol=5e-6)
  assert e[0] > 44.3 and e.min() >= 0.0


@pytest.mark.parametrize("sigma", [0.7, 2.5, 12.0])
def test_discrete_gaussian_tails_match_the_exact_pmf(sigma):
  """Chi-square over every atom with at least 20 expected draws (the rest pooled into
  the two tails), and the tail probabilities P(|Y| >= j sigma) for j = 1..4 within 5
  binomial standard errors, against the exact pmf."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  n = 1_000_000
  y = np.asarray(jax.jit(lambda k: pv.sample_discrete_gaussian(k, (n,), sigma))(
      jax.random.key(7)))
  support = np.arange(-int(40 * sigma) - 5, int(40 * sigma) + 6)
  pmf = np.exp(-support.astype(float) ** 2 / (2 * sigma ** 2))
  pmf /= pmf.sum()
  big = support[pmf * n >= 20]
  lo_cut, hi_cut = big.min(), big.max()
  observed = [(y < lo_cut).sum()] + [(y == a).sum() for a in big] + [(y > hi_cut).sum()]
  expect = np.array([pmf[support < lo_cut].sum()] + [pmf[support == a][0] for a in big] +
                    [pmf[support > hi_cut].sum()]) * n
  p = stats.chisquare(observed, expect).pvalue
  assert p > 1e-4, p
  for j in (1, 2, 3, 4):
    prob = pmf[np.abs(support) >= j * sigma].sum()
    count = (np.abs(y) >= j * sigma).sum()
    assert abs(count - n * prob) <= 5 * math.sqrt(n * prob * (1 - prob)) + 1, (j, count,
                                                                            n * prob)
