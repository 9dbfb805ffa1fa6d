"""A round's clients rebuilt outside the round.

Everything a client does in round r is a pure function of (the global model before the
round, the population, the run's base key, r): its cohort, its proxy (from its PROXY
key) and its local training (from its SHUFFLE key). The measurement hooks and the
extraction attacks therefore never need the round to hand anything out: they recompute
the proxies (cheap: masks and quantization) and, where needed, the local training
(`replay_client`, the same steps as `FedAvg.client_update`; a test checks that both give
the same trained model).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedpriv import keys as keylib
from fedpriv.fedavg import ClientModel, FedAvg
from fedpriv.local import local_train
from fedpriv.schedule import client_batches


def received_model(algo: FedAvg, params, client_key: jax.Array) -> ClientModel:
  """What the client with `client_key` received in its round."""
  return algo.downlink.client_model(params, keylib.stage_key(client_key, keylib.PROXY))


def replay_client(algo: FedAvg, params, population, client_id, client_key):
  """One client's round as `FedAvg.client_update` runs it, up to the upload.

  Returns:
    `(received ClientModel, trained params)`.
  """
  x, y, mask = population.x[client_id], population.y[client_id], population.mask[client_id]
  batches = client_batches(keylib.stage_key(client_key, keylib.SHUFFLE), mask,
                           algo.local_epochs, algo.batch_size)
  received = received_model(algo, params, client_key)
  trained, _ = local_train(algo.task, algo.local_optimizer(received), received.params, x, y,
                           *batches, unroll=algo.unroll)
  return received, trained


def round_cohort(algo: FedAvg, base_key: jax.Array, rnd, num_clients: int):
  """The cohort of round `rnd` (1-based), exactly as the round draws it."""
  return algo.sample_cohort(base_key, rnd, num_clients)


def client_key(base_key: jax.Array, rnd, client_id) -> jax.Array:
  return keylib.client_key(keylib.round_key(base_key, rnd), jnp.asarray(client_id, jnp.int32))
