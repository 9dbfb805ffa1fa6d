"""FedQSN masks: ratios, the server mask fixed for the run, client masks fresh and nested."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedpriv import keys as keylib
from fedpriv.fedqsn import masks
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.fedqsn.units import ModelSpec, dense_spec

SPEC = ModelSpec(groups=(("a", 40), ("b", 512)),
                 unit_leaves=(("a/kernel", "a"), ("a/bias", "a"), ("b/kernel", "b")),
                 quantized=frozenset())


def test_num_dropped_is_floor_and_robust_to_float_rounding():
  assert masks.num_dropped(0.29, 100) == 29  # 0.29 * 100 = 28.999999999999996
  assert masks.num_dropped(0.5, 7) == 3
  assert masks.num_dropped(0.0, 10) == 0


@pytest.mark.parametrize("p1", [0.0, 0.1, 0.5, 0.9])
def test_server_mask_drops_exactly_floor_p1_units_per_layer(p1):
  keep = masks.server_mask(SPEC, jax.random.key(0), p1)
  for group, n in SPEC.groups:
    assert keep[group].shape == (n,)
    assert set(np.unique(np.asarray(keep[group]))) <= {0.0, 1.0}
    assert int(n - keep[group].sum()) == math.floor(p1 * n + 1e-9)


def test_server_mask_picks_units_uniformly():
  # Over many seeds every unit is dropped with frequency ~ p1 (binomial, 5 sigma).
  p1, draws = 0.3, 2000
  keeps = jax.vmap(lambda k: masks.server_mask(SPEC, k, p1)["a"])(
      jax.random.split(jax.random.key(1), draws))
  freq = 1.0 - np.asarray(keeps).mean(axis=0)
  p = masks.num_dropped(p1, 40) / 40
  assert np.abs(freq - p).max() < 5 * math.sqrt(p * (1 - p) / draws)


def test_client_mask_exact_drops_floor_p2_of_survivors_and_nests_in_server():
  server = masks.server_mask(SPEC, jax.random.key(2), 0.5)
  for seed in range(5):
    keep = masks.client_mask(SPEC, jax.random.key(seed), server, 0.3, "exact")
    for group, n in SPEC.groups:
      s, c = np.asarray(server[group]), np.asarray(keep[group])
      assert np.all(c <= s)  # zero wherever the server mask is
      assert int(s.sum() - c.sum()) == math.floor(0.3 * s.sum() + 1e-9)


def test_client_mask_bernoulli_ratio_is_p2_of_survivors():
  server = masks.server_mask(SPEC, jax.random.key(3), 0.25)
  p2, draws = 0.4, 400
  keeps = jax.vmap(lambda k: masks.client_mask(SPEC, k, server, p2, "bernoulli")["b"])(
      jax.random.split(jax.random.key(4), draws))
  keeps, s = np.asarray(keeps), np.asarray(server["b"])
  assert np.all(keeps <= s[None])
  alive = s.sum()
  dropped = 1.0 - keeps[:, s > 0].mean()
  assert abs(dropped - p2) < 5 * math.sqrt(p2 * (1 - p2) / (draws * alive))
  # Independent per unit: the dropped counts vary across clients (not a fixed number).
  assert len(np.unique(alive - keeps.sum(axis=1))) > 5


def test_client_mask_count_of_all_drops_floor_p2_of_all_units_from_the_survivors():
  # At p1 0.5, p2 0.2: 70% of each layer hidden (40 units: 20 + 8; 512: 256 + 102).
  server = masks.server_mask(SPEC, jax.random.key(5), 0.5)
  for seed in range(5):
    keep = masks.client_mask(SPEC, jax.random.key(seed), server, 0.2, "count_of_all")
    for group, n in SPEC.groups:
      s, c = np.asarray(server[group]), np.asarray(keep[group])
      assert np.all(c <= s)
      assert int(s.sum() - c.sum()) == math.floor(0.2 * n + 1e-9)
      assert int(c.sum()) == n - math.floor(0.5 * n) - math.floor(0.2 * n + 1e-9)


def test_client_mask_count_of_all_picks_a_uniform_subset_of_the_survivors():
  # 10 units, 5 survive the server, 2 of them dropped: each of the C(5, 2) = 10 kept
  # subsets is equally likely (every frequency within 5 sigma of 1/10).
  spec = ModelSpec(groups=(("a", 10),), unit_leaves=(("a/kernel", "a"),), quantized=frozenset())
  server = masks.server_mask(spec, jax.random.key(6), 0.5)
  draws = 4000
  keeps = np.asarray(jax.vmap(lambda k: masks.client_mask(spec, k, server, 0.2,
                                                          "count_of_all")["a"])(
      jax.random.split(jax.random.key(7), draws)))
  alive = np.flatnonzero(np.asarray(server["a"]))
  assert len(alive) == 5 and np.all(keeps.sum(axis=1) == 3)
  _, counts = np.unique(keeps[:, alive], axis=0, return_counts=True)
  assert len(counts) == 10
  freq = counts / draws
  assert np.abs(freq - 0.1).max() < 5 * math.sqrt(0.1 * 0.9 / draws)


def test_count_of_all_scaled_kept_units_are_unbiased_over_runs_and_clients():
  # E[keep * scale] over the server mask (a run's seed) and the client mask is 1 for
  # every unit with scale n / kept (40 units: 20 + 8 dropped, 12 kept), where the
  # official 1/((1-p1)(1-p2)) = 2.5 would give 0.75.
  p1, p2, draws = 0.5, 0.2, 3000
  server0 = masks.server_mask(SPEC, jax.random.key(0), p1)
  scale = masks.unit_scales(SPEC, server0, p1, p2, "count_of_all")["a"]
  assert scale == pytest.approx(40 / 12)
  assert masks.unit_scales(SPEC, server0, p1, p2, "exact")["a"] == pytest.approx(2.5)

  def one(k):
    server = masks.server_mask(SPEC, jax.random.fold_in(k, 0), p1)
    return masks.client_mask(SPEC, jax.random.fold_in(k, 1), server, p2, "count_of_all")["a"]

  keeps = np.asarray(jax.vmap(one)(jax.random.split(jax.random.key(8), draws)))
  q = 12 / 40
  assert np.all(keeps.sum(axis=1) == 12)
  per_unit = keeps.mean(axis=0) * scale
  assert np.abs(per_unit - 1.0).max() < 5 * scale * math.sqrt(q * (1 - q) / draws)


def test_count_of_all_that_would_keep_no_unit_is_refused():
  params = _mlp_params(hidden=8)
  spec = dense_spec(params, head="head")
  with pytest.raises(ValueError, match="leave no unit of 'hidden'"):
    FedQSNDownlink.make(spec, jax.eval_shape(lambda: params), keylib.base_key(0),
                        p1=0.5, p2=0.5, client_mask="count_of_all")


def _mlp_params(hidden=8):
  rng = np.random.default_rng(0)
  return {"hidden": {"kernel": jnp.asarray(rng.normal(size=(4, hidden)), jnp.float32),
                     "bias": jnp.asarray(rng.normal(size=(hidden,)), jnp.float32)},
          "head": {"kernel": jnp.asarray(rng.normal(size=(hidden, 3)), jnp.float32),
                   "bias": jnp.zeros((3,), jnp.float32)}}


def _downlink(p1=0.5, p2=0.5, variant="exact", seed=0, hidden=8):
  params = _mlp_params(hidden)
  spec = dense_spec(params, head="head")
  return FedQSNDownlink.make(spec, jax.eval_shape(lambda: params), keylib.base_key(seed),
                             p1=p1, p2=p2, client_mask=variant), params


@pytest.mark.parametrize("variant", ["exact", "bernoulli"])
def test_client_masks_differ_across_clients_and_rounds_server_mask_does_not(variant):
  downlink, params = _downlink(variant=variant, hidden=64)
  server = np.asarray(downlink.server_keep["hidden"])
  seen = []
  for rnd in (1, 2, 3):
    rkey = keylib.round_key(keylib.base_key(0), rnd)
    for cid in range(6):
      pkey = keylib.stage_key(keylib.client_key(rkey, cid), keylib.PROXY)
      received = downlink.client_model(params, pkey)
      vis = np.asarray(received.visible["hidden"]["kernel"][0])
      assert np.all(vis <= server)  # never a unit the server masks
      np.testing.assert_array_equal(np.asarray(received.params["hidden"]["kernel"])[:, server == 0], 0)
      seen.append(tuple(vis))
  # A fresh mask for every client in every round: 18 distinct masks (with 32 surviving
  # units of which half are kept, a repeat by chance has probability < 1e-6).
  assert len(set(seen)) == len(seen)
  # The server mask is a function of the seed alone: the same for a rebuilt downlink,
  # different for another seed.
  again, _ = _downlink(variant=variant, hidden=64)
  np.testing.assert_array_equal(again.server_keep["hidden"], server)
  other = np.asarray(_downlink(variant=variant, seed=1, hidden=64)[0].server_keep["hidden"])
  assert not np.array_equal(other, server)


def test_apply_mask_zeroes_dropped_units_and_scales_kept_ones():
  downlink, params = _downlink(p1=0.5, p2=0.0)
  keep = {"hidden": jnp.array([1, 0, 1, 1, 0, 0, 1, 0], jnp.float32)}
  out = masks.apply_mask(params, downlink.spec, keep, 2.0)
  k = np.asarray(keep["hidden"]) > 0
  np.testing.assert_array_equal(out["hidden"]["kernel"][:, ~k], 0.0)
  np.testing.assert_array_equal(out["hidden"]["bias"][~k], 0.0)
  np.testing.assert_allclose(out["hidden"]["kernel"][:, k], 2.0 * params["hidden"]["kernel"][:, k])
  np.testing.assert_allclose(out["hidden"]["bias"][k], 2.0 * params["hidden"]["bias"][k])
  np.testing.assert_array_equal(out["head"]["kernel"], params["head"]["kernel"])  # the head
  # A dropped unit's activation is zero for every input.
  x = jax.random.normal(jax.random.key(1), (5, 4))
  h = jax.nn.relu(x @ out["hidden"]["kernel"] + out["hidden"]["bias"])
  np.testing.assert_array_equal(h[:, ~k], 0.0)
