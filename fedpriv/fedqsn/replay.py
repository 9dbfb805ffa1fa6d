"""A round's clients rebuilt outside the round.

Everything a client does in round r is a pure function of (the global model before the
round, the population, the run's base key, r; and the state's secret key when the run
draws its cohorts in secret): its cohort, its proxy (from its PROXY
key) and its local training (from its SHUFFLE key). The measurement hooks and the
extraction attacks therefore never need the round to hand anything out: they call the
round's own per-client function, `FedAvg.train_client` (and `FedAvg.received_model` where
the proxy alone is needed), for the clients of `round_cohort`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedpriv import keys as keylib
from fedpriv.fedavg import FedAvg


def replay_client(algo: FedAvg, params, population, client_id, client_key):
  """One client's round as the round runs it, up to the upload (`FedAvg.train_client`).

  Returns:
    `(received ClientModel, trained params)`.
  """
  received, trained, _ = algo.train_client(params, population, client_id, client_key)
  return received, trained


def round_cohort(algo: FedAvg, base_key: jax.Array, rnd, num_clients: int,
                 noise_seed: jax.Array | None = None):
  """The cohort of round `rnd` (1-based), exactly as the round draws it (`noise_seed`,
  the state's secret key data, when the algorithm draws its cohorts in secret)."""
  return algo.sample_cohort(base_key, rnd, num_clients, noise_seed)


def client_key(base_key: jax.Array, rnd, client_id) -> jax.Array:
  return keylib.client_key(keylib.round_key(base_key, rnd), jnp.asarray(client_id, jnp.int32))
