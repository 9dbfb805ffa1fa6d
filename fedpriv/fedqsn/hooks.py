"""Per-round protection metrics of a FedQSN run (a driver hook).

On every evaluated round the hook adds to `metrics.jsonl`:

- `server_masked_accuracy`: the global model under the server mask alone (what a client
  could get if it saw every unit the server ever shares, at full precision);
- `client_proxy_accuracy_before` / `_after`: the best client of the round (the highest
  test accuracy over the round's cohort), with the proxy it received and after its local
  training;
- `protection_gap`: the global model's accuracy minus `client_proxy_accuracy_after`;
- `downlink_bits_per_param`: the exact cost of the round's proxies (mean over the cohort);
- `validation_loss_{global,server_masked,client_before,client_after}`: the four models'
  loss on the validation set (for the clients: the round's lowest), and
  `client_proxy_accuracy_{before,after}_by_validation`: the test accuracy of the client
  with that lowest validation loss.

As the paper reports them, `summary.json` gets `validation_selected`: for each of the four
models (full global, server-masked, client proxy before and after local training), the
evaluated round with the lowest validation loss and the model's test accuracy at that
round. The selection looks only at the validation set; the test accuracy of every round is
computed (it is the same computation either way) but only the selected round's is
reported, which is what testing the selected model once gives. The final-round numbers
above stay in the summary beside it.

Validation set: the dataset's own (`FederatedDataset.validation`) where the loader gives
one; otherwise the hook carves a seeded share of the test set (`eval_examples` examples,
at most half of it; 0 = half) and draws its test subset from the rest only, so the two
never overlap (`validation_source` in summary.json says which; the driver's own
`test_accuracy` still uses the whole test set).

How: the round hands out only aggregated results, so the hook rebuilds the round's
clients (`replay.py`, which calls the round's own `FedAvg.train_client`) from a copy of
the global model taken before the round: their proxies, and their local training. One
jitted, vmapped call per evaluated round; it costs about one extra round of local training
plus four evaluations per client. To keep that affordable, client proxies (and, for a
consistent gap, the global model) are evaluated on a fixed seeded subset of
`fedqsn.eval_examples` test examples (0 = the whole test set, where `protection_gap` is
exactly `test_accuracy - client_proxy_accuracy_after`). `server_masked_accuracy` uses the
same set.
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
_TAG_VALIDATION = 402
MODELS = ("global", "server_masked", "client_before", "client_after")


def _take(data: EvalData, idx) -> EvalData:
  return EvalData(*(np.asarray(a)[idx] for a in data))


def eval_subset(test: EvalData, examples: int, seed: int, batch_size: int) -> EvalData:
  """A seeded random subset of `examples` test examples (0 or more than all: all), batched."""
  n = len(np.asarray(test.mask))
  if examples and examples < n:
    idx = np.sort(np.random.default_rng([seed, _TAG_EVAL_SUBSET]).choice(n, examples,
                                                                         replace=False))
    test = _take(test, idx)
  return batch_eval_data(test, min(batch_size, len(np.asarray(test.mask))))


def carve_validation(test: EvalData, examples: int, seed: int) -> tuple[EvalData, EvalData]:
  """`(validation, rest of test)`: a seeded share of `examples` test examples (at most
  half of them; 0 = half) as a validation set, for datasets that give none."""
  n = len(np.asarray(test.mask))
  size = n // 2 if not examples else min(examples, n // 2)
  order = np.random.default_rng([seed, _TAG_VALIDATION]).permutation(n)
  return _take(test, np.sort(order[:size])), _take(test, np.sort(order[size:]))


class FedQSNMetrics:
  """Driver hook; see the module doc."""

  def __init__(self, eval_examples: int = 0):
    self.eval_examples = eval_examples
    self._prev = None
    self._fn = None
    self.history: list[dict] = []
    self.selected: dict[str, dict] = {}
    self.first_round = 1

  def on_start(self, exp, params):
    self._prev = jax.tree.map(jnp.copy, params)
    cfg, algo = exp.cfg, exp.algorithm
    test, validation = exp.data.test, exp.data.validation
    if validation is None:
      validation, test = carve_validation(test, self.eval_examples, cfg.seed)
      self.validation_source = "carved from the test set (seeded; disjoint from the test subset)"
    else:
      self.validation_source = "dataset"
      n_val = len(np.asarray(validation.mask))
      if self.eval_examples and self.eval_examples < n_val:
        # Each round evaluates every client's proxy twice on it: as large as the test
        # subset is enough (the cost that dominates a round of a large model).
        idx = np.sort(np.random.default_rng([cfg.seed, _TAG_VALIDATION]).choice(
            n_val, self.eval_examples, replace=False))
        validation = _take(validation, idx)
        self.validation_source = (f"dataset (a seeded subset of {self.eval_examples} of its "
                                  f"{n_val} examples)")
    self.validation_examples = int(np.asarray(validation.mask).sum())
    self._eval = jax.tree.map(jnp.asarray, eval_subset(
        test, self.eval_examples, cfg.seed, cfg.eval_batch_size))
    self._val = jax.tree.map(jnp.asarray, batch_eval_data(
        validation, min(cfg.eval_batch_size, len(np.asarray(validation.mask)))))
    self._base = keylib.base_key(cfg.seed)
    self._population = exp.data.train  # placed on device by the first call
    num_clients = exp.data.train.num_clients
    task = exp.task

    def both(p, eval_data, val_data):
      return evaluate(task, p, eval_data)["accuracy"], evaluate(task, p, val_data)["loss"]

    def client(shared, c):
      before_params, population, eval_data, val_data = shared
      cid, valid, ckey = c
      received, trained = replay.replay_client(algo, before_params, population, cid, ckey)
      keep = algo.downlink.client_keep(keylib.stage_key(ckey, keylib.PROXY))
      acc_b, loss_b = both(received.effective(), eval_data, val_data)
      acc_a, loss_a = both(received.effective(trained), eval_data, val_data)
      bits = algo.downlink.message_bits(keep)
      return jnp.zeros(()), (acc_b, acc_a, loss_b, loss_a, bits, valid)

    def measure(before_params, params, population, eval_data, val_data, base, rnd,
                noise_seed):
      cohort = replay.round_cohort(algo, base, rnd, num_clients, noise_seed)
      _, (acc_b, acc_a, loss_b, loss_a, bits, valid) = map_reduce(
          client, (before_params, population, eval_data, val_data),
          (cohort.client_ids, cohort.valid, cohort.keys), chunk_size=algo.chunk_size)
      neg = jnp.float32(-1.0)
      n_valid = valid.sum()
      by_val = lambda loss: jnp.argmin(jnp.where(valid, loss, jnp.inf))
      ib, ia = by_val(loss_b), by_val(loss_a)
      g_acc, g_loss = both(params, eval_data, val_data)
      s_acc, s_loss = both(algo.downlink.server_masked(params), eval_data, val_data)
      return {
          "global": g_acc, "server_masked": s_acc,
          "before": jnp.where(valid, acc_b, neg).max(),
          "after": jnp.where(valid, acc_a, neg).max(),
          "bits": jnp.where(valid, bits.astype(jnp.float32), 0.0).sum() / n_valid,
          "val_loss": {"global": g_loss, "server_masked": s_loss,
                       "client_before": loss_b[ib], "client_after": loss_a[ia]},
          "val_test_acc": {"global": g_acc, "server_masked": s_acc,
                           "client_before": acc_b[ib], "client_after": acc_a[ia]},
      }

    self._fn = jax.jit(measure)
    self._num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    return params

  def bookkeeping(self, exp):
    """The rounds' metrics and the selection so far, saved with every checkpoint."""
    del exp
    return {"fedqsn_metrics": {"history": self.history, "selected": self.selected}}

  def restore_bookkeeping(self, exp, saved):
    del exp
    if "fedqsn_metrics" in saved:  # checkpoints written before this bookkeeping lack it
      self.history = list(saved["fedqsn_metrics"]["history"])
      self.selected = dict(saved["fedqsn_metrics"]["selected"])
      self.first_round = 1

  def on_resume(self, exp, state, rnd):
    """Continues after round `rnd`: the next round's clients start from `state.params`.
    Without restored bookkeeping the selection by validation covers the rounds run
    since (`validation_selected_from`)."""
    del exp
    self._prev = jax.tree.map(jnp.copy, state.params)
    if not self.history:
      self.first_round = rnd + 1

  def on_round(self, exp, state, metrics, rnd, evaluated):
    del metrics
    out = {}
    if evaluated:
      if not isinstance(self._population.x, jax.Array):
        self._population = jax.tree.map(jnp.asarray, self._population)
      m = jax.device_get(self._fn(self._prev, state.params, self._population, self._eval,
                                  self._val, self._base, jnp.int32(rnd), state.noise_seed))
      out = {
          "server_masked_accuracy": float(m["server_masked"]),
          "client_proxy_accuracy_before": float(m["before"]),
          "client_proxy_accuracy_after": float(m["after"]),
          "protection_gap": float(m["global"] - m["after"]),
          "downlink_bits_per_param": float(m["bits"]) / self._num_params,
          "eval_set_global_accuracy": float(m["global"]),
          **{f"validation_loss_{k}": float(v) for k, v in m["val_loss"].items()},
          "client_proxy_accuracy_before_by_validation":
              float(m["val_test_acc"]["client_before"]),
          "client_proxy_accuracy_after_by_validation":
              float(m["val_test_acc"]["client_after"]),
      }
      self.history.append(out)
      for k in MODELS:
        loss = float(m["val_loss"][k])
        if k not in self.selected or loss < self.selected[k]["validation_loss"]:
          self.selected[k] = {"round": rnd, "validation_loss": loss,
                              "test_accuracy": float(m["val_test_acc"][k])}
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
    last["validation_selected"] = {k: self.selected[k] for k in MODELS}
    last["validation_selected_from"] = self.first_round
    last["validation_examples"] = self.validation_examples
    last["validation_source"] = self.validation_source
    return last
