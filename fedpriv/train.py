"""The experiment driver: builds everything from a `Config`, runs the rounds, and writes
`metrics.jsonl` (one line per evaluated round) and `summary.json` to a workdir.

    experiment = build(cfg)              # loads data; raises ConfigError on bad input
    summary = run(experiment, workdir)   # trains, evaluates, writes results
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import statistics
import sys
import time
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from fedpriv import keys as keylib
from fedpriv import optimizers
from fedpriv.cohort import client_mesh
from fedpriv.config import Config, ConfigError
from fedpriv.data import FederatedDataset, load_dataset
from fedpriv.evaluate import batch_eval_data, evaluate
from fedpriv.fedavg import FedAvg
from fedpriv.fedqsn.setup import attach_fedqsn
from fedpriv.models.registry import Task, make_task


@dataclasses.dataclass
class Experiment:
  """Everything a run needs.

  `hooks` are objects with optional methods, called by `run`:
    `on_start(exp, params) -> params`: may replace the initial model (e.g. a
      server-pretrained one); called before compilation.
    `on_round(exp, state, metrics, rnd, evaluated) -> dict`: extra flat metrics for
      the round's record (written to metrics.jsonl on evaluated rounds).
    `on_end(exp, state) -> dict`: extra keys for summary.json (may override defaults,
      e.g. measured bits per parameter).
  """
  cfg: Config
  data: FederatedDataset
  task: Task
  algorithm: FedAvg
  hooks: list = dataclasses.field(default_factory=list)

  def call_hooks(self, method: str, *args) -> dict:
    out = {}
    for hook in self.hooks:
      fn = getattr(hook, method, None)
      if fn is not None:
        out.update(fn(self, *args) or {})
    return out


def build(cfg: Config) -> Experiment:
  """Loads the data and builds the model and algorithm; does no training.

  Raises:
    ConfigError: for anything about the config or the data that cannot work.
  """
  mesh = None
  if cfg.num_devices:
    if cfg.num_devices > jax.device_count():
      raise ConfigError("num_devices", f"must be <= the {jax.device_count()} devices "
                        f"JAX sees, got {cfg.num_devices}")
    mesh = client_mesh(cfg.num_devices)
  data = load_dataset(cfg)
  example_shape = tuple(data.train.x.shape[2:])
  task = make_task(cfg.model, data.task, data.num_classes, example_shape)
  algorithm = FedAvg(
      task=task,
      client_optimizer=optimizers.client_optimizer(cfg),
      server_optimizer=optimizers.server_optimizer(cfg),
      clients_per_round=cfg.clients_per_round,
      local_epochs=cfg.local_epochs,
      batch_size=cfg.batch_size,
      chunk_size=min(cfg.chunk_size, cfg.clients_per_round),
      unroll=cfg.unroll,
      mesh=mesh,
  )
  experiment = Experiment(cfg, data, task, algorithm)
  if cfg.fedqsn.enabled:
    experiment = attach_fedqsn(experiment)
  return experiment


def num_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def _put(tree, mesh):
  if mesh is None:
    return jax.tree.map(jnp.asarray, tree)
  return jax.device_put(tree, NamedSharding(mesh, P()))


def _jsonable(metrics: dict) -> dict:
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    out[k] = v.item() if v.ndim == 0 else v.tolist()
  return out


class _Writer:
  """Appends one JSON object per line; the summary is replaced atomically."""

  def __init__(self, workdir: pathlib.Path):
    self.workdir = workdir
    workdir.mkdir(parents=True, exist_ok=True)
    self.metrics_path = workdir / "metrics.jsonl"
    self.metrics_path.write_text("")

  def metrics(self, record: dict) -> None:
    with open(self.metrics_path, "a") as f:
      f.write(json.dumps(record) + "\n")
      f.flush()
      os.fsync(f.fileno())

  def summary(self, record: dict) -> None:
    tmp = self.workdir / "summary.json.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, self.workdir / "summary.json")


def run(exp: Experiment, workdir: str | os.PathLike | None, log=print) -> dict[str, Any]:
  """Trains for `cfg.rounds` rounds; returns (and writes) the summary."""
  cfg, algo, task, data = exp.cfg, exp.algorithm, exp.task, exp.data
  writer = _Writer(pathlib.Path(workdir)) if workdir is not None else None
  base = keylib.base_key(cfg.seed)
  t_start = time.perf_counter()
  params = task.init(keylib.init_key(base))
  for hook in exp.hooks:
    if hasattr(hook, "on_start"):
      params = hook.on_start(exp, params)
  n_params = num_params(params)
  population = _put(data.train, algo.mesh)
  test = _put(batch_eval_data(data.test, cfg.eval_batch_size), algo.mesh)
  state = _put(algo.init(params), algo.mesh)

  # One trace, one compile for the whole run: a retrace would mean shapes changed.
  round_fn = jax.jit(chex.assert_max_traces(algo.run_round, n=1), donate_argnums=0)
  eval_fn = jax.jit(lambda p, t: evaluate(task, p, t))
  t0 = time.perf_counter()
  compiled_round = round_fn.lower(state, population, base).compile()
  compiled_eval = eval_fn.lower(state.params, test).compile()
  compile_s = time.perf_counter() - t0
  log(f"fedpriv: {data.name} ({data.train.num_clients} clients, {n_params:,} params), "
      f"{cfg.model}, {cfg.clients_per_round} clients/round, compiled in {compile_s:.1f}s")

  round_times, last_eval = [], {}
  for rnd in range(1, cfg.rounds + 1):
    t0 = time.perf_counter()
    state, m = compiled_round(state, population, base)
    train_loss = float(m["train_loss"])  # blocks until the round is done
    seconds = time.perf_counter() - t0
    round_times.append(seconds)
    if not np.isfinite(train_loss):
      log(f"round {rnd}: training loss is {train_loss}; stopping")
    evaluate_now = rnd % cfg.eval_every == 0 or rnd == cfg.rounds or not np.isfinite(
        train_loss)
    line = (f"round {rnd:4d}/{cfg.rounds}  train_loss {train_loss:.4f}  "
            f"train_acc {float(m['train_accuracy']):.4f}")
    extra = exp.call_hooks("on_round", state, m, rnd, evaluate_now)
    if evaluate_now:
      ev = compiled_eval(state.params, test)
      last_eval = {"test_accuracy": float(ev["accuracy"]), "test_loss": float(ev["loss"])}
      line += (f"  test_loss {last_eval['test_loss']:.4f}  "
               f"test_acc {last_eval['test_accuracy']:.4f}")
      record = {"round": rnd, **last_eval, "train_loss": train_loss,
                "train_accuracy": float(m["train_accuracy"]), "seconds": seconds,
                "elapsed": time.perf_counter() - t_start, **extra}
      if writer:
        writer.metrics(record)
    log(line + f"  {seconds:.2f}s")
    if not np.isfinite(train_loss):
      break

  summary = {
      **last_eval,
      "rounds": len(round_times),
      "seconds_per_round": statistics.median(round_times),
      "seconds_per_round_mean": statistics.fmean(round_times),
      "compile_seconds": compile_s,
      "total_seconds": time.perf_counter() - t_start,
      "uplink_bits_per_param": float(algo.uplink.bits_per_param),
      "downlink_bits_per_param": float(algo.downlink.bits_per_param),
      "num_params": n_params,
      "num_clients": data.train.num_clients,
      "dataset": data.name,
      "model": cfg.model,
      "data_info": data.info,
      "config": cfg.to_dict(),
  }
  summary.update(exp.call_hooks("on_end", state))
  if writer:
    writer.summary(summary)
  log(results_table(summary))
  return summary


def results_table(summary: dict) -> str:
  rows = [
      ("dataset", summary["dataset"]), ("model", summary["model"]),
      ("clients", summary["num_clients"]), ("rounds", summary["rounds"]),
      ("test accuracy", f"{summary.get('test_accuracy', float('nan')):.4f}"),
      ("test loss", f"{summary.get('test_loss', float('nan')):.4f}"),
      ("seconds / round", f"{summary['seconds_per_round']:.2f}"),
      ("compile seconds", f"{summary['compile_seconds']:.1f}"),
      ("uplink bits / param", f"{summary['uplink_bits_per_param']:g}"),
      ("downlink bits / param", f"{summary['downlink_bits_per_param']:g}"),
  ]
  width = max(len(k) for k, _ in rows)
  lines = ["| " + "metric".ljust(width) + " | value |", "|" + "-" * (width + 2) + "|-------|"]
  lines += [f"| {k.ljust(width)} | {v} |" for k, v in rows]
  return "\n".join(lines)


def train_and_evaluate(cfg: Config, workdir: str | os.PathLike | None) -> dict[str, Any]:
  return run(build(cfg), workdir)


if __name__ == "__main__":  # pragma: no cover
  sys.exit("use `python -m launch.train --config=...`")
