"""Model extraction: how close to the global model can clients get from their proxies?

Three attackers, each compared with the global model and with the same client training
alone from scratch on its own data (same budget):

1. `last_proxy`: a client fine-tunes the last proxy it received on all its data, for
   `epochs_factor` (10) times its usual local epochs.
2. `colluders`: `k` clients of the same round pool their proxies (union of the units they
   saw; where several saw a weight, the average of their dequantized values) and their
   data, and fine-tune the combination.
3. `all_proxies`: a client keeps every proxy it received over the run and combines them
   the same way (average over the rounds it saw each weight), then fine-tunes.

Combining proxies: each proxy's values (in the model's coordinates: the mask scale is
only applied to activations, see `proxy.py`) are averaged per coordinate over the
proxies that saw it, and every unit group is rescaled by units / units seen (inverted
dropout over the union). Coordinates nobody saw start from a fresh random
initialization, so the attacker keeps the full model's capacity. Attackers train every
coordinate (nothing is frozen for them).

`AttackHook` records, during a run, what the tracked clients receive (the proxies are
rebuilt from the model before each round, see `replay.py`), and runs the attacks at the
end. The tracked clients are the final round's cohort (so every attacker holds a proxy
from the last round); `launch/extract.py` runs it.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from fedpriv import keys as keylib
from fedpriv.evaluate import batch_eval_data, evaluate
from fedpriv.fedqsn import replay
from fedpriv.local import local_train
from fedpriv.schedule import client_batches

# Stages folded into the run's ATTACK key.
_FINETUNE, _FRESH_INIT, _ALONE_INIT = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Combination:
  """Proxies gathered by an attacker: sum of their values and how often each was seen."""
  total: object
  count: object

  @staticmethod
  def of(proxy, visible) -> "Combination":
    return Combination(jax.tree.map(jnp.multiply, proxy, visible), visible)

  def __add__(self, other: "Combination") -> "Combination":
    return Combination(jax.tree.map(jnp.add, self.total, other.total),
                       jax.tree.map(jnp.add, self.count, other.count))


jax.tree_util.register_pytree_node(
    Combination, lambda c: ((c.total, c.count), None), lambda _, ch: Combination(*ch))


def combine(c: Combination, spec, fresh):
  """The attacker's model: averaged seen values, units rescaled, unseen ones fresh."""
  mean = jax.tree.map(lambda t, n: t / jnp.maximum(n, 1.0), c.total, c.count)
  seen_units = {}
  for leaf, group in spec.unit_leaves:
    if group in seen_units:
      continue
    count = _leaf(c.count, leaf)
    seen_units[group] = (count.reshape(-1, count.shape[-1]).max(axis=0) > 0)
  rescale = {g: jnp.float32(n) / jnp.maximum(seen_units[g].sum(), 1).astype(jnp.float32)
             for g, n in spec.groups}

  def one(name, m, n, f):
    group = spec.group_of(name)
    if group is not None:
      m = m * rescale[group]
    return jnp.where(n > 0, m, f)

  return spec.map(one, mean, c.count, fresh)


def _leaf(tree, name):
  for part in name.split("/"):
    tree = tree[part]
  return tree


def fine_tune(task, optimizer, params, x, y, mask, epochs: int, batch_size: int, key,
              unroll: int = 1):
  idx, valid = client_batches(key, mask, epochs, batch_size)
  trained, _ = local_train(task, optimizer, params, x, y, idx, valid, unroll=unroll)
  return trained


@dataclasses.dataclass
class AttackHook:
  """Driver hook: tracks the final cohort's proxies during the run, attacks at the end.

  Attributes:
    attackers: clients (of the final cohort) that attack alone (attacks 1 and 3).
    colluders: k, the clients (of the final cohort) that pool their proxies (attack 2).
    epochs_factor: attackers train this many times the clients' local epochs.
  """
  attackers: int = 3
  colluders: int = 5
  epochs_factor: int = 10
  results: dict = dataclasses.field(default_factory=dict)

  def on_start(self, exp, params):
    cfg, algo = exp.cfg, exp.algorithm
    self._base = keylib.base_key(cfg.seed)
    n_clients = exp.data.train.num_clients
    want = max(self.attackers, self.colluders)
    if want > algo.cohort_capacity:  # refused before training; dropouts are checked later
      raise ValueError(f"{want} attackers/colluders, but a round has only "
                       f"{algo.cohort_capacity} clients")
    self._ids = None  # the final cohort's first `want` clients: known once the state is
    zeros = jax.tree.map(jnp.zeros_like, params)
    stack = lambda t: jax.tree.map(lambda a: jnp.stack([a] * want), t)
    self._last = Combination(stack(zeros), stack(zeros))
    self._all = Combination(stack(zeros), stack(zeros))
    self._times = jnp.zeros((want,), jnp.int32)
    self._prev = jax.tree.map(jnp.copy, params)

    def final_cohort(noise_seed):
      # With update privacy the cohorts come from the state's secret key, which exists
      # only once the run has started: hence chosen at the first round, not here.
      last = replay.round_cohort(algo, self._base, cfg.rounds, n_clients, noise_seed)
      ids = np.asarray(last.client_ids)[np.asarray(last.valid)]
      if want > len(ids):
        raise ValueError(f"{want} attackers/colluders, but the final round has only "
                         f"{len(ids)} clients")
      return jnp.asarray(ids[:want], jnp.int32)

    def record(prev, last_c, all_c, times, ids, base, rnd, noise_seed):
      cohort = replay.round_cohort(algo, base, rnd, n_clients, noise_seed)
      member = (ids[:, None] == jnp.where(cohort.valid, cohort.client_ids, -1)[None]
                ).any(axis=1)

      def one(cid):
        received = algo.received_model(prev, replay.client_key(base, rnd, cid))
        return Combination.of(received.params, received.visible)

      got = jax.vmap(one)(ids)
      pick = lambda new, old: jax.tree.map(
          lambda a, b: jnp.where(member.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)
      gated = jax.tree.map(
          lambda a: a * member.reshape((-1,) + (1,) * (a.ndim - 1)).astype(a.dtype), got)
      return pick(got, last_c), all_c + gated, times + member.astype(jnp.int32)

    self._final_cohort = final_cohort
    self._record = jax.jit(record)
    return params

  def on_round(self, exp, state, metrics, rnd, evaluated):
    del exp, metrics, evaluated
    if self._ids is None:
      self._ids = self._final_cohort(state.noise_seed)
    self._last, self._all, self._times = self._record(
        self._prev, self._last, self._all, self._times, self._ids, self._base,
        jnp.int32(rnd), state.noise_seed)
    self._prev = jax.tree.map(jnp.copy, state.params)
    return {}

  def on_end(self, exp, state):
    cfg, algo, task = exp.cfg, exp.algorithm, exp.task
    spec = algo.downlink.spec
    test = jax.tree.map(jnp.asarray, batch_eval_data(exp.data.test, cfg.eval_batch_size))
    pop = exp.data.train
    akey = keylib.run_key(self._base, keylib.ATTACK)
    epochs = cfg.local_epochs * self.epochs_factor
    optimizer = algo.client_optimizer
    acc = jax.jit(lambda p: evaluate(task, p, test)["accuracy"])

    def attack(c: Combination, x, y, mask, key):
      fresh = task.init(jax.random.fold_in(key, _FRESH_INIT))
      start = combine(c, spec, fresh)
      trained = fine_tune(task, optimizer, start, x, y, mask, epochs, cfg.batch_size,
                          jax.random.fold_in(key, _FINETUNE), cfg.unroll)
      return (evaluate(task, start, test)["accuracy"],
              evaluate(task, trained, test)["accuracy"])

    def train_alone(x, y, mask, key):
      alone = fine_tune(task, optimizer, task.init(jax.random.fold_in(key, _ALONE_INIT)),
                        x, y, mask, epochs, cfg.batch_size,
                        jax.random.fold_in(key, _FINETUNE), cfg.unroll)
      return evaluate(task, alone, test)["accuracy"]

    ids = np.asarray(self._ids)
    a = self.attackers
    data = lambda sel: tuple(jnp.asarray(np.asarray(arr)[sel]) for arr in pop)
    x, y, mask = data(ids[:a])
    keys = jax.vmap(lambda c: jax.random.fold_in(akey, c))(jnp.asarray(ids[:a]))
    solo = jax.jit(jax.vmap(attack))
    first = lambda c: jax.tree.map(lambda t: t[:a], c)
    last_before, last_after = jax.device_get(solo(first(self._last), x, y, mask, keys))
    all_before, all_after = jax.device_get(solo(first(self._all), x, y, mask, keys))
    alone = jax.device_get(jax.jit(jax.vmap(train_alone))(x, y, mask, keys))

    k = self.colluders
    pooled = jax.tree.map(lambda t: t[:k].sum(axis=0), self._last)
    cx, cy, cmask = data(ids[:k])
    flat = lambda arr: arr.reshape((-1,) + arr.shape[2:])
    col_before, col_after = jax.device_get(jax.jit(attack)(
        pooled, flat(cx), flat(cy), flat(cmask), jax.random.fold_in(akey, 1_000_000)))
    global_acc = float(acc(state.params))
    attacks = {
        "last_proxy": {"before": last_before.tolist(), "after": last_after.tolist()},
        "all_proxies": {"before": all_before.tolist(), "after": all_after.tolist(),
                        "proxies_kept": np.asarray(self._times[:a]).tolist()},
        "colluders": {"k": k, "before": float(col_before), "after": float(col_after)},
        "training_alone": alone.tolist(),
        "attacker_ids": ids[:a].tolist(),
        "colluder_ids": ids[:k].tolist(),
        "epochs": epochs,
    }
    best = max(float(np.max(last_after)), float(np.max(last_before)),
               float(np.max(all_after)), float(np.max(all_before)),
               float(col_after), float(col_before))
    self.results = {
        "attack_global_accuracy": global_acc,
        "best_attacker_accuracy": best,
        "attack_gap": global_acc - best,
        "training_alone_accuracy": float(np.mean(alone)),
        "attacks": attacks,
    }
    return self.results
