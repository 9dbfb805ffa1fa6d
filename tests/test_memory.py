"""The round's working memory depends on the chunk size, not on the cohort size
(XLA's compiled memory statistics, not timings)."""
import jax
import jax.numpy as jnp
import optax

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv.fedavg import FedAvg


def _temp_bytes(cohort: int, chunk: int, pop) -> int:
  algo = FedAvg(task=tiny_task(), client_optimizer=optax.sgd(0.1),
                server_optimizer=optax.sgd(1.0), clients_per_round=cohort, local_epochs=1,
                batch_size=4, chunk_size=chunk)
  state = algo.init(algo.task.init(jax.random.key(0)))
  compiled = jax.jit(algo.run_round).lower(state, pop, keylib.base_key(0)).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_temp_memory_is_flat_in_the_cohort_size():
  pop = jax.tree.map(jnp.asarray, tiny_population([8] * 512))
  small, large = _temp_bytes(8, 4, pop), _temp_bytes(512, 4, pop)
  # 64x more clients: a few bytes per client of bookkeeping at most.
  assert large - small < 16 * 512, (small, large)
  # The check can see growth: vmapping the whole cohort at once needs far more.
  assert _temp_bytes(512, 512, pop) > 4 * large
