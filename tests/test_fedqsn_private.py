"""FedQSN proxies down with update privacy up: the combined uplink, the `full` preset,
and what the config refuses."""

import chex
import jax
import jax.numpy as jnp
import pytest
from jax.flatten_util import ravel_pytree

from conftest import tiny_task
from fedpriv.config import Config, ConfigError, PrivacyConfig
from fedpriv.fedavg import ClientResult
from fedpriv.fedqsn.aggregation import FedQSNUplink
from fedpriv.fedqsn.private_uplink import PrivateProxyUplink
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.fedqsn.units import dense_spec
from fedpriv.privacy.mechanism import make_mechanism
from fedpriv.privacy.uplink import PrivateUplink
from launch.configs import fashion_mnist as fmnist_presets


def test_without_clipping_or_noise_the_private_uplink_is_fedqsn_delta_aggregation():
  # Equal weights, no client mask: FedQSN's per-coordinate "delta" mean and the private
  # uplink's per-client mean (of updates in the model coordinates) agree.
  task = tiny_task()
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  down = FedQSNDownlink.make(dense_spec(shapes, head="head"), shapes, jax.random.key(1),
                             p1=0.5, p2=0.0, bits=4, block_size=4)
  params = task.init(jax.random.key(2))
  flat, unravel = ravel_pytree(params)
  mech = make_mechanism(PrivacyConfig(enabled=True, clip=1e6), num_clients=8, cohort=4,
                        rounds=1, size=int(flat.shape[0]))
  private = PrivateProxyUplink.make(PrivateUplink(mech, unravel), down)
  plain = FedQSNUplink.make(down, "delta", 32)
  key = jax.random.key(3)
  ctx = (private.round_context(params, key, private.init_state()), None)
  messages = {"plain": [], "private": []}
  for c in range(4):
    received = down.client_model(params, jax.random.fold_in(key, c))
    noise = jax.tree.map(lambda v, k=c: 0.1 * jax.random.normal(jax.random.key(k), v.shape),
                         received.params)
    trained = jax.tree.map(lambda p, n, v: p + n * v, received.params, noise, received.visible)
    result = ClientResult(received.params, trained, received.visible, jnp.float32(5.0))
    messages["plain"].append(plain.encode(result, key, None))
    messages["private"].append(private.encode(result, key, ctx))
  total = {k: jax.tree.map(lambda *m: sum(m), *v) for k, v in messages.items()}
  got = private.decode(total["private"], params, key, ctx)
  want = plain.decode(total["plain"], params, key, None)
  assert max(float(jnp.abs(w).max()) for w in jax.tree.leaves(want)) > 1e-2
  chex.assert_trees_all_close(got, want, atol=1e-6)


def test_full_preset_is_a_valid_config_with_both_tiers():
  # It runs end to end in test_fedqsn_launch (its privacy group, on a tiny model).
  cfg = Config.from_dict(fmnist_presets.get_config("full").to_dict())
  assert cfg.fedqsn.enabled and cfg.privacy.enabled and cfg.fedqsn.aggregation == "delta"


@pytest.mark.parametrize("fedqsn,needle", [
    ({"aggregation": "average"}, "config.fedqsn.aggregation: must be 'delta' with update"),
    ({"upload_bits": 4}, "config.fedqsn.upload_bits: must be 32 with update privacy"),
])
def test_combinations_that_cannot_work_are_refused(fedqsn, needle):
  values = fmnist_presets.get_config("full").to_dict()
  values["fedqsn"].update(fedqsn)
  with pytest.raises(ConfigError, match=needle):
    Config.from_dict(values)
