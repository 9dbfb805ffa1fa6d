"""The round's working memory depends on the chunk size, not on the cohort size
(XLA's compiled memory statistics, not timings), and a round that will not fit is
refused before it runs."""
import os

import jax
import jax.numpy as jnp
import optax
import pytest

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv import train
from fedpriv.config import ConfigError
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


def _compiled_round(cohort: int, chunk: int, pop):
  algo = FedAvg(task=tiny_task(), client_optimizer=optax.sgd(0.1),
                server_optimizer=optax.sgd(1.0), clients_per_round=cohort, local_epochs=1,
                batch_size=4, chunk_size=chunk)
  state = algo.init(algo.task.init(jax.random.key(0)))
  return jax.jit(algo.run_round, donate_argnums=0).lower(state, pop, keylib.base_key(0)).compile()


def test_a_round_that_does_not_fit_is_refused_with_the_estimate_and_the_limit():
  pop = jax.tree.map(jnp.asarray, tiny_population([8] * 64))
  small, large = _compiled_round(64, 4, pop), _compiled_round(64, 64, pop)
  device = jax.local_devices()[0]
  need = train.check_memory(small, device=device, available=(2**40, "plenty"))
  assert need > 0
  # The same limit refuses the chunk that vmaps the whole cohort at once.
  limit = train.check_memory(large, device=device, available=(2**40, "plenty")) - 1
  assert need <= limit
  train.check_memory(small, device=device, available=(limit, "test limit"))
  with pytest.raises(ConfigError, match=r"config\.chunk_size: .* GiB .*GiB is test limit"):
    train.check_memory(large, device=device, available=(limit, "test limit"))
  free, where = train.available_memory(device)
  assert 0 < free < 2**50 and where


def test_the_driver_refuses_before_the_first_round(tmp_path, monkeypatch):
  from tiny_run_main import tiny_experiment  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(train, "available_memory", lambda device: (1024, "a test's limit"))
  with pytest.raises(ConfigError, match="a test's limit"):
    train.run(tiny_experiment(), tmp_path / "wd", log=lambda *a: None)
  assert not (tmp_path / "wd" / "metrics.jsonl").exists()
  # No config is left behind: the same workdir takes the run with a smaller chunk.
  assert not (tmp_path / "wd" / "config.json").exists()
  assert not (tmp_path / "wd" / "checkpoints").exists() or not os.listdir(
      tmp_path / "wd" / "checkpoints")
