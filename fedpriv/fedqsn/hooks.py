"""Per-round protection metrics of a FedQSN run (a driver hook).

On every evaluated round the hook adds to `metrics.jsonl`:

- `server_masked_accuracy`: the global model under the server mask alone (what a client
  could get if it saw every unit the server ever shares, at full precision);
- `client_proxy_accuracy_before` / `_after`: the best client of the round (the highest
  accuracy over the round's cohort), with the proxy it received and after its local
  training;
- `protection_gap`: the global model's accuracy minus `client_proxy_accuracy_after`;
- `downlink_bits_per_param`: the exact cost of the round's proxies (mean over the cohort).

How: the round hands out only aggregated results, so the hook rebuilds the round's
clients (`replay.py`) from a copy of the global model taken before the round: their
proxies, and their local training. One jitted, vmapped call per evaluated round; it costs
about one extra round of local training plus two evaluations per client. To keep that
affordable, client proxies (and, for a consistent gap, the global model) are evaluated on
a fixed seeded subset of `fedqsn.eval_examples` test examples (0 = the whole test set,
where `protection_gap` is exactly `test_accuracy - client_proxy_accuracy_after`).
`server_masked_accuracy` uses the same set.
"""
from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp
import numpy as np

from fedpriv import keys as keylib
from fedpriv.cohort import map_reduce
from fedpriv.data.client_data import EvalData
from fedpriv.evaluate import batch_eval_data, evaluate
from fedpriv.fedqsn import replay

_TAG_EVAL_SUBSET = 401


def eval_subset(test: EvalData, examples: int, seed: int, batch_size: int) -> EvalData:
  """A seeded random subset of `examples` test examples (0 or more than all: all), batched."""
  n = len(np.asarray(test.mask))
  if examples and examples < n:
    idx = np.sort(np.random.default_rng([seed, _TAG_EVAL_SUBSET]).choice(n, examples,
                                                                         replace=False))
    test = EvalData(*(np.asarray(a)[idx] for a in test))
  return batch_eval_data(test, min(batch_size, len(np.asarray(test.mask))))


class FedQSNMetrics:
  """Driver hook; see the module doc."""

  def __init__(self, eval_examples: int = 0):
    self.eval_examples = eval_examples
    self._prev = None
    self._fn = None
    self.history: list[dict] = []

  def on_start(self, exp, params):
    self._prev = jax.tree.map(jnp.copy, params)
    cfg, algo = exp.cfg, exp.algorithm
    self._eval = jax.tree.map(jnp.asarray, eval_subset(
        exp.data.test, self.eval_examples, cfg.seed, cfg.eval_batch_size))
    self._base = keylib.base_key(cfg.seed)
    self._population = exp.data.train  # placed on device by the first call
    num_clients = exp.data.train.num_clients
    task = exp.task

    def client(shared, c):
      before_params, population, eval_data = shared
      cid, valid, ckey = c
      received, trained = replay.replay_client(algo, before_params, population, cid, ckey)
      keep = algo.downlink.client_keep(keylib.stage_key(ckey, keylib.PROXY))
      acc_before = evaluate(task, received.effective(), eval_data)["accuracy"]
      acc_after = evaluate(task, received.effective(trained), eval_data)["accuracy"]
      bits = algo.downlink.message_bits(keep)
      return jnp.zeros(()), (acc_before, acc_after, bits, valid)

    def measure(before_params, params, population, eval_data, base, rnd):
      cohort = replay.round_cohort(algo, base, rnd, num_clients)
      _, (before, after, bits, valid) = map_reduce(
          client, (before_params, population, eval_data),
          (cohort.client_ids, cohort.valid, cohort.keys), chunk_size=algo.chunk_size)
      neg = jnp.float32(-1.0)
      n_valid = valid.sum()
      return {
          "global": evaluate(task, params, eval_data)["accuracy"],
          "server_masked": evaluate(task, algo.downlink.server_masked(params),
                                    eval_data)["accuracy"],
          "before": jnp.where(valid, before, neg).max(),
          "after": jnp.where(valid, after, neg).max(),
          "bits": jnp.where(valid, bits.astype(jnp.float32), 0.0).sum() / n_valid,
      }

    self._fn = jax.jit(measure)
    self._num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return params

  def on_round(self, exp, state, metrics, rnd, evaluated):
    del metrics
    out = {}
    if evaluated:
      if not isinstance(self._population.x, jax.Array):
        self._population = jax.tree.map(jnp.asarray, self._population)
      m = jax.device_get(self._fn(self._prev, state.params, self._population, self._eval,
                                  self._base, jnp.int32(rnd)))
      out = {
          "server_masked_accuracy": float(m["server_masked"]),
          "client_proxy_accuracy_before": float(m["before"]),
          "client_proxy_accuracy_after": float(m["after"]),
          "protection_gap": float(m["global"] - m["after"]),
          "downlink_bits_per_param": float(m["bits"]) / self._num_params,
          "eval_set_global_accuracy": float(m["global"]),
      }
      self.history.append(out)
    # The driver donates `state` to the next round: keep a copy of the model the next
    # round's clients will start from.
    self._prev = jax.tree.map(jnp.copy, state.params)
    return out

  def on_end(self, exp, state):
    del exp, state
    if not self.history:
      return {}
    last = dict(self.history[-1])
    last["downlink_bits_per_param"] = statistics.fmean(
        h["downlink_bits_per_param"] for h in self.history)
    last["fedqsn_eval_examples"] = int(np.asarray(self._eval.mask).sum())
    return last
