"""Secure aggregation: Shamir sharing, key agreement, exact sums with and without
dropouts, clear failure beyond the threshold, and masked vectors that look uniform."""
from __future__ import annotations

import collections
import itertools
import math
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from scipy import stats

from fedpriv.privacy import secagg as sa

RING = 16


def test_shamir_any_t_shares_rebuild_and_fewer_refuse():
  secret = 2 ** 255 + 12345
  shares = sa.shamir_split(secret, [1, 2, 3, 4, 5], threshold=3)
  for subset in itertools.combinations(shares.items(), 3):
    assert sa.shamir_combine(dict(subset), 3) == secret
  with pytest.raises(sa.SecAggError, match="2 shares cannot rebuild"):
    sa.shamir_combine(dict(list(shares.items())[:2]), 3)


def test_any_t_minus_1_shares_are_uniform_whatever_the_secret(monkeypatch):
  """Over GF(13), threshold 3, shares at x = 1..5: enumerating all 13^2 draws of the two
  random coefficients, every pair of shares takes every value in GF(13)^2 exactly once,
  for every one of the 13 secrets. So t-1 shares are consistent with every secret, each
  equally likely: they say nothing about it. (A split whose coefficients depended on
  the secret, or that reused a coefficient, fails this.)"""
  p, t, xs = 13, 3, [1, 2, 3, 4, 5]
  for secret in range(p):
    seen = {pair: collections.Counter() for pair in itertools.combinations(xs, t - 1)}
    for draw in itertools.product(range(p), repeat=t - 1):
      coefficients = iter(draw)
      monkeypatch.setattr(sa.secrets, "randbelow", lambda bound: next(coefficients))
      shares = sa.shamir_split(secret, xs, t, prime=p)
      for pair, counter in seen.items():
        counter[tuple(shares[x] for x in pair)] += 1
      for subset in itertools.combinations(xs, t):  # and t of them rebuild it
        assert sa.shamir_combine({x: shares[x] for x in subset}, t, prime=p) == secret
    for counter in seen.values():
      assert len(counter) == p ** (t - 1) and set(counter.values()) == {1}


def test_key_agreement_gives_both_sides_the_same_seed():
  a, b, c = (X25519PrivateKey.generate() for _ in range(3))
  pub = lambda k: k.public_key().public_bytes_raw()
  np.testing.assert_array_equal(sa.mask_seed(a, pub(b), 7), sa.mask_seed(b, pub(a), 7))
  assert not np.array_equal(sa.mask_seed(a, pub(b), 7), sa.mask_seed(a, pub(c), 7))
  assert not np.array_equal(sa.mask_seed(a, pub(b), 7), sa.mask_seed(a, pub(b), 8))


def _secure_sum(x, m, degree, threshold, dropped, seed=0):
  """Runs the protocol on integer rows `x [M, k]`; returns (decoded sum, masked rows)."""
  setup = sa.run_setup(m, x.shape[0], degree, threshold, dropped, 1,
                       np.random.default_rng(seed))
  masked = jax.vmap(lambda xv, ps, sg, ss: sa.mask_vector(sa.to_ring(xv, RING), ps, sg, ss,
                                                          RING))(
      jnp.asarray(x), setup.client.pair_seeds, setup.client.pair_signs,
      setup.client.self_seed)
  masked = jnp.where(setup.client.survived[:, None], masked, 0)
  total = masked.sum(0, dtype=jnp.uint32)  # what the server receives: one sum
  out = sa.from_ring(sa.unmask_sum(total, setup.server, RING), RING)
  return np.asarray(out), np.asarray(masked), setup


def _rows(m, padded, k, seed=0):
  x = np.random.default_rng(seed).integers(-300, 300, size=(padded, k)).astype(np.int32)
  x[m:] = 0
  return x


@pytest.mark.parametrize("degree", [0, 4])
def test_secure_sum_is_exact_without_dropouts(degree):
  m, k = 9, 500
  x = _rows(m, 10, k)
  out, _, setup = _secure_sum(x, m, degree, 4, [])
  np.testing.assert_array_equal(out, x[:m].sum(0))
  assert int(setup.server.survivors) == m


def test_secure_sum_is_exact_with_up_to_n_minus_t_dropouts_and_fails_beyond():
  m, k, t = 8, 300, 5
  x = _rows(m, 8, k, seed=1)
  rng = np.random.default_rng(2)
  for n_drop in range(0, m - t + 1):
    dropped = rng.choice(m, n_drop, replace=False)
    out, _, setup = _secure_sum(x, m, 0, t, dropped)
    keep = np.setdiff1d(np.arange(m), dropped)
    np.testing.assert_array_equal(out, x[keep].sum(0))
    assert int(setup.server.survivors) == m - n_drop
  with pytest.raises(sa.SecAggError, match="fewer than the threshold 5: the round fails"):
    _secure_sum(x, m, 0, t, np.arange(m - t + 1))


def test_masked_vectors_look_uniform_and_differ_from_the_plain_ones():
  m, k = 5, 40_000
  x = _rows(m, 5, k, seed=3)
  x[0] = 7  # a constant vector: nothing random about it before masking
  _, masked, _ = _secure_sum(x, m, 0, 3, [])
  plain = np.asarray(sa.to_ring(jnp.asarray(x[0]), RING))
  assert (masked[0] == plain).mean() < 1e-3  # ~2^-16 by chance
  # Chi-square over 256 equal bins of Z_2^16: uniform at a generous significance.
  counts = np.bincount(masked[0] >> (RING - 8), minlength=256)
  assert stats.chisquare(counts).pvalue > 1e-4
  # The plain vector is a single bin: the same test rejects it.
  plain_counts = np.bincount(plain >> (RING - 8), minlength=256)
  assert stats.chisquare(plain_counts).pvalue < 1e-10


def test_sparse_graph_and_message_sizes():
  m, degree, t = 10, 4, 3
  setup = sa.run_setup(m, m, degree, t, [3], 5, np.random.default_rng(0))
  signs = np.asarray(setup.client.pair_signs)
  assert ((signs != 0).sum(1) == degree).all()
  # Pairwise signs are antisymmetric: one adds, the other subtracts, the same seed.
  seeds = np.asarray(setup.client.pair_seeds)
  pairs = {}
  for u in range(m):
    for j in range(degree):
      pairs.setdefault(tuple(seeds[u, j]), []).append(signs[u, j])
  assert all(sorted(s) == [-1, 1] for s in pairs.values())
  # Bytes: advert (id + 2 keys) + per neighbour one AES-GCM ciphertext of (2 ids, 2
  # shares) + when unmasking one (id, share) per neighbour and for itself.
  share = sa.SHARE_BYTES
  ct = 12 + (8 + 2 * share) + 16
  answer = 4 + share
  up = np.asarray(setup.uplink_bytes)
  dropped = 3
  for u in range(m):
    expect = 4 + 64 + degree * ct + (0 if u == dropped else (degree + 1) * answer)
    assert up[u] == expect, (u, up[u], expect)
  assert struct.calcsize(">I") == 4


def test_ring_sizing_holds_the_worst_case_sum():
  bits = sa.required_ring_bits(clients=100, max_abs=2047.5, noise_std=0.0)
  assert 100 * 2047.5 < 2 ** (bits - 1) and 100 * 2047.5 >= 2 ** (bits - 2)
  with_noise = sa.required_ring_bits(100, 2047.5, noise_std=1e5)
  assert 100 * 2047.5 + 10 * 1e5 < 2 ** (with_noise - 1)
  # from_ring / to_ring are inverse on [-2^(k-1), 2^(k-1)).
  v = jnp.arange(-2 ** 15, 2 ** 15, 97, dtype=jnp.int32)
  np.testing.assert_array_equal(sa.from_ring(sa.to_ring(v, RING), RING), v)
  assert math.isclose(sa.PRIME % 2, 1)
