"""Keys are counters: every random choice in a run is a pure function of (seed, round,
client, stage), so the same seed reproduces a run bit for bit and no two stages ever
share randomness.

    base = PRNGKey(seed)
    init_key(base)                      -> the initial model
    round_key(base, r)                  -> everything in round r
    server_key(round_key, purpose)      -> the server's draws (client sampling, noise)
    client_key(round_key, client_id)    -> one client's draws in that round
    stage_key(client_key, stage)        -> one stage of that client (shuffle, mask, ...)
    run_key(base, purpose)              -> draws made once per run, outside the rounds
                                           (FedQSN's server mask, server pretraining)

One exception to "everything from the seed": the randomness a privacy guarantee rests
on (DP noise and the randomized rounding before it) must be secret, or anyone holding
the config regenerates a client's noise and subtracts it. Its base key is
`secret_key()`, 64 bits from the OS per run, kept in the server state (and so in the
checkpoint, which is what makes a resumed run bit-identical) and never written to
metrics, summaries or logs; the same counters then give
    noise_round  = round_key(secret, r)
    client noise = stage_key(client_key(noise_round, c), PRIVATIZE)
    server noise = server_key(noise_round, SERVER_NOISE).
With update privacy the cohorts come from the secret too (`FedAvg.secret_cohorts`):
    cohort       = server_key(noise_round, SAMPLE_CLIENTS)
since the epsilon against observers (amplification by sampling) holds only while the
cohorts are secret. The sampled clients' own keys (shuffles, proxies) stay public.
`simulation_noise_key(base)` derives it from the seed instead, for reproducible
simulations only (`privacy.reproducible_noise`; every epsilon is then marked
"simulation only"). Secure aggregation's keys come from the OS as well (`secagg.py`).
"""
from __future__ import annotations

import os

import jax
import numpy as np

_ROUNDS, _INIT, _RUN = 0, 1, 2
_CLIENTS, _SERVER = 0, 1

# Server purposes.
SAMPLE_CLIENTS = 0
SERVER_NOISE = 1
UPLINK_PUBLIC = 2  # randomness every client of a round shares (e.g. the update mask)
DROPOUTS = 3  # which sampled clients drop out (simulated, without secure aggregation)
UPLINK_STATE = 4  # the uplink's server-side noise on its state (adaptive clipping's count)
# Client stages. Privatizer chains fold their own stage index in on top of PRIVATIZE.
SHUFFLE = 0
PRIVATIZE = 1
PROXY = 2
# Run purposes (once per run, not tied to a round).
SERVER_MASK = 0
PRETRAIN = 1
ATTACK = 2
NOISE = 3  # only for `simulation_noise_key` (reproducible, not private)


def base_key(seed: int) -> jax.Array:
  return jax.random.key(seed)


def init_key(base: jax.Array) -> jax.Array:
  return jax.random.fold_in(base, _INIT)


def round_key(base: jax.Array, rnd) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(base, _ROUNDS), rnd)


def client_key(rkey: jax.Array, client_id) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(rkey, _CLIENTS), client_id)


def server_key(rkey: jax.Array, purpose: int) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(rkey, _SERVER), purpose)


def stage_key(ckey: jax.Array, stage: int) -> jax.Array:
  return jax.random.fold_in(ckey, stage)


def run_key(base: jax.Array, purpose: int) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(base, _RUN), purpose)


def secret_key() -> jax.Array:
  """A fresh key from 64 bits of OS randomness (never derived from the seed)."""
  return jax.random.wrap_key_data(np.frombuffer(os.urandom(8), np.uint32).copy())


def simulation_noise_key(base: jax.Array) -> jax.Array:
  """The noise base key derived from the seed: reproducible, so NOT private."""
  return run_key(base, NOISE)
