"""What a federated algorithm adds to the FedAvg round: FedProx and SCAFFOLD.

`FedAvg` (fedavg.py) runs every algorithm's round: sampling, downlink, local training,
uplink, the sum over clients, the server optimizer. An algorithm only says what differs,
through a `Rule`: the state it keeps beside the model, a transformation its clients add in
front of their optimizer, what each client sends beside its update, and how the server
folds that in. Every method has a no-op default (`Rule` itself is plain FedAvg), so a
new algorithm overrides only what it changes:

    rule.init(params)                               -> state (in ServerState.extra)
    rule.client_inputs(state, client_id)            -> this client's share of state
    rule.client_transform(state, mine, start)       -> optax transform or None
    rule.client_outputs(state, mine, start, trained, steps) -> (summed, kept)
    rule.server_update(state, total, kept, valid, client_ids) -> new state

`summed` is added over the round's valid clients (in `cohort.map_reduce`'s chunks, and
across devices); `kept` comes back per client, `[cohort, ...]`.

FedAdam, FedAdagrad and FedYogi are server optimizers, not rules (optimizers.py).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fedpriv.config import Config, ConfigError


class Rule:
  """Plain FedAvg: no state, nothing added to local training or to the upload."""

  def init(self, params) -> Any:
    del params
    return ()

  def client_inputs(self, state, client_id) -> Any:
    del state, client_id
    return ()

  def client_transform(self, state, mine, start) -> optax.GradientTransformation | None:
    del state, mine, start
    return None

  def client_outputs(self, state, mine, start, trained, steps) -> tuple[dict, dict]:
    del state, mine, start, trained, steps
    return {}, {}

  def server_update(self, state, total, kept, valid, client_ids) -> Any:
    del total, kept, valid, client_ids
    return state

  def state_bytes(self, params) -> int:
    """Bytes of state kept across rounds for the population (0 for stateless rules)."""
    del params
    return 0


def proximal(mu: float, anchor) -> optax.GradientTransformation:
  """Adds the gradient of `mu/2 ||params - anchor||^2` to the updates (FedProx).

  Chain it in front of the client optimizer: `optax.chain(proximal(mu, w0), sgd(lr))`
  takes SGD steps on `loss(w) + mu/2 ||w - w0||^2` (Li et al. 2020, "Federated
  Optimization in Heterogeneous Networks"). Needs `params` in `update`.
  """

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("proximal needs params: optimizer.update(grads, state, params)")
    return jax.tree.map(lambda u, p, a: u + mu * (p - a), updates, params, anchor), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def add_correction(correction) -> optax.GradientTransformation:
  """Adds a fixed pytree to the updates (SCAFFOLD's gradient correction c - c_i)."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(jnp.add, updates, correction), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@dataclasses.dataclass(frozen=True)
class FedProx(Rule):
  """FedProx: local steps on the loss plus `mu/2 ||w - w_received||^2`.

  The anchor is the model the client received (the global model, or its FedQSN proxy),
  so mu=0 is FedAvg exactly.
  """
  mu: float

  def client_transform(self, state, mine, start):
    del state, mine
    return proximal(self.mu, start)


class ScaffoldState(NamedTuple):
  """SCAFFOLD's control variates: the server's `c` and every client's `c_i`."""
  server: Any    # pytree shaped like params
  clients: Any   # pytree shaped like params with a leading [num_clients] axis


@dataclasses.dataclass(frozen=True)
class Scaffold(Rule):
  """SCAFFOLD (Karimireddy et al. 2020, "Stochastic Controlled Averaging"), option II.

  Each local SGD step uses `g(y) - c_i + c`. After its K steps (the minibatches that
  held an example), client i sets `c_i+ = c_i - c + (x - y_i) / (K learning_rate)` and
  sends `c_i+ - c_i` beside its model update; the server adds the mean model update
  (through the server optimizer, as FedAvg) and `c <- c + sum_i (c_i+ - c_i) / N`.
  Clients that drop out or diverge keep their `c_i`.

  Every client's `c_i` lives in the server state, `[num_clients, ...]` like the
  parameters (`state_bytes`); the round gathers the cohort's rows and scatters them
  back, inside the jitted round.

  Attributes:
    num_clients: population size N.
    learning_rate: the clients' SGD learning rate.
  """
  num_clients: int
  learning_rate: float

  def init(self, params) -> ScaffoldState:
    zeros = jax.tree.map(jnp.zeros_like, params)
    clients = jax.tree.map(
        lambda p: jnp.zeros((self.num_clients,) + p.shape, p.dtype), params)
    return ScaffoldState(zeros, clients)

  def client_inputs(self, state: ScaffoldState, client_id):
    return jax.tree.map(lambda c: c[client_id], state.clients)

  def client_transform(self, state: ScaffoldState, mine, start):
    del start
    return add_correction(jax.tree.map(jnp.subtract, state.server, mine))

  def client_outputs(self, state: ScaffoldState, mine, start, trained, steps):
    scale = 1.0 / (jnp.maximum(steps, 1).astype(jnp.float32) * self.learning_rate)
    new = jax.tree.map(lambda ci, c, x, y: ci - c + (x - y) * scale,
                       mine, state.server, start, trained)
    return ({"control_delta": jax.tree.map(jnp.subtract, new, mine)},
            {"control": new})

  def server_update(self, state: ScaffoldState, total, kept, valid, client_ids):
    server = jax.tree.map(lambda c, d: c + d / self.num_clients, state.server,
                          total["control_delta"])
    # Rows of clients that took no part (padding, dropouts, diverged) go out of range
    # and are dropped by the scatter, so those clients keep their control variates.
    rows = jnp.where(valid, client_ids, self.num_clients)
    clients = jax.tree.map(lambda c, n: c.at[rows].set(n.astype(c.dtype), mode="drop"),
                           state.clients, kept["control"])
    return ScaffoldState(server, clients)

  def state_bytes(self, params) -> int:
    per_client = sum(int(np.prod(p.shape)) * jnp.dtype(p.dtype).itemsize
                     for p in jax.tree.leaves(params))
    return (self.num_clients + 1) * per_client


@dataclasses.dataclass(frozen=True)
class StateReport:
  """Driver hook: puts the bytes of per-client state kept across rounds in summary.json."""
  state_bytes: int

  def on_end(self, exp, state):
    del exp, state
    return {"client_state_mb": self.state_bytes / 2**20}


def from_config(cfg: Config, num_clients: int, params_shape) -> Rule:
  """The rule `cfg.algorithm` names, for a population of `num_clients`.

  Args:
    cfg: the experiment config.
    num_clients: population size.
    params_shape: the model's parameters (or their `jax.eval_shape`), to size state.

  Raises:
    ConfigError: if SCAFFOLD's per-client state would exceed `cfg.max_client_state_mb`.
  """
  if cfg.algorithm == "fedprox":
    return FedProx(cfg.prox_mu)
  if cfg.algorithm == "scaffold":
    rule = Scaffold(num_clients, cfg.learning_rate)
    mb = rule.state_bytes(params_shape) / 2**20
    if mb > cfg.max_client_state_mb:
      raise ConfigError("max_client_state_mb", f"'scaffold' keeps a control variate per "
                        f"client: {num_clients} clients x the model = {mb:,.3g} MB, above "
                        f"the limit {cfg.max_client_state_mb:g} MB; raise it or use fewer "
                        "clients")
    return rule
  return Rule()
