"""The randomized Hadamard rotation before the quantizer (Kairouz, Liu & Steinke 2021):
orthogonal and exactly inverted, compiled once under vmap, commuting with the sum, far
smaller quantization error for a spiky update at few bits, signs from the public round
key only, out-of-range values counted (saturated, or carried by the ring), and the
refusals."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedpriv.config import ConfigError, PrivacyConfig
from fedpriv.privacy import privatizers as pv
from fedpriv.privacy.mechanism import make_mechanism


def _rotation_ctx(stage, key):
  return stage.round_context(key)


def test_rotation_is_orthogonal_and_its_inverse_exact():
  rng = np.random.default_rng(0)
  for size in (1, 5, 64, 1000):
    x = jnp.asarray(rng.normal(size=size) * 3.0, jnp.float32)
    rot = pv.hadamard_rotation(size)
    ctx = rot.round_context(jax.random.key(size))
    y = rot.encode(x, None, pv.ClientContext(ctx))
    assert y.shape == (pv.next_power_of_two(size),)
    np.testing.assert_allclose(float(jnp.linalg.norm(y)), float(jnp.linalg.norm(x)),
                               rtol=1e-5)
    back = rot.decode(y, None, pv.ServerContext(ctx))
    np.testing.assert_allclose(np.asarray(back), np.asarray(x), rtol=0, atol=1e-5)
  # H H = D I: the unnormalized transform applied twice scales by D.
  v = jnp.asarray(rng.normal(size=16), jnp.float32)
  np.testing.assert_allclose(np.asarray(pv.fwht(pv.fwht(v))), 16 * np.asarray(v), atol=1e-4)
  # and H is the Sylvester-Hadamard matrix: columns of fwht(I).
  h = np.asarray(pv.fwht(jnp.eye(8)))
  np.testing.assert_allclose(h @ h.T, 8 * np.eye(8), atol=1e-5)
  assert set(np.unique(h)) == {-1.0, 1.0}


def test_rotation_jits_and_vmaps_over_clients_without_retracing():
  size, clients = 100, 6
  rot = pv.chain(pv.clip_l2(1.0), pv.hadamard_rotation(size))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def round_sum(xs, public_key, keys):
    ctx = rot.round_context(public_key)
    ys = jax.vmap(lambda x, k: rot.encode(x, k, pv.ClientContext(ctx)))(xs, keys)
    return rot.decode(ys.sum(0), public_key, pv.ServerContext(ctx))

  rng = np.random.default_rng(1)
  for r in range(3):
    xs = jnp.asarray(rng.normal(size=(clients, size)) * 0.05, jnp.float32)
    keys = jax.random.split(jax.random.key(r), clients)
    out = round_sum(xs, jax.random.key(100 + r), keys)
    # norms under the clip: the rotated-then-inverted sum is the plain sum.
    np.testing.assert_allclose(np.asarray(out), np.asarray(xs.sum(0)), atol=1e-5)


def test_rotated_then_inverted_aggregate_equals_the_plain_aggregate():
  size, clients = 300, 5
  rng = np.random.default_rng(2)
  xs = jnp.asarray(rng.normal(size=(clients, size)), jnp.float32)  # norms ~17 > clip
  plain = pv.chain(pv.clip_l2(2.0))
  rotated = pv.chain(pv.clip_l2(2.0), pv.hadamard_rotation(size))
  key = jax.random.key(3)
  ctx = rotated.round_context(key)
  sums = []
  for chain, c in ((plain, plain.round_context(key)), (rotated, ctx)):
    ys = jax.vmap(lambda x: chain.encode(x, key, pv.ClientContext(c)))(xs)
    sums.append(chain.decode(ys.sum(0), key, pv.ServerContext(c)))
  assert sums[0].shape == sums[1].shape == (size,)
  np.testing.assert_allclose(np.asarray(sums[1]), np.asarray(sums[0]), atol=1e-5)


def _quantized_mse(rotate: bool, x, bits, clip, trials=24):
  size = x.shape[0]
  mech = make_mechanism(
      PrivacyConfig(enabled=True, clip=clip, bits=bits,
                    rotation="hadamard" if rotate else "none"),
      num_clients=10, cohort=1, rounds=1, size=size)
  chain = mech.privatizer()
  errs = []
  for t in range(trials):
    ctx = chain.round_context(jax.random.key(1000 + t))
    codes = pv.without_diagnostics(chain.encode(x, jax.random.key(t), pv.ClientContext(ctx)))
    out = chain.decode(codes, jax.random.key(t), pv.ServerContext(ctx, None, 1.0))
    errs.append(float(jnp.sum(jnp.square(out - x))))
  return float(np.mean(errs)), mech


def test_rotation_shrinks_the_quantization_error_of_a_spiky_update_at_few_bits():
  size, clip, bits = 1000, 1.0, 4
  x = np.full(size, 1e-3, np.float32)
  x[17] = 0.9  # one spike carries almost all of the norm
  x = jnp.asarray(x * (clip / np.linalg.norm(x)), jnp.float32)
  plain, m0 = _quantized_mse(False, x, bits, clip)
  rotated, m1 = _quantized_mse(True, x, bits, clip)
  # The step shrinks by sqrt(D) / t = 32 / 4 = 8, the rounding variance by ~64 (the
  # padding adds 24 coordinates): measured mean squared errors over 24 draws each.
  assert m1.step == pytest.approx(m0.step * 4.0 / math.sqrt(1024))
  assert rotated < plain / 20, (rotated, plain)
  # The mean error is what randomized rounding predicts: at most D step^2 / 4.
  assert rotated <= 1024 * m1.step ** 2 / 4 * 1.2


def test_rotation_signs_come_from_the_public_round_key_only():
  size = 50
  rot = pv.hadamard_rotation(size)
  x = jnp.linspace(-1.0, 1.0, size)
  a = rot.round_context(jax.random.key(7))
  b = rot.round_context(jax.random.key(7))
  c = rot.round_context(jax.random.key(8))
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(np.asarray(a), np.asarray(c))
  # The client's own (secret) key does not enter: two clients rotate identically.
  y1 = rot.encode(x, jax.random.key(1), pv.ClientContext(a))
  y2 = rot.encode(x, jax.random.key(2), pv.ClientContext(a))
  chex.assert_trees_all_equal(y1, y2)
  # In the mechanism's chain the signs are part of the public round context.
  mech = make_mechanism(PrivacyConfig(enabled=True, bits=8, rotation="hadamard"),
                        num_clients=10, cohort=2, rounds=1, size=size)
  ctx1 = mech.privatizer().round_context(jax.random.key(5))
  ctx2 = mech.privatizer().round_context(jax.random.key(5))
  chex.assert_trees_all_equal(ctx1, ctx2)


def test_out_of_range_values_are_counted_and_rare_at_four_sigmas():
  size, clip = 4096, 1.0
  mech = make_mechanism(PrivacyConfig(enabled=True, clip=clip, bits=6, rotation="hadamard"),
                        num_clients=10, cohort=1, rounds=1, size=size)
  assert mech.dim == 4096 and mech.quantizer_range == pytest.approx(4 * clip / 64)
  chain = mech.privatizer()
  rng = np.random.default_rng(4)
  counts = []
  for t in range(8):
    x = jnp.asarray(rng.standard_t(2, size=size), jnp.float32)  # heavy-tailed
    ctx = chain.round_context(jax.random.key(t))
    out = chain.encode(x * 10.0, jax.random.key(t), pv.ClientContext(ctx))
    assert isinstance(out, pv.Diagnosed)
    codes, n = out.value, int(out.diagnostics["beyond_range"])
    assert int(codes.min()) >= 0 and int(codes.max()) <= 63  # saturated: 6 bits
    # the count is exactly the coordinates beyond R after clip and rotation
    y = pv.hadamard_rotate(x * 10.0 * min(1.0, clip / float(jnp.linalg.norm(x * 10.0))),
                           ctx[1])
    assert n == int(jnp.sum(jnp.abs(y) > mech.quantizer_range))
    counts.append(n)
  # sub-Gaussian tail: P(|y_j| > 4 C / sqrt(D)) <= 2 exp(-8) = 6.7e-4 per coordinate.
  assert np.mean(counts) / size <= 2 * math.exp(-8)


def test_without_saturation_the_ring_carries_out_of_range_codes():
  # Two clients, 4-bit codes over [-1, 1]; one value lies far beyond the range. Saturated
  # codes lose it; unsaturated codes summed in a 12-bit ring keep the sum.
  x = jnp.asarray([[3.0, 0.2], [-2.5, 0.1]], jnp.float32)
  want = np.asarray(x.sum(0))
  for saturate, close in ((False, True), (True, False)):
    q = pv.stochastic_quantize(4, 1.0, ring_bits=12, saturate=saturate, count_beyond=True)
    outs = [q.encode(x[i], jax.random.key(i), pv.ClientContext()) for i in range(2)]
    assert [int(o.diagnostics["beyond_range"]) for o in outs] == [1, 1]
    total = pv.ring.to_ring(outs[0].value + outs[1].value, 12)
    got = np.asarray(q.decode(total, None, pv.ServerContext(None, None, 2.0)))
    step = pv.quantizer_step(4, 1.0)
    assert (np.abs(got - want).max() <= 2 * step) == close, (saturate, got)


def test_rotated_mechanism_sizes_and_ledger():
  from fedpriv.privacy import ledger  # pylint: disable=import-outside-toplevel
  size = 1500
  plain = make_mechanism(PrivacyConfig(enabled=True, bits=8, mask_ratio=0.5),
                         num_clients=100, cohort=10, rounds=5, size=size)
  rot = make_mechanism(PrivacyConfig(enabled=True, bits=8, mask_ratio=0.5,
                                     rotation="hadamard", rotation_sigmas=3.0),
                       num_clients=100, cohort=10, rounds=5, size=size)
  assert plain.dim == plain.keep == 750 and rot.dim == 1024
  assert rot.quantizer_range == pytest.approx(3.0 / 32)
  assert ledger.vector_bits(rot) == 1024 * 8 and ledger.vector_bits(plain) == 750 * 8
  assert rot.saturates
  sec = make_mechanism(PrivacyConfig(enabled=True, bits=8, rotation="hadamard", secagg=True,
                                     noise="distributed", noise_multiplier=1.0),
                       num_clients=100, cohort=10, rounds=5, size=size)
  assert not sec.saturates
  # Conditional rounding's bound: c = C / step levels in D dimensions.
  c = 1.0 / sec.step
  assert sec.level_bound >= math.sqrt(c * c + sec.dim / 4)
  assert sec.l2_bound == pytest.approx(sec.level_bound * sec.step)


def test_refusals():
  with pytest.raises(ConfigError, match="rotation"):
    PrivacyConfig(enabled=True, rotation="hadamard")  # no bits
  with pytest.raises(ConfigError, match="rotation"):
    PrivacyConfig(enabled=True, bits=8, rotation="dct")
  with pytest.raises(ConfigError, match="rotation_sigmas"):
    PrivacyConfig(enabled=True, bits=8, rotation="hadamard", rotation_sigmas=0.5)
  with pytest.raises(ConfigError, match="rotation_sigmas"):
    PrivacyConfig(enabled=True, bits=8, rotation_sigmas=3.0)  # no rotation to size
  with pytest.raises(ValueError, match="power-of-two"):
    pv.fwht(jnp.ones(6))
  with pytest.raises(ValueError, match="size"):
    pv.hadamard_rotation(0)
  rot = pv.hadamard_rotation(10)
  with pytest.raises(ValueError, match="expected a vector of 10"):
    rot.encode(jnp.ones(12), None, pv.ClientContext(rot.round_context(jax.random.key(0))))
