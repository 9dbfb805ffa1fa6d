"""Gradient inversion: rebuild a client's images from the update it sent.

In the style of Inverting Gradients (Geiping, Bauermeister, Droege & Moeller, NeurIPS
2020): the attacker knows the model the client started from, its local training
(learning rate, number of steps) and the labels (recovered from the update, see
`labels.py`); it searches for dummy images whose simulated update points the same way
as the observed one,

    minimise_x  1 - cos(update(x), observed) + tv_weight * TV(x),   x in [0, 1],

with Adam on the signed gradient, a learning rate divided by 10 at 3/8, 5/8 and 7/8 of
the steps, and a projection onto [0, 1] after each step. The update is simulated
differentiably: a single SGD step is `-lr * grad`, a multi-step FedAvg update runs the
client's `local_train` scan on the dummy images (Geiping et al.'s Section 5). The cosine
is scale-free, so clipping the update does not hide anything from it; only coordinates
the attacker observed (its `support`, e.g. the kept coordinates of a masked update)
enter it. When the observation is a mean over several clients (secure aggregation), the
attacker simulates that many clients and matches their mean.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from fedpriv.local import local_train
from fedpriv.models.registry import Task


@dataclasses.dataclass(frozen=True)
class ClientTraining:
  """What the attacker knows about how the observed update was made.

  Attributes:
    learning_rate: the client's SGD learning rate.
    local_steps: full-batch SGD steps per client (1: a single gradient step).
    clients: clients whose updates are averaged in the observation (1 unless the
      attacker only sees a secure-aggregation sum).
  """
  learning_rate: float
  local_steps: int = 1
  clients: int = 1


@dataclasses.dataclass(frozen=True)
class InversionSettings:
  """The attacker's optimiser.

  Attributes:
    steps: optimisation steps.
    learning_rate: Adam's initial learning rate (divided by 10 at 3/8, 5/8, 7/8).
    tv_weight: weight of the total-variation prior.
    restarts: independent random starts (optimised together; the one with the lowest
      final attack loss is kept, the attacker cannot see the truth).
    signed: Adam on the sign of the gradient (Geiping et al.), else on the gradient.
    log_every: steps between progress reports (one jitted scan per report).
  """
  steps: int = 300
  learning_rate: float = 0.1
  tv_weight: float = 1e-2
  restarts: int = 1
  signed: bool = True
  log_every: int = 50


class InversionResult(NamedTuple):
  """images: `[clients, batch, H, W, C]` of the best restart; loss: its final attack
  loss; losses: `[restarts]` final losses; history: per report, the best loss."""
  images: Any
  loss: float
  losses: Any
  history: list


def simulate_update(task: Task, params, x: jax.Array, y: jax.Array,
                    training: ClientTraining):
  """The mean update of `clients` simulated clients, as FedAvg's uplink would average it.

  Args:
    task: the model and loss.
    params: the model the clients start from.
    x: `[clients, batch, H, W, C]` images; y: `[clients, batch]` labels.
    training: the clients' local training.

  Returns:
    the mean over clients of `trained - params` (a pytree like `params`).
  """
  batch = x.shape[1]
  idx = jnp.tile(jnp.arange(batch, dtype=jnp.int32)[None], (training.local_steps, 1))
  valid = jnp.ones((training.local_steps, batch), bool)
  opt = optax.sgd(training.learning_rate)

  def one(xc, yc):
    trained, _ = local_train(task, opt, params, xc, yc, idx, valid)
    return jax.tree.map(jnp.subtract, trained, params)

  deltas = jax.vmap(one)(x, y)
  return jax.tree.map(lambda d: d.mean(0), deltas)


def cosine_distance(a, b, support=None) -> jax.Array:
  """1 - cos(a, b) over all leaves of two pytrees, restricted to `support` (0/1)."""
  if support is not None:
    a = jax.tree.map(lambda t, s: t * s, a, support)
    b = jax.tree.map(lambda t, s: t * s, b, support)
  dot = sum(jnp.vdot(u, v) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  na = jnp.sqrt(sum(jnp.vdot(u, u) for u in jax.tree.leaves(a)))
  nb = jnp.sqrt(sum(jnp.vdot(v, v) for v in jax.tree.leaves(b)))
  return 1.0 - dot / jnp.maximum(na * nb, 1e-30)


def total_variation(x: jax.Array) -> jax.Array:
  """Mean absolute difference between vertical and horizontal neighbours of `[..., H, W, C]`."""
  dh = jnp.abs(x[..., 1:, :, :] - x[..., :-1, :, :]).mean()
  dw = jnp.abs(x[..., :, 1:, :] - x[..., :, :-1, :]).mean()
  return dh + dw


def attack_loss(task: Task, params, observed, support, x, y, training: ClientTraining,
                tv_weight: float) -> jax.Array:
  sim = simulate_update(task, params, x, y, training)
  return cosine_distance(sim, observed, support) + tv_weight * total_variation(x)


def _schedule(settings: InversionSettings):
  s = settings.steps
  return optax.piecewise_constant_schedule(
      settings.learning_rate, {int(s * 3 / 8): 0.1, int(s * 5 / 8): 0.1, int(s * 7 / 8): 0.1})


def invert(task: Task, params, observed, labels, key: jax.Array, training: ClientTraining,
           settings: InversionSettings, image_shape: tuple, support=None,
           log: Callable[[str], None] | None = None) -> InversionResult:
  """Reconstructs the images behind `observed`.

  Args:
    task: the model and loss.
    params: the model the client(s) started from.
    observed: the update the attacker sees (a pytree like `params`).
    labels: `[clients, batch]` int labels the attacker assumes.
    key: draws the random starting images.
    training: the clients' local training, as the attacker models it.
    settings: the attacker's optimiser.
    image_shape: `(H, W, C)`.
    support: optional 0/1 pytree like `params`, the coordinates the attacker observed.
    log: called with a progress line every `settings.log_every` steps.

  Returns:
    an `InversionResult`.
  """
  labels = jnp.asarray(labels, jnp.int32)
  if labels.ndim != 2 or labels.shape[0] != training.clients:
    raise ValueError(f"labels must be [clients={training.clients}, batch], got "
                     f"{labels.shape}")
  shape = labels.shape + tuple(image_shape)
  opt = optax.adam(_schedule(settings))

  def loss_fn(x, params, observed, support):
    return attack_loss(task, params, observed, support, x, labels, training,
                       settings.tv_weight)

  def step(carry, _, params, observed, support):
    x, state = carry
    loss, g = jax.value_and_grad(loss_fn)(x, params, observed, support)
    if settings.signed:
      g = jnp.sign(g)
    updates, state = opt.update(g, state, x)
    x = jnp.clip(optax.apply_updates(x, updates), 0.0, 1.0)
    return (x, state), loss

  def run_chunk(carry, params, observed, support, length):
    one = lambda c: lax.scan(lambda cc, _: step(cc, _, params, observed, support), c,
                             None, length=length)
    return jax.vmap(one)(carry)  # over restarts

  run_chunk = jax.jit(run_chunk, static_argnums=4)
  final_loss = jax.jit(jax.vmap(loss_fn, in_axes=(0, None, None, None)))

  starts = jax.vmap(lambda r: jax.random.uniform(jax.random.fold_in(key, r), shape))(
      jnp.arange(settings.restarts))
  carry = (starts, jax.vmap(opt.init)(starts))
  history, done = [], 0
  while done < settings.steps:
    length = min(settings.log_every, settings.steps - done)
    carry, losses = run_chunk(carry, params, observed, support, length)
    done += length
    best = float(losses[:, -1].min())
    history.append(best)
    if log is not None:
      log(f"  inversion step {done}/{settings.steps}  attack loss {best:.5f}")
  images = carry[0]
  losses = final_loss(images, params, observed, support)
  best = int(jnp.argmin(losses))
  return InversionResult(images[best], float(losses[best]), losses, history)
