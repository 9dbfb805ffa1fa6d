"""One compiled federated round, with the uplink's host step hidden behind it.

    round_fn = rounds.compile_round(algo, state, population, base, first_round)
    for rnd in range(first_round, last + 1):
      state, metrics, info = round_fn(state, population, base)

Without a host step (`algo.uplink.has_host_step` False) a round is one jitted function
of (state, population, base key): sample the cohort of round `state.round + 1`, run
`FedAvg.apply`. With one (secure aggregation's key agreement and sharing, host-side
Python), the round is split: the jitted sampling, `uplink.prepare_round` on the host,
then the jitted `FedAvg.apply`, which is still compiled once. The first round's host
step runs at compile time (its cohort is what the round is compiled for) and is reused
when that round runs. `metrics` are the jitted round's (device arrays); `info` is the
host step's (e.g. protocol bytes; {} without one).

Either way the jitted function is wrapped in `chex.assert_max_traces(n=1)`: a retrace
would mean shapes changed between rounds, which must never happen. chex counts traces
per call site, not per compiled round, so `compile_round` resets its counter: several
runs in one process (a notebook, a sweep of defenses) are allowed.

The driver (`train.run`), the attacker's view (`attacks/observe.py`) and the benchmark
(`launch/benchmark.py`) all run their rounds through `compile_round`.
"""
from __future__ import annotations

from typing import Any, Callable

import chex
import jax
import numpy as np

from fedpriv.fedavg import Cohort, FedAvg, ServerState


def _host_int(x) -> int:
  """A replicated device scalar on the host (also when it spans several processes)."""
  if getattr(x, "is_fully_addressable", True):
    return int(np.asarray(x))
  return int(np.asarray(x.addressable_data(0)))


class CompiledRound:
  """`(state, population, base, *inputs) -> (state, metrics, info)`: one round.

  Attributes:
    executable: the compiled jitted round (`FedAvg.apply` alone with a host step), for
      `memory_analysis()`.
  """

  def __init__(self, step: Callable, executable):
    self._step = step
    self.executable = executable

  def __call__(self, state: ServerState, population, base: jax.Array, *inputs):
    return self._step(state, population, base, *inputs)


def compile_round(algo: FedAvg, state: ServerState, population, base: jax.Array,
                  first_round: int, *inputs, cohort_fn: Callable[..., Cohort] | None = None,
                  donate: bool = True) -> CompiledRound:
  """Compiles `algo`'s round for `state`'s shapes (once per run).

  Args:
    algo: the algorithm (its uplink decides whether there is a host step).
    state: a state of the run (its shapes, and its placement on the mesh).
    population: the clients' data.
    base: the run's base key.
    first_round: the round the first call will run (`state.round + 1`; after a resume
      not 1): with a host step it is prepared here and reused.
    *inputs: extra per-round inputs of `cohort_fn`, as the first round gets them (the
      benchmark's pinned client ids and minibatches); later calls pass their own.
    cohort_fn: `(base, rnd, *inputs) -> Cohort` of round `rnd` (traced); default
      `algo.sample_cohort(base, rnd, number of clients in population,
      state.noise_seed)` (the secret key draws the cohorts when the algorithm says so).
    donate: donate the state to the round (its buffers are reused; the caller must
      not read the state it passed in afterwards).

  Returns:
    A `CompiledRound`: call it as `(state, population, base, *inputs)`.
  """
  if cohort_fn is None:
    num_clients = population.mask.shape[0]
    draw = lambda noise_seed, b, rnd: algo.sample_cohort(b, rnd, num_clients, noise_seed)
  else:
    draw = lambda noise_seed, b, rnd, *inputs: cohort_fn(b, rnd, *inputs)
  donate_argnums = (0,) if donate else ()
  chex.clear_trace_counter()

  if not algo.uplink.has_host_step:
    def run_round(state, population, base, *inputs):
      cohort = draw(state.noise_seed, base, state.round + 1, *inputs)
      return algo.apply(state, population, cohort, base)

    jitted = jax.jit(chex.assert_max_traces(run_round, n=1), donate_argnums=donate_argnums)
    executable = jitted.lower(state, population, base, *inputs).compile()

    def step(state, population, base, *inputs):
      state, metrics = executable(state, population, base, *inputs)
      return state, metrics, {}

    return CompiledRound(step, executable)

  sample = jax.jit(draw)

  def host_step(noise_seed, base, rnd: int, *inputs) -> tuple[Cohort, Any, dict]:
    return algo.uplink.prepare_round(sample(noise_seed, base, rnd, *inputs), rnd)

  def apply(state, population, cohort, base, server_context):
    return algo.apply(state, population, cohort, base, server_context)

  jitted = jax.jit(chex.assert_max_traces(apply, n=1), donate_argnums=donate_argnums)
  prepared = {first_round: host_step(state.noise_seed, base, first_round, *inputs)}
  cohort, server_context, _ = prepared[first_round]
  executable = jitted.lower(state, population, cohort, base, server_context).compile()

  def split_step(state, population, base, *inputs):
    rnd = _host_int(state.round) + 1
    cohort, server_context, info = (prepared.pop(rnd) if rnd in prepared
                                    else host_step(state.noise_seed, base, rnd, *inputs))
    state, metrics = executable(state, population, cohort, base, server_context)
    return state, metrics, info

  return CompiledRound(split_step, executable)
