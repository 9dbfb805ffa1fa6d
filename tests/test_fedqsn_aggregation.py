"""FedQSN aggregation: per-coordinate means over the clients that saw a coordinate,
unseen coordinates untouched, and plain FedAvg when nothing is masked or quantized."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv.fedavg import ClientResult, FedAvg
from fedpriv.fedqsn import masks
from fedpriv.fedqsn.aggregation import FedQSNUplink
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.fedqsn.units import dense_spec


def make_algo(params, p1, p2, bits, mode, upload_bits=32, cohort=3, task=None):
  spec = dense_spec(params, head="head")
  down = FedQSNDownlink.make(spec, jax.eval_shape(lambda: params), keylib.base_key(0),
                             p1=p1, p2=p2, bits=bits, block_size=4)
  up = FedQSNUplink.make(down, mode, upload_bits)
  return FedAvg(task=task or tiny_task(), client_optimizer=optax.sgd(0.1),
                server_optimizer=optax.sgd(1.0), clients_per_round=cohort, local_epochs=2,
                batch_size=4, chunk_size=cohort, downlink=down, uplink=up)


@pytest.mark.parametrize("mode", ["delta", "average"])
def test_coordinates_no_client_saw_are_untouched(mode):
  task = tiny_task()
  params = task.init(jax.random.key(0))
  algo = make_algo(params, p1=0.5, p2=0.5, bits=2, mode=mode)
  pop = jax.tree.map(jnp.asarray, tiny_population([10, 7, 9, 8], seed=1))
  state, _ = jax.jit(algo.run_round)(algo.init(params), pop, keylib.base_key(0))
  server = np.asarray(algo.downlink.server_keep["hidden"]) > 0
  new, old = state.params["hidden"], params["hidden"]
  np.testing.assert_array_equal(np.asarray(new["kernel"])[:, ~server],
                                np.asarray(old["kernel"])[:, ~server])
  np.testing.assert_array_equal(np.asarray(new["bias"])[~server], np.asarray(old["bias"])[~server])
  # ... while the units clients saw did move.
  assert float(jnp.abs(new["kernel"] - old["kernel"])[:, server].max()) > 1e-4


def _hand_results(params, spec, keeps, trained, starts, weights):
  out = []
  for keep, t, s, w in zip(keeps, trained, starts, weights):
    vis = masks.visibility(params, spec, keep)
    out.append(ClientResult(s, t, vis, jnp.float32(w)))
  return out


@pytest.mark.parametrize("mode", ["delta", "average"])
def test_each_coordinate_is_the_weighted_mean_over_the_clients_that_saw_it(mode):
  task = tiny_task()
  params = task.init(jax.random.key(1))
  spec = dense_spec(params, head="head")
  up = FedQSNUplink(spec, mode)
  keeps = [{"hidden": jnp.array([1, 1, 0, 0, 0, 0, 0, 0], jnp.float32)},
           {"hidden": jnp.array([1, 0, 1, 0, 0, 0, 0, 0], jnp.float32)}]
  rng = np.random.default_rng(0)
  starts = [masks.apply_mask(params, spec, k) for k in keeps]
  trained = [jax.tree.map(lambda s, v: s + v * jnp.asarray(rng.normal(size=s.shape), s.dtype),
                          st, masks.visibility(params, spec, k)) for st, k in zip(starts, keeps)]
  weights = [3.0, 1.0]
  results = _hand_results(params, spec, keeps, trained, starts, weights)
  total = jax.tree.map(lambda *m: sum(m), *[up.encode(r, None, None) for r in results])
  new = jax.tree.map(jnp.add, params, up.decode(total, params, None, None))
  k_new, k_old = np.asarray(new["hidden"]["kernel"]), np.asarray(params["hidden"]["kernel"])
  t0, t1 = (np.asarray(t["hidden"]["kernel"]) for t in trained)
  s0, s1 = (np.asarray(s["hidden"]["kernel"]) for s in starts)
  if mode == "delta":
    unit0 = k_old[:, 0] + (3 * (t0 - s0)[:, 0] + 1 * (t1 - s1)[:, 0]) / 4
    unit1 = k_old[:, 1] + (t0 - s0)[:, 1]
    unit2 = k_old[:, 2] + (t1 - s1)[:, 2]
  else:  # the trained values replace the model's
    unit0 = (3 * t0[:, 0] + t1[:, 0]) / 4
    unit1, unit2 = t0[:, 1], t1[:, 2]
  np.testing.assert_allclose(k_new[:, 0], unit0, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(k_new[:, 1], unit1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(k_new[:, 2], unit2, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(k_new[:, 3:], k_old[:, 3:])  # nobody saw units 3..7
  # The head has no units: every client saw it; its update is the 3:1 weighted mean.
  h_new = np.asarray(new["head"]["kernel"])
  h_t = [np.asarray(t["head"]["kernel"]) for t in trained]
  h_s = [np.asarray(s["head"]["kernel"]) for s in starts]
  if mode == "delta":
    expect = np.asarray(params["head"]["kernel"]) + (3 * (h_t[0] - h_s[0]) + (h_t[1] - h_s[1])) / 4
  else:
    expect = (3 * h_t[0] + h_t[1]) / 4
  np.testing.assert_allclose(h_new, expect, rtol=1e-5, atol=1e-6)


def test_average_mode_writes_quantized_values_delta_mode_keeps_full_precision():
  # With zero local steps' worth of change (lr tiny), "average" replaces the model by
  # its quantized proxy while "delta" leaves it where it was.
  task = tiny_task()
  params = task.init(jax.random.key(2))
  spec = dense_spec(params, head="head")
  up_avg, up_delta = FedQSNUplink(spec, "average"), FedQSNUplink(spec, "delta")
  down = FedQSNDownlink.make(spec, jax.eval_shape(lambda: params), keylib.base_key(0),
                             bits=2, block_size=4)
  received = down.client_model(params, jax.random.key(0))
  r = ClientResult(received.params, received.params, received.visible, jnp.float32(5.0))
  for up, expected in ((up_avg, received.params), (up_delta, params)):
    total = up.encode(r, None, None)
    new = jax.tree.map(jnp.add, params, up.decode(total, params, None, None))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), new, expected)
  assert float(jnp.abs(received.params["hidden"]["kernel"] - params["hidden"]["kernel"]).max()) > 1e-3


@pytest.mark.parametrize("mode", ["delta", "average"])
def test_no_masking_no_quantization_is_plain_fedavg(mode):
  task = tiny_task()
  params = task.init(jax.random.key(3))
  algo = make_algo(params, p1=0.0, p2=0.0, bits=32, mode=mode)
  plain = FedAvg(task=task, client_optimizer=optax.sgd(0.1), server_optimizer=optax.sgd(1.0),
                 clients_per_round=3, local_epochs=2, batch_size=4, chunk_size=3)
  pop = jax.tree.map(jnp.asarray, tiny_population([10, 7, 9, 8, 5], seed=2))
  base = keylib.base_key(4)
  s_q, s_p = algo.init(params), plain.init(params)
  round_q, round_p = jax.jit(algo.run_round), jax.jit(plain.run_round)
  for _ in range(3):
    s_q, _ = round_q(s_q, pop, base)
    s_p, _ = round_p(s_p, pop, base)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               s_q.params, s_p.params)
  assert float(jnp.abs(s_q.params["head"]["kernel"] - params["head"]["kernel"]).max()) > 1e-3


def test_quantized_upload_is_nf_quantized():
  task = tiny_task()
  params = task.init(jax.random.key(4))
  spec = dense_spec(params, head="head")
  up = FedQSNUplink(spec, "average", upload_bits=2, block_size=4)
  sent = up.uploaded(params)
  assert len(np.unique(np.asarray(sent["hidden"]["kernel"]))) < len(
      np.unique(np.asarray(params["hidden"]["kernel"])))
  np.testing.assert_array_equal(sent["head"]["kernel"], params["head"]["kernel"])
