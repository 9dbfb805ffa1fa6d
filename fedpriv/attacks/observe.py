"""What the attacker sees: the output of one real FedAvg round.

The observation is made by the same code that trains: a `FedAvg` round (local training
by `local_train`, the uplink's encode, the sum over clients, the uplink's decode) on a
population of the victim and, for secure aggregation, the other clients of its round.
The attacker sees the decoded mean update, i.e. the change of the global model with a
server learning rate of 1:

- no defense, masking, quantization (no secure aggregation): the server decodes each
  client's message on its own, so the round holds the victim alone;
- DP noise without secure aggregation: the worst case of the DP definition, an
  attacker who knows every other client's contribution and subtracts it, is left
  with the victim's privatized update plus the mechanism's noise, i.e. a round of
  the victim alone with the server's noise added (the noise and the epsilon are the
  deployment's: `clients_per_round` of `num_clients` for `rounds` rounds);
- secure aggregation over N clients: the round holds N clients, the attacker gets the
  unmasked sum (with distributed DP noise, the noisy sum) and nothing else.

The indices of a masked update are public (one key per round, shared by all clients),
so the attacker knows which coordinates it observed: `support`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from fedpriv import keys as keylib
from fedpriv import rounds
from fedpriv.data.client_data import ClientData
from fedpriv.fedavg import FedAvg
from fedpriv.models.registry import Task


class Observation(NamedTuple):
  """update: the decoded mean update (pytree like the params); support: 0/1 pytree of
  the observed coordinates, or None for all."""
  update: Any
  support: Any


def round_algorithm(task: Task, uplink, clients: int, learning_rate: float,
                    local_steps: int, batch: int) -> FedAvg:
  """FedAvg as the attacked deployment runs it: SGD clients, server SGD at 1."""
  seams = {} if uplink is None else {"uplink": uplink}
  return FedAvg(task=task, client_optimizer=optax.sgd(learning_rate),
                server_optimizer=optax.sgd(1.0), clients_per_round=clients,
                local_epochs=local_steps, batch_size=batch, chunk_size=1, **seams)


def observe(task: Task, params, images, labels, *, uplink, learning_rate: float,
            local_steps: int, seed: int, round_index: int = 1) -> Observation:
  """Runs one FedAvg round of the clients in `images` and returns what comes out.

  Args:
    task: the model and loss.
    params: the global model of the round.
    images: `[clients, batch, H, W, C]`, the victim first; labels: `[clients, batch]`.
    uplink: the deployment's uplink (None: plain FedAvg).
    learning_rate, local_steps: the clients' local SGD (each step on the whole batch).
    seed: the deployment's seed (its keys decide shuffles, masks and noise).
    round_index: which round it is (keys are counters).
  """
  images = jnp.asarray(images)
  labels = jnp.asarray(labels, jnp.int32)
  clients, batch = labels.shape
  algo = round_algorithm(task, uplink, clients, learning_rate, local_steps, batch)
  population = ClientData(images, labels, jnp.ones((clients, batch), bool))
  base = keylib.base_key(seed)
  ids = jnp.arange(clients, dtype=jnp.int32)
  state = algo.init(params)
  state = state._replace(round=jnp.asarray(round_index - 1, jnp.int32))
  # Every client of `images` takes part (no sampling); secure aggregation's host step
  # runs inside the compiled round. No donation: `state` holds the caller's params.
  round_fn = rounds.compile_round(
      algo, state, population, base, round_index, donate=False,
      cohort_fn=lambda b, rnd: algo.pad_cohort(ids, keylib.round_key(b, rnd)))
  new_state, _, _ = round_fn(state, population, base)
  update = jax.tree.map(jnp.subtract, new_state.params, params)
  return Observation(update, public_support(algo.uplink, params,
                                            keylib.round_key(base, round_index)))


def public_support(uplink, params, rkey):
  """The coordinates `uplink` sends in the round of `rkey` (None: all)."""
  ctx = uplink.round_context(params, keylib.server_key(rkey, keylib.UPLINK_PUBLIC),
                             uplink.init_state())
  kept = uplink.kept_coordinates(ctx)
  if kept is None:
    return None
  flat, unravel = ravel_pytree(params)
  return unravel(jnp.zeros(flat.shape, jnp.float32).at[kept].set(1.0))


def support_fraction(support) -> float:
  if support is None:
    return 1.0
  leaves = jax.tree.leaves(support)
  return float(sum(np.asarray(l).sum() for l in leaves) / sum(l.size for l in leaves))
