"""`rounds.compile_round`: the same rounds as calling the algorithm by hand, with secure
aggregation's host step hidden behind it (run once per round, the first one reused)."""
from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np

from conftest import tiny_population
from fedpriv import keys as keylib
from fedpriv import rounds
from fedpriv.config import PrivacyConfig
from fedpriv.privacy.uplink import PrivateUplink
from test_private_uplink import make


def _start(algo):
  return algo.init(algo.task.init(jax.random.key(0)), noise_key=jax.random.key(4))


def test_a_plain_round_is_the_algorithms_own_jitted_round():
  pop = jax.tree.map(jnp.asarray, tiny_population([8, 5, 8, 7, 6, 8], seed=3))
  base = keylib.base_key(5)
  _, algo, _ = make(None, num_clients=6)
  want, step = _start(algo), jax.jit(algo.run_round)
  got = _start(algo)
  round_fn = rounds.compile_round(algo, got, pop, base, 1)
  for _ in range(3):
    want, m_want = step(want, pop, base)
    got, m_got, info = round_fn(got, pop, base)
    assert info == {}
  chex.assert_trees_all_equal(got, want)
  chex.assert_trees_all_equal(m_got, m_want)


@dataclasses.dataclass(frozen=True, eq=False)
class CountingUplink(PrivateUplink):
  """Records the rounds its host step ran for."""
  calls: list = dataclasses.field(default_factory=list)

  def prepare_round(self, cohort, rnd):
    self.calls.append(rnd)
    return super().prepare_round(cohort, rnd)


def test_the_host_step_runs_once_per_round_inside_the_compiled_round():
  pop = jax.tree.map(jnp.asarray, tiny_population([8, 5, 8, 7, 6, 8], seed=3))
  base = keylib.base_key(6)
  privacy = PrivacyConfig(enabled=True, clip=0.5, bits=8, mask_ratio=0.5, secagg=True)
  _, algo, _ = make(privacy, num_clients=6)
  counting = CountingUplink(algo.uplink.mechanism, algo.uplink.unravel, algo.uplink.seed)
  algo = dataclasses.replace(algo, uplink=counting)
  assert algo.uplink.has_host_step
  # By hand: sample, the host step, the round.
  want = _start(algo)
  for rnd in (1, 2):
    cohort = algo.sample_cohort(base, rnd, 6)
    cohort, server_ctx, _ = algo.uplink.prepare_round(cohort, rnd)
    want, _ = jax.jit(algo.apply)(want, pop, cohort, base, server_ctx)
  counting.calls.clear()
  got = _start(algo)
  round_fn = rounds.compile_round(algo, got, pop, base, 1)
  assert counting.calls == [1]  # the first round is prepared to compile it ...
  for _ in (1, 2):
    got, _, info = round_fn(got, pop, base)
    assert np.all(info["secagg_uplink_bytes"] > 0)  # per client
  assert counting.calls == [1, 2]  # ... and reused when it runs
  chex.assert_trees_all_equal(got.params, want.params)
