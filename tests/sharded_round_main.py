"""Run by test_sharding.py in its own process (fake CPU devices must be set before JAX
starts): three FedAvg rounds on 1 device and sharded over 2 and 4 devices, plain and
with the update-privacy uplink (quantized + central noise; and secure aggregation with
distributed noise, whose host step runs between sampling and the sharded round), and
SCAFFOLD, whose per-client control variates are gathered and scattered in the round)."""
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=4")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from conftest import tiny_population, tiny_task  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from fedpriv import algorithms, rounds  # noqa: E402
from fedpriv import keys as keylib  # noqa: E402
from fedpriv.cohort import client_mesh  # noqa: E402
from fedpriv.config import Config, PrivacyConfig  # noqa: E402
from fedpriv.fedavg import FedAvg  # noqa: E402
from fedpriv.privacy import setup  # noqa: E402

PRIVATE = {
    "plain": None,
    "quantized_central": PrivacyConfig(enabled=True, clip=0.5, bits=10, mask_ratio=0.3,
                                       noise="central", noise_multiplier=0.5),
    "secagg_distributed": PrivacyConfig(enabled=True, clip=0.5, bits=10, secagg=True,
                                        noise="distributed", noise_multiplier=0.5),
}


RULES = {"scaffold": algorithms.Scaffold(8, 0.1)}


def run(mesh, privacy=None, cohort=6, chunk=1, rule=None):
  pop = jax.tree.map(jnp.asarray, tiny_population([9, 5, 7, 8, 6, 4, 10, 3], seed=3))
  task = tiny_task()
  kw = {} if rule is None else {"rule": rule}
  if privacy is not None:
    cfg = Config(num_clients=8, clients_per_round=cohort, rounds=3, privacy=privacy)
    kw["uplink"], _ = setup.build(cfg, task, 8)
  algo = FedAvg(task=task, client_optimizer=optax.sgd(0.1),
                server_optimizer=optax.sgd(1.0), clients_per_round=cohort, local_epochs=2,
                batch_size=3, chunk_size=chunk, mesh=mesh, **kw)
  state = algo.init(task.init(jax.random.key(0)), noise_key=jax.random.key(9))
  if mesh is not None:  # as the driver does: replicated over the mesh
    state, pop = jax.device_put((state, pop), NamedSharding(mesh, P()))
  base = keylib.base_key(7)
  round_fn = rounds.compile_round(algo, state, pop, base, 1)
  for _ in range(3):
    state, m, _ = round_fn(state, pop, base)
  return (state.params, state.extra), float(m["train_loss"])


def main():
  assert jax.device_count() == 4, jax.devices()
  runs = [(name, privacy, None) for name, privacy in PRIVATE.items()]
  runs += [(name, None, rule) for name, rule in RULES.items()]
  for name, privacy, rule in runs:
    ref_params, ref_loss = run(None, privacy, rule=rule)
    worst = 0.0
    for n in (1, 2, 4):
      params, loss = run(client_mesh(n), privacy, rule=rule)
      diff = max(float(jnp.abs(a - b).max()) for a, b in
                 zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)))
      worst = max(worst, diff)
      print(f"{name} devices={n} max|diff|={diff:.3g} loss={loss:.6f} ref={ref_loss:.6f}")
      np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert worst < 1e-5, (name, worst)
  print("OK")


if __name__ == "__main__":
  main()
