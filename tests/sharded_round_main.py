"""Run by test_sharding.py in its own process (fake CPU devices must be set before JAX
starts): three FedAvg rounds on 1 device and sharded over 2 and 4 devices."""
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
from fedpriv import keys as keylib  # noqa: E402
from fedpriv.cohort import client_mesh  # noqa: E402
from fedpriv.fedavg import FedAvg  # noqa: E402


def run(mesh, cohort=6, chunk=1):
  pop = jax.tree.map(jnp.asarray, tiny_population([9, 5, 7, 8, 6, 4, 10, 3], seed=3))
  algo = FedAvg(task=tiny_task(), client_optimizer=optax.sgd(0.1),
                server_optimizer=optax.sgd(1.0), clients_per_round=cohort, local_epochs=2,
                batch_size=3, chunk_size=chunk, mesh=mesh)
  state = algo.init(algo.task.init(jax.random.key(0)))
  fn = jax.jit(algo.run_round)
  for _ in range(3):
    state, m = fn(state, pop, keylib.base_key(7))
  return state.params, float(m["train_loss"])


def main():
  assert jax.device_count() == 4, jax.devices()
  ref_params, ref_loss = run(None)
  worst = 0.0
  for n in (1, 2, 4):
    params, loss = run(client_mesh(n))
    diff = max(float(jnp.abs(a - b).max()) for a, b in
               zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)))
    worst = max(worst, diff)
    print(f"devices={n} max|diff|={diff:.3g} loss={loss:.6f} ref={ref_loss:.6f}")
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  assert worst < 1e-5, worst
  print("OK")


if __name__ == "__main__":
  main()
