"""The FedQSN downlink inside FedAvg: one vmapped call builds the cohort's proxies,
masked units stay zero through local training, and p1=p2=0, bits=32 is the model itself."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv import links
from fedpriv.fedavg import FedAvg
from fedpriv.fedqsn.proxy import FedQSNDownlink, cohort_proxies
from fedpriv.fedqsn.units import dense_spec


def make_downlink(params, **kw):
  spec = dense_spec(params, head="head")
  return FedQSNDownlink.make(spec, jax.eval_shape(lambda: params), keylib.base_key(0), **kw)


@pytest.mark.parametrize("variant", ["exact", "bernoulli"])
def test_vmapped_cohort_proxies_equal_a_per_client_loop(variant):
  task = tiny_task()
  params = task.init(jax.random.key(0))
  downlink = make_downlink(params, p1=0.25, p2=0.5, client_mask=variant, bits=3, block_size=2)
  rkey = keylib.round_key(keylib.base_key(0), 4)
  ckeys = jax.vmap(lambda c: keylib.client_key(rkey, c))(jnp.arange(5))
  batch, bits = jax.jit(lambda p, k: cohort_proxies(downlink, p, k))(params, ckeys)
  for i in range(5):
    one = downlink.client_model(params, keylib.stage_key(ckeys[i], keylib.PROXY))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[i], b), batch, one)
    keep = downlink.client_keep(keylib.stage_key(ckeys[i], keylib.PROXY))
    assert int(bits[i]) == int(downlink.message_bits(keep))
  # Different clients got different proxies.
  k = np.asarray(batch.params["hidden"]["kernel"])
  assert any(not np.array_equal(k[0], k[i]) for i in range(1, 5))


def test_no_masking_no_quantization_is_the_model_itself():
  task = tiny_task()
  params = task.init(jax.random.key(1))
  downlink = make_downlink(params, p1=0.0, p2=0.0, bits=32)
  received = downlink.client_model(params, jax.random.key(3))
  jax.tree.map(np.testing.assert_array_equal, received.params, params)
  assert all(np.all(np.asarray(v) == 1) for v in jax.tree.leaves(received.visible))
  assert set(downlink.scale.values()) == {1.0}
  assert all(np.all(np.asarray(f) == 1) for f in jax.tree.leaves(received.factors))


def test_masked_units_stay_zero_through_local_training():
  seen = {}

  class Recorder(links.Uplink):
    bits_per_param = 32.0

    def encode(self, result, key, context):
      return {"trained": result.trained, "start": result.start, "visible": result.visible}

    def decode(self, total, params, key, context):
      seen.update(total)
      return jax.tree.map(jnp.zeros_like, params)

  task = tiny_task()
  params = task.init(jax.random.key(2))
  downlink = make_downlink(params, p1=0.25, p2=0.5, bits=4, block_size=4)
  algo = FedAvg(task=task, client_optimizer=optax.adam(0.05), server_optimizer=optax.sgd(1.0),
                clients_per_round=1, local_epochs=3, batch_size=4, downlink=downlink,
                uplink=Recorder())
  pop = jax.tree.map(jnp.asarray, tiny_population([12, 12], seed=3))
  algo.run_round(algo.init(params), pop, keylib.base_key(0))
  vis = np.asarray(seen["visible"]["hidden"]["bias"]) > 0
  assert 0 < vis.sum() < vis.size
  trained, start = seen["trained"]["hidden"], seen["start"]["hidden"]
  np.testing.assert_array_equal(np.asarray(trained["kernel"])[:, ~vis], 0.0)
  np.testing.assert_array_equal(np.asarray(trained["bias"])[~vis], 0.0)
  assert float(jnp.abs(trained["kernel"] - start["kernel"])[:, vis].max()) > 1e-3
