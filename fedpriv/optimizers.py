"""Client and server optimizers from a config."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from fedpriv.config import Config, ConfigError


def client_learning_rate(cfg: Config, local_steps: int | None = None):
  """The client's learning rate: a float, or an optax schedule over its local steps.

  "linear": rises linearly from 0 over the first `round(warmup_fraction * local_steps)`
  steps to `learning_rate`, then falls linearly to 0 at step `local_steps` (as the
  linear warm-up/decay schedule of BERT fine-tuning). Every client makes a fresh
  optimizer state each round (`local.local_train`), so the schedule restarts per client
  and round.

  Raises:
    ConfigError: "linear" without the number of local steps.
  """
  if cfg.lr_schedule == "constant":
    return cfg.learning_rate
  if not local_steps or local_steps < 1:
    raise ConfigError("lr_schedule", "'linear' needs the number of local steps per round, "
                      f"got {local_steps!r}")
  warmup = int(round(cfg.warmup_fraction * local_steps))
  decay = optax.linear_schedule(cfg.learning_rate, 0.0, local_steps - warmup)
  if not warmup:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, cfg.learning_rate, warmup), decay], [warmup])


def client_optimizer(cfg: Config, local_steps: int | None = None
                     ) -> optax.GradientTransformation:
  """The client optimizer; `local_steps` (steps per client per round) sizes a schedule."""
  lr = client_learning_rate(cfg, local_steps)
  if cfg.client_optimizer == "sgd":
    opt = optax.sgd(lr)
  elif cfg.client_optimizer == "momentum":
    opt = optax.sgd(lr, momentum=cfg.client_momentum)
  elif cfg.client_optimizer == "adam":
    opt = optax.adam(lr)
  else:
    opt = optax.adamw(lr, weight_decay=cfg.weight_decay)
  if cfg.weight_decay and cfg.client_optimizer != "adamw":
    opt = optax.chain(optax.add_decayed_weights(cfg.weight_decay), opt)
  return opt


def server_optimizer(cfg: Config) -> optax.GradientTransformation:
  """Applied to the negated mean client update; sgd(1.0) is plain FedAvg."""
  lr = cfg.server_learning_rate
  if cfg.server_optimizer == "sgd":
    return optax.sgd(lr)
  if cfg.server_optimizer == "momentum":
    return optax.sgd(lr, momentum=0.9)
  if cfg.server_optimizer in ("adagrad", "yogi"):
    return reddi_server_optimizer(cfg.server_optimizer, lr)
  return optax.adam(lr, b1=0.9, b2=0.99, eps=1e-3)  # FedAdam (Reddi et al. 2021)


class ReddiState(NamedTuple):
  """First moment `m` and second-moment accumulator `v` of an adaptive server step."""
  m: Any
  v: Any


def reddi_server_optimizer(kind: str, learning_rate: float, b1: float = 0.9,
                           b2: float = 0.99, tau: float = 1e-3) -> optax.GradientTransformation:
  """FedAdagrad or FedYogi's server step (Reddi et al. 2021, "Adaptive Federated
  Optimization", Algorithm 2), applied to the negated mean client update `g = -Delta`:

    m <- b1 m + (1 - b1) g
    v <- v + g^2                                  (adagrad)
    v <- v - (1 - b2) g^2 sign(v - g^2)           (yogi)
    x <- x - learning_rate * m / (sqrt(v) + tau)

  with `v` starting at tau^2 and no bias correction, as in the paper (tau is its
  adaptivity degree, the defaults its b1, b2 and tau=1e-3).

  Args:
    kind: "adagrad" or "yogi".
    learning_rate: the server learning rate eta.
    b1, b2, tau: as above.

  Returns:
    An optax transformation.
  """
  if kind not in ("adagrad", "yogi"):
    raise ValueError(f"kind must be 'adagrad' or 'yogi', got {kind!r}")

  def init(params):
    return ReddiState(jax.tree.map(jnp.zeros_like, params),
                      jax.tree.map(lambda p: jnp.full_like(p, tau * tau), params))

  def second_moment(v, g):
    g2 = g * g
    if kind == "adagrad":
      return v + g2
    return v - (1.0 - b2) * g2 * jnp.sign(v - g2)

  def update(updates, state, params=None):
    del params
    m = jax.tree.map(lambda m, g: b1 * m + (1.0 - b1) * g, state.m, updates)
    v = jax.tree.map(second_moment, state.v, updates)
    out = jax.tree.map(lambda m, v: -learning_rate * m / (jnp.sqrt(v) + tau), m, v)
    return out, ReddiState(m, v)

  return optax.GradientTransformation(init, update)
