"""The experiment driver: builds everything from a `Config`, runs the rounds, and writes
`metrics.jsonl` (one line per evaluated round) and `summary.json` to a workdir.

    experiment = build(cfg)              # loads data; raises ConfigError on bad input
    summary = run(experiment, workdir)   # trains, evaluates, writes results
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from fedpriv import keys as keylib
from fedpriv import algorithms, optimizers, plots, rounds
from fedpriv.cohort import client_mesh
from fedpriv.config import Config, ConfigError, cohort_capacity
from fedpriv.data import FederatedDataset, load_dataset
from fedpriv.evaluate import batch_eval_data, evaluate
from fedpriv.fedavg import FedAvg, PlainDownlink, PlainUplink
from fedpriv.models.registry import Task, make_task
from fedpriv.schedule import steps_per_epoch
from fedpriv.workdir import (PREEMPTED_EXIT, Preempted, StopRequests, Workdir,  # noqa: F401
                             WorkdirError, claim)


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
    `on_resume(exp, state, rnd)`: the run continues from a checkpoint taken after
      round `rnd`; rebuild any per-run bookkeeping (keys are counters, so most state
      can be recomputed).
    `bookkeeping(exp) -> dict`: JSON-able per-run bookkeeping that cannot be
      recomputed from the state (e.g. the privacy ledger's running totals); saved with
      every checkpoint and handed back, merged over all hooks, to
    `restore_bookkeeping(exp, saved)` when the run resumes from that checkpoint.
    `on_continue(exp, changes, rnd)`: the workdir's run is being continued after round
      `rnd` with a changed config (`changes`: dotted key -> [old, new], only keys of
      `fedpriv.workdir.CONTINUABLE`); raise ConfigError if the hook cannot follow.
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
  task = make_task(cfg.model, data.task, data.num_classes, example_shape,
                   conv_impl=cfg.resolved_conv_impl, vocab=data.vocab)
  local_steps = cfg.local_epochs * steps_per_epoch(data.train.max_examples, cfg.batch_size)
  # Data-flow order: what clients receive first; the uplink, the privacy ledger and the
  # hooks are built from it.
  downlink, fedqsn_hooks = PlainDownlink(), []
  if cfg.fedqsn.enabled:  # model privacy: fedpriv/fedqsn (proxies down)
    from fedpriv.fedqsn import setup as fedqsn  # pylint: disable=import-outside-toplevel
    downlink = fedqsn.build_downlink(cfg, task)
  uplink, report = PlainUplink(), None
  if cfg.privacy.enabled:  # update privacy: fedpriv/privacy
    from fedpriv.privacy import setup as privacy  # pylint: disable=import-outside-toplevel
    uplink, report = privacy.build(cfg, task, data.train.num_clients,
                                   downlink_bits_per_param=downlink.bits_per_param)
  if cfg.fedqsn.enabled:
    uplink, fedqsn_hooks = fedqsn.build(cfg, data, downlink,
                                        private=uplink if cfg.privacy.enabled else None)
  shapes = jax.eval_shape(task.init, keylib.init_key(keylib.base_key(cfg.seed)))
  rule = algorithms.from_config(cfg, data.train.num_clients, shapes)
  state_hooks = []
  if rule.state_bytes(shapes):
    state_hooks.append(algorithms.StateReport(rule.state_bytes(shapes)))
  algorithm = FedAvg(
      task=task,
      client_optimizer=optimizers.client_optimizer(cfg, local_steps),
      server_optimizer=optimizers.server_optimizer(cfg),
      clients_per_round=cfg.clients_per_round,
      local_epochs=cfg.local_epochs,
      batch_size=cfg.batch_size,
      chunk_size=min(cfg.chunk_size, cohort_capacity(cfg, data.train.num_clients)),
      unroll=cfg.unroll,
      mesh=mesh,
      dropout=cfg.dropout,
      rule=rule,
      client_sampling=cfg.client_sampling,
      capacity=cohort_capacity(cfg, data.train.num_clients),
      # Update privacy's epsilon against observers assumes secret cohorts: draw them
      # from the state's secret key, not from the seed that config.json records.
      secret_cohorts=cfg.privacy.enabled and not cfg.privacy.reproducible_noise,
      downlink=downlink,
      uplink=uplink,
  )
  # The privacy report runs last, so summary.json's downlink_bits_per_param is the
  # ledger's (the proxy plus secure aggregation's messages).
  hooks = [*fedqsn_hooks, *state_hooks, *([report] if report is not None else [])]
  return Experiment(cfg, data, task, algorithm, hooks)


def num_params(params) -> int:
  return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def _put(tree, mesh):
  if mesh is None:
    return jax.tree.map(jnp.asarray, tree)
  return jax.device_put(tree, NamedSharding(mesh, P()))


def fetch(x) -> np.ndarray:
  """A device value as numpy, also when it spans several processes (replicated)."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(x)
  return np.asarray(x.addressable_data(0))


def params_fingerprint(params) -> dict:
  """Order-independent statistics of a model, to compare runs without saving them."""
  leaves = [fetch(p).astype(np.float64) for p in jax.tree.leaves(params)]
  return {"params_sum": float(sum(l.sum() for l in leaves)),
          "params_l2": float(np.sqrt(sum((l * l).sum() for l in leaves)))}


def _jsonable(metrics: dict) -> dict:
  out = {}
  for k, v in metrics.items():
    v = np.asarray(v)
    out[k] = v.item() if v.ndim == 0 else v.tolist()
  return out


def noise_key(cfg: Config, base: jax.Array) -> jax.Array:
  """The base key of the run's DP noise and randomized rounding.

  A fresh secret from the OS (`keys.secret_key`), the same on every process of a
  multi-process run, unless `privacy.reproducible_noise` asks for one derived from the
  seed (then every epsilon in summary.json is marked "simulation only"). Either way it
  lives only in the server state and its checkpoints, never in a log or metrics file.
  """
  if cfg.privacy.reproducible_noise:
    return keylib.simulation_noise_key(base)
  key = keylib.secret_key()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    data = multihost_utils.broadcast_one_to_all(np.asarray(jax.random.key_data(key)))
    key = jax.random.wrap_key_data(np.asarray(data, np.uint32))
  return key


def run(exp: Experiment, workdir: str | os.PathLike | None, log=print) -> dict[str, Any]:
  """Trains for `cfg.rounds` rounds, resuming from the workdir's newest checkpoint;
  returns (and writes) the summary.

  Raises:
    WorkdirError: the workdir is held by another live process, holds another run, or
      has checkpoints none of which restores.
    ConfigError: the run cannot be continued with this config, or its compiled round
      needs more memory than the machine has.
    Preempted: SIGTERM or SIGINT stopped the run after a round, with a checkpoint.
  """
  # With several processes (jax.distributed) every process runs the same program on
  # its share of the cohort; only process 0 writes, prints and holds the workdir's lock.
  lead = jax.process_index() == 0
  if not lead:
    log = lambda *a, **k: None
  wd = (Workdir(pathlib.Path(workdir), exp.cfg.to_dict(), write=lead, log=log,
                defaults=Config().to_dict())
        if workdir is not None else None)
  try:
    return _run(exp, wd, log)
  finally:
    if wd is not None:
      wd.close()


def _gib(n: int) -> str:
  return f"{n / 2**30:.2f} GiB"


def available_memory(device) -> tuple[int, str]:
  """Bytes a new allocation can still get on `device`, and where the figure comes from:
  the accelerator's free memory, or on CPU the host's available memory (the lower of
  /proc/meminfo's MemAvailable and the cgroup's limit minus its usage)."""
  stats = device.memory_stats() if device.platform != "cpu" else None
  if stats and "bytes_limit" in stats:
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"free on {device.device_kind}"
  found = []
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          found.append((int(line.split()[1]) * 1024, "available on this host"))
  except OSError:
    pass
  try:
    limit = pathlib.Path("/sys/fs/cgroup/memory.max").read_text().strip()
    if limit != "max":
      used = int(pathlib.Path("/sys/fs/cgroup/memory.current").read_text())
      found.append((int(limit) - used, "left under this cgroup's memory limit"))
  except (OSError, ValueError):
    pass
  return min(found) if found else (2**62, "unknown")


def check_memory(*compiled, device, available=None) -> int:
  """Refuses a run whose compiled steps need more working memory than `device` has
  free (before any round runs, rather than dying from the OOM killer mid-run).

  The need is XLA's memory analysis: temporaries plus outputs not aliased to donated
  inputs, the largest over the steps (they run one after another; their inputs are
  already resident). Returns the need in bytes.

  Raises:
    ConfigError: the estimate and the limit, naming the options that shrink it.
  """
  need = 0
  for c in compiled:
    m = c.memory_analysis()
    if m is None:  # a backend without the analysis: nothing to check against
      return 0
    need = max(need, m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)
  limit, where = available if available is not None else available_memory(device)
  if need > limit:
    raise ConfigError("chunk_size", f"a compiled round needs {_gib(need)} of working memory "
                      f"(XLA's estimate) but {_gib(limit)} is {where}; lower chunk_size "
                      "(clients trained at once), batch_size or the model's size")
  return need


def _check_restored(step, state, meta) -> None:
  missing = {"round_times", "last_eval", "hooks"} - set(meta or {})
  if missing:
    raise ValueError(f"its bookkeeping lacks {sorted(missing)}")
  rnd = getattr(state, "round", None)
  if rnd is not None and int(fetch(rnd)) != step:
    raise ValueError(f"it holds round {int(fetch(rnd))}, not {step}")


def _run(exp: Experiment, wd: Workdir | None, log) -> dict[str, Any]:
  cfg, algo, task, data = exp.cfg, exp.algorithm, exp.task, exp.data
  base = keylib.base_key(cfg.seed)
  t_start = time.perf_counter()
  params = task.init(keylib.init_key(base))
  for hook in exp.hooks:
    if hasattr(hook, "on_start"):
      params = hook.on_start(exp, params)
  n_params = num_params(params)
  population = _put(data.train, algo.mesh)
  test = _put(batch_eval_data(data.test, cfg.eval_batch_size), algo.mesh)
  state = _put(algo.init(params, noise_key(cfg, base)), algo.mesh)

  round_times, last_eval, first, history = [], {}, 1, []
  restored = wd.restore_newest(state, check=_check_restored) if wd is not None else None
  if restored is not None:
    step, restored_state, meta = restored
    if step > cfg.rounds:
      raise WorkdirError(f"{wd.path} holds {step} rounds; rounds={cfg.rounds} cannot undo "
                         "them (a run can only be continued for more rounds)")
    if wd.changes:
      exp.call_hooks("on_continue", wd.changes, step)  # a hook may refuse (ConfigError)
      log(f"fedpriv: continuing {wd.path} after round {step} with " + ", ".join(
          f"{k} {a} -> {b}" for k, (a, b) in wd.changes.items()))
    state = _put(restored_state, algo.mesh)
    round_times, last_eval, first = list(meta["round_times"]), dict(meta["last_eval"]), step + 1
    wd.keep_metrics_through(step)
    exp.call_hooks("restore_bookkeeping", meta["hooks"])
    exp.call_hooks("on_resume", state, step)
    log(f"fedpriv: resuming {wd.path} after round {step}")
  elif wd is not None:
    wd.keep_metrics_through(0)
  eval_fn = jax.jit(lambda p, t: evaluate(task, p, t))
  t0 = time.perf_counter()
  # One compile for the whole run (a retrace would mean shapes changed); an uplink's
  # host step (secure aggregation's key agreement) runs inside `compiled_round`.
  compiled_round = rounds.compile_round(algo, state, population, base, first)
  compiled_eval = eval_fn.lower(state.params, test).compile()
  compile_s = time.perf_counter() - t0
  check_memory(compiled_round.executable, compiled_eval, device=jax.local_devices()[0])
  if wd is not None:  # from here on the workdir holds this run (and its config)
    history = wd.accept_config(first - 1)
  log(f"fedpriv: {data.name} ({data.train.num_clients} clients, {n_params:,} params), "
      f"{cfg.model}, {cfg.clients_per_round} clients/round, compiled in {compile_s:.1f}s")

  stops = StopRequests() if wd is not None else contextlib.nullcontext()
  with stops:
    for rnd in range(first, cfg.rounds + 1):
      t0 = time.perf_counter()
      state, m, info = compiled_round(state, population, base)
      m = {**m, **info}  # the host step's info (e.g. protocol bytes) reaches the hooks
      train_loss = float(fetch(m["train_loss"]))  # blocks until the round is done
      seconds = time.perf_counter() - t0
      round_times.append(seconds)
      finite = np.isfinite(train_loss)
      evaluate_now = rnd % cfg.eval_every == 0 or rnd == cfg.rounds or not finite
      dropped = int(fetch(m["clients_dropped_nonfinite"]))
      line = (f"round {rnd:4d}/{cfg.rounds}  train_loss {train_loss:.4f}  "
              f"train_acc {float(fetch(m['train_accuracy'])):.4f}")
      extra = exp.call_hooks("on_round", state, m, rnd, evaluate_now)
      if evaluate_now:
        ev = compiled_eval(state.params, test)
        last_eval = {"test_accuracy": float(fetch(ev["accuracy"])),
                     "test_loss": float(fetch(ev["loss"]))}
        line += (f"  test_loss {last_eval['test_loss']:.4f}  "
                 f"test_acc {last_eval['test_accuracy']:.4f}")
        if wd is not None:
          wd.metrics({"round": rnd, **last_eval, "train_loss": train_loss,
                      "train_accuracy": float(fetch(m["train_accuracy"])),
                      "clients_dropped_nonfinite": dropped, **extra,
                      "seconds": seconds, "elapsed": time.perf_counter() - t_start})
      if dropped:
        line += f"  dropped {dropped} non-finite client update(s)"
      log(line + f"  {seconds:.2f}s")
      # A signal (preemption, Ctrl-C) is honoured once the round is done and saved.
      stop = stops.requested() if wd is not None and finite and rnd < cfg.rounds else None
      if wd is not None and (rnd == cfg.rounds or not finite or stop or
                             (cfg.checkpoint_every and rnd % cfg.checkpoint_every == 0)):
        wd.save(rnd, state, {"round_times": round_times, "last_eval": last_eval,
                             "hooks": exp.call_hooks("bookkeeping")})
      if not finite:
        log(f"round {rnd}: training loss is {train_loss}; stopping")
        break
      if stop:
        log(f"fedpriv: {stop}: stopped after round {rnd} and saved a checkpoint; the same "
            "command continues the run")
        raise Preempted(rnd, stop)

  summary = {
      **last_eval,
      "rounds": len(round_times),
      "seconds_per_round": statistics.median(round_times) if round_times else 0.0,
      "seconds_per_round_mean": statistics.fmean(round_times) if round_times else 0.0,
      "compile_seconds": compile_s,
      "total_seconds": time.perf_counter() - t_start,
      "uplink_bits_per_param": float(algo.uplink.bits_per_param),
      "downlink_bits_per_param": float(algo.downlink.bits_per_param),
      "num_params": n_params,
      **params_fingerprint(state.params),
      "processes": jax.process_count(),
      "devices": algo.num_devices,
      "num_clients": data.train.num_clients,
      "dataset": data.name,
      "model": cfg.model,
      "data_info": data.info,
      "config": cfg.to_dict(),
  }
  if history:  # the run was continued with another rounds (or cadence) at some point
    summary["config_history"] = history
  summary.update(exp.call_hooks("on_end", state))
  if wd is not None:
    wd.summary(summary)
    if wd.write:
      plots.plot_curves(wd.path, f"{data.name}, {cfg.model}, {cfg.clients_per_round} "
                        "clients/round")
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
