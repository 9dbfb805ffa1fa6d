"""Rebuilding a round's clients outside the round gives exactly what the round computed,
and the attackers' combination of proxies follows its definition."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv import links
from fedpriv.fedavg import FedAvg
from fedpriv.fedqsn import masks, replay
from fedpriv.fedqsn.attacks import Combination, combine
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.fedqsn.units import dense_spec


def _algo(params, uplink):
  spec = dense_spec(params, head="head")
  down = FedQSNDownlink.make(spec, jax.eval_shape(lambda: params), keylib.base_key(0),
                             p1=0.25, p2=0.5, bits=3, block_size=4, client_mask="bernoulli")
  return FedAvg(task=tiny_task(), client_optimizer=optax.adam(0.05),
                server_optimizer=optax.sgd(1.0), clients_per_round=3, local_epochs=2,
                batch_size=4, chunk_size=3, downlink=down, uplink=uplink)


def test_replayed_clients_equal_the_round():

  class Recorder(links.Uplink):
    """Makes the round's new model the cohort's sum of `field` (trained or start)."""
    bits_per_param = 32.0

    def __init__(self, field):
      self.field = field

    def encode(self, result, key, context):
      return getattr(result, self.field)

    def decode(self, total, params, key, context):
      return jax.tree.map(jnp.subtract, total, params)  # server SGD(1): params + this

  task = tiny_task()
  params = task.init(jax.random.key(0))
  pop = jax.tree.map(jnp.asarray, tiny_population([9, 6, 11, 7, 8], seed=4))
  base = keylib.base_key(7)
  seen = {}
  for field in ("trained", "start"):
    algo = _algo(params, Recorder(field))
    state = algo.init(params)._replace(round=jnp.int32(2))  # the round run is round 3
    seen[field] = jax.jit(algo.run_round)(state, pop, base)[0].params
  cohort = replay.round_cohort(algo, base, 3, 5)
  replay_all = jax.jit(jax.vmap(lambda c, k: replay.replay_client(algo, params, pop, c, k)))
  received, trained = replay_all(cohort.client_ids, cohort.keys)
  total_trained = jax.tree.map(lambda t: t.sum(0), trained)
  total_start = jax.tree.map(lambda t: t.sum(0), received.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               total_trained, seen["trained"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               total_start, seen["start"])
  # Another round's replay is different (so the comparison above can fail).
  other = replay.round_cohort(algo, base, 4, 5)
  _, t4 = replay_all(other.client_ids, other.keys)
  assert float(jnp.abs(jax.tree.map(lambda t: t.sum(0), t4)["hidden"]["kernel"]
                       - seen["trained"]["hidden"]["kernel"]).max()) > 1e-4


def test_combining_proxies_averages_seen_values_and_refills_unseen_units():
  task = tiny_task()
  params = task.init(jax.random.key(1))
  spec = dense_spec(params, head="head")
  keep_a = {"hidden": jnp.array([1, 1, 0, 0, 1, 0, 0, 0], jnp.float32)}
  keep_b = {"hidden": jnp.array([1, 0, 1, 0, 0, 0, 0, 0], jnp.float32)}
  pa = masks.apply_mask(params, spec, keep_a)
  pb = jax.tree.map(lambda x: x + 1.0, masks.apply_mask(params, spec, keep_b))
  pb = masks.apply_mask(pb, spec, keep_b)  # b's values differ on what b sees
  c = (Combination.of(pa, masks.visibility(params, spec, keep_a))
       + Combination.of(pb, masks.visibility(params, spec, keep_b)))
  fresh = jax.tree.map(lambda x: jnp.full_like(x, 7.0), params)
  out = combine(c, spec, fresh)
  k = np.asarray(out["hidden"]["kernel"])
  w = np.asarray(params["hidden"]["kernel"])
  wb = np.asarray(pb["hidden"]["kernel"])
  rescale = 8 / 4  # units 0, 1, 2, 4 seen of 8
  np.testing.assert_allclose(k[:, 0], rescale * (w[:, 0] + wb[:, 0]) / 2, rtol=1e-6)
  np.testing.assert_allclose(k[:, 1], rescale * w[:, 1], rtol=1e-6)
  np.testing.assert_allclose(k[:, 2], rescale * wb[:, 2], rtol=1e-6)
  np.testing.assert_allclose(k[:, 4], rescale * w[:, 4], rtol=1e-6)
  np.testing.assert_array_equal(k[:, [3, 5, 6, 7]], 7.0)  # nobody saw them: fresh init
  # The head (no units) is seen by both: plain average, no rescale.
  np.testing.assert_allclose(out["head"]["kernel"],
                             (np.asarray(pa["head"]["kernel"]) + np.asarray(pb["head"]["kernel"])) / 2,
                             rtol=1e-6)
