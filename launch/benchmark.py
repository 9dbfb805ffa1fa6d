"""Speed benchmark on the pinned workload (see launch/workload.py).

    python -m launch.benchmark                        # all sections, a table at the end
    python -m launch.benchmark --sections=fedavg,ceiling_seq --rounds=5 --out=bench.json

Each measurement runs in its own subprocess (so its peak memory is its own and XLA
flags can differ), one after another, and the ratios printed at the end compare
measurements of this one invocation: the machine is shared and noisy, so compare
ratios within a run, never absolute times across runs.

Sections:
  fedavg        fedpriv's FedAvg round: 10 clients vmapped in chunks, lax.scan of local
                SGD steps, weighted sum; the pinned batches and init; round 1 is warm-up.
  ceiling_seq   the same number of SGD steps (300 x batch 20) of ONE model in a single
                lax.scan, batches pre-gathered: no clients, no aggregation.
  ceiling_vmap  10 independent models x 30 steps vmapped in the same chunks, batches
                pre-gathered, no aggregation: the federated round minus federated work.
  scaling       FedAvg rounds with 10, 100, 1,000 and 5,000 clients per round from a
                population of 6,000 clients of 10 examples (one local step of batch 10
                each): seconds per round, peak memory, and the compiled round's working
                memory (XLA's temp allocation), one subprocess per cohort size.
  private       the FedAvg round of `fedavg` with the whole update-privacy stack on the
                uplink (mask 90% of coordinates, clip, 12-bit quantization, distributed
                discrete Gaussian noise, secure aggregation of all 10 clients), the
                host-side key agreement and sharing included in each round's time.
  full          `private` plus FedQSN's proxy downlink (p1 0.5, p2 0.2, NF4 blocks of 64,
                built per client inside the round): both tiers.
  breakdown     where a round's time goes: compile vs run, and the run split into local
                training (the clients' map alone), aggregation (the full round minus
                that) and the server update, by timing nested variants of the round.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax

from fedpriv import keys as keylib
from fedpriv import rounds as roundlib
from fedpriv.cohort import map_reduce
from fedpriv.data import fashion_mnist, pack_clients, partition
from fedpriv.fedavg import ClientResult, FedAvg
from fedpriv.local import local_train
from fedpriv.models import make_task
from launch import workload

_SECTIONS = flags.DEFINE_list("sections", ["fedavg", "ceiling_seq", "ceiling_vmap",
                                           "private", "full", "breakdown", "scaling",
                                           "skew"],
                              "Measurements to run, in order.")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Rounds per measurement (first is warm-up).")
_CHUNK = flags.DEFINE_integer("chunk_size", 1, "Clients vmapped together.")
_CONV = flags.DEFINE_enum("conv_impl", "auto", ["auto", "im2col", "xla"],
                          "CNN convolution formulation (auto: xla for chunk 1, else im2col).")
_UNROLL = flags.DEFINE_integer("unroll", 5, "Unroll of the local-step scan.")
_EVAL = flags.DEFINE_bool("eval", False, "Also report test accuracy after the rounds.")
_OUT = flags.DEFINE_string("out", "", "Write all results as JSON here.")
_ONE = flags.DEFINE_string("one", "", "Internal: run one section in this process.")
_COHORTS = flags.DEFINE_list("scaling_cohorts", ["10", "100", "1000", "5000"],
                             "Clients per round for the scaling section.")
_COHORT = flags.DEFINE_integer("cohort", 10, "Internal: cohort of one scaling run.")
_SCALING_CHUNK = flags.DEFINE_integer("scaling_chunk", 10,
                                      "Clients vmapped together in the scaling section.")

EXAMPLES_PER_ROUND = 6000


def _peak_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _impl(chunk: int) -> str:
  if _CONV.value != "auto":
    return _CONV.value
  return "xla" if chunk == 1 else "im2col"


def _setup(conv_impl: str):
  """The pinned workload's task, initial weights and population (numpy)."""
  x, y = fashion_mnist.load("train")
  population = pack_clients(x, y, workload.partition())
  task = make_task("cnn", "classification", 10, (28, 28, 1), conv_impl=conv_impl)
  params = jax.tree.map(jnp.asarray, workload.initial_params())
  return task, params, population


def _pinned_fedavg(task, chunk: int, unroll: int, **links) -> FedAvg:
  """FedAvg on the pinned workload (its client learning rate, cohort and batch)."""
  return FedAvg(task=task, client_optimizer=optax.sgd(workload.LR),
                server_optimizer=optax.sgd(1.0), clients_per_round=workload.CLIENTS_PER_ROUND,
                local_epochs=1, batch_size=workload.BATCH, chunk_size=chunk, unroll=unroll,
                **links)


def _pinned_cohort(algo: FedAvg):
  """(base, round, ids, positions) -> the round's cohort with the pinned minibatches."""
  return lambda base, rnd, ids, pos: algo.pad_cohort(
      ids, keylib.round_key(base, rnd), batches=(pos, jnp.ones(pos.shape, bool)))


def _pinned_round(algo: FedAvg, state, pop, base):
  """The pinned workload's round through `roundlib.compile_round` (the driver's), as a
  step `(state, ids, positions, round) -> (state, train_loss)` for `_time_rounds`; the
  seconds the compile took (the first round's host step included); and the list that
  collects each round's host-step info."""
  t0 = time.perf_counter()
  round_fn = roundlib.compile_round(algo, state, pop, base, 1, *_pinned_inputs(1)[:2],
                                  cohort_fn=_pinned_cohort(algo))
  compile_s = time.perf_counter() - t0
  infos = []

  def step(state, ids, pos, rnd):
    del rnd  # the round is the state's
    state, m, info = round_fn(state, pop, base, ids, pos)
    infos.append(info)
    return state, m["train_loss"]

  return step, compile_s, infos


def _pinned_inputs(rnd: int):
  """The pinned sample and minibatch positions of round `rnd`, as device arrays."""
  ids, pos = workload.round_schedule(rnd)
  return jnp.asarray(ids), jnp.asarray(pos), jnp.asarray(rnd, jnp.int32)


def _compile(fn, *args, donate: bool = False):
  """`fn` jitted and compiled for `args`, and the seconds that took."""
  t0 = time.perf_counter()
  jitted = jax.jit(fn, donate_argnums=0) if donate else jax.jit(fn)
  compiled = jitted.lower(*args).compile()
  return compiled, time.perf_counter() - t0


def _median_call_s(compiled, args, repeats: int) -> float:
  """Median seconds of `repeats` calls after one warm-up call."""
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _time_rounds(step, state, inputs_for_round, rounds):
  times, cpu, losses = [], [], []
  for rnd in range(1, rounds + 1):
    inputs = inputs_for_round(rnd)
    t0, c0 = time.perf_counter(), time.process_time()
    state, loss = step(state, *inputs)
    jax.block_until_ready(state)
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
    losses.append(float(loss))
  _CPU_TIMES[:] = cpu
  return state, times, losses


_CPU_TIMES: list = []  # CPU seconds of this process per round: robust to other tenants


def _result(name, times, compile_s, losses=None, **extra):
  timed = times[1:] or times
  med = statistics.median(timed)
  out = {"section": name, "rounds": len(times), "sec_per_round_median": med,
         "sec_per_round_min": min(timed), "sec_per_round_max": max(timed),
         "examples_per_sec": EXAMPLES_PER_ROUND / med, "compile_s": compile_s,
         "peak_rss_mb": _peak_mb(), "round_s": times,
         "cpu_s_per_round_median": statistics.median(_CPU_TIMES[1:] or _CPU_TIMES)}
  if losses is not None:
    out["train_loss"] = losses
  out.update(extra)
  return out


def run_fedavg(rounds, chunk, unroll, evaluate):
  task, params, population = _setup(_impl(chunk))
  algo = _pinned_fedavg(task, chunk, unroll)
  pop = jax.tree.map(jnp.asarray, population)
  state = algo.init(params)
  step, compile_s, _ = _pinned_round(algo, state, pop, keylib.base_key(workload.SEED))
  state, times, losses = _time_rounds(step, state, _pinned_inputs, rounds)
  extra = {"chunk_size": chunk, "unroll": unroll, "conv_impl": _impl(chunk)}
  if evaluate:
    # pylint: disable=import-outside-toplevel
    from fedpriv.data import stack_eval
    from fedpriv.evaluate import batch_eval_data, evaluate as ev
    xt, yt = fashion_mnist.load("test")
    test = jax.tree.map(jnp.asarray, batch_eval_data(stack_eval(xt, yt), 250))
    extra["test_acc"] = float(jax.jit(lambda p, t: ev(task, p, t))(state.params, test)
                              ["accuracy"])
  return _result("fedavg", times, compile_s, losses, **extra)


def _sgd_scan(task, unroll):
  def train(params, xb, yb):
    ones = jnp.ones(xb.shape[1], bool)

    def sgd_step(p, batch):
      g, _ = jax.grad(task.mean_loss, has_aux=True)(p, batch[0], batch[1], ones)
      return jax.tree.map(lambda a, b: a - 0.05 * b, p, g), None

    return lax.scan(sgd_step, params, (xb, yb), unroll=unroll)[0]

  return train


def run_ceiling_seq(rounds, chunk, unroll):
  del chunk
  # One model, never vmapped: XLA's convolution with the im2col weight gradient is the
  # fastest formulation measured for this case.
  task, params, population = _setup("xla")
  train = _sgd_scan(task, unroll)

  def inputs(rnd):
    ids, pos = workload.round_schedule(rnd)
    xb = np.concatenate([population.x[c][pos[i]] for i, c in enumerate(ids)])
    yb = np.concatenate([population.y[c][pos[i]] for i, c in enumerate(ids)])
    return jnp.asarray(xb), jnp.asarray(yb)

  def step(p, xb, yb):
    p = train(p, xb, yb)
    return p, jnp.zeros(())

  compiled, compile_s = _compile(step, params, *inputs(1), donate=True)
  _, times, _ = _time_rounds(compiled, params, inputs, rounds)
  return _result("ceiling_seq", times, compile_s, unroll=unroll, conv_impl="xla")


def run_ceiling_vmap(rounds, chunk, unroll):
  task, params, population = _setup(_impl(chunk))
  train = _sgd_scan(task, unroll)

  def inputs(rnd):
    ids, pos = workload.round_schedule(rnd)
    xb = np.stack([population.x[c][pos[i]] for i, c in enumerate(ids)])
    yb = np.stack([population.y[c][pos[i]] for i, c in enumerate(ids)])
    return jnp.asarray(xb), jnp.asarray(yb)

  def step(p, xb, yb):
    out = lax.map(lambda b: train(p, b[0], b[1]), (xb, yb), batch_size=chunk)
    return jax.tree.map(lambda a: a[0], out), jnp.zeros(())

  compiled, compile_s = _compile(step, params, *inputs(1))
  _, times, _ = _time_rounds(compiled, params, inputs, rounds)
  return _result("ceiling_vmap", times, compile_s, chunk_size=chunk, unroll=unroll,
                 conv_impl=_impl(chunk))


def run_private(rounds, chunk, unroll, proxy=False):
  """The pinned round with the whole update-privacy stack (see the module docstring);
  with `proxy`, clients also receive FedQSN proxies instead of the model."""
  # The privacy and FedQSN modules load only in the sections that measure them.
  # pylint: disable=import-outside-toplevel
  from fedpriv.config import PrivacyConfig
  from fedpriv.privacy.mechanism import make_mechanism
  from fedpriv.privacy.uplink import PrivateUplink, flat_size_and_unravel
  task, params, population = _setup(_impl(chunk))

  size, unravel = flat_size_and_unravel(params)
  privacy = PrivacyConfig(enabled=True, clip=0.1, mask_ratio=0.9, bits=12,
                          noise="distributed", noise_multiplier=1.0, secagg=True)
  mech = make_mechanism(privacy, num_clients=100, cohort=workload.CLIENTS_PER_ROUND,
                        rounds=20, size=size)
  uplink = PrivateUplink(mech, unravel, workload.SEED)
  base = keylib.base_key(workload.SEED)
  links = {"uplink": uplink}
  if proxy:
    from fedpriv.fedqsn.private_uplink import PrivateProxyUplink
    from fedpriv.fedqsn.proxy import FedQSNDownlink
    from fedpriv.fedqsn.units import model_spec
    shapes = jax.eval_shape(lambda: params)
    downlink = FedQSNDownlink.make(model_spec("cnn", shapes), shapes, base, p1=0.5, p2=0.2,
                                   client_mask="exact", bits=4, block_size=64)
    links = {"downlink": downlink, "uplink": PrivateProxyUplink.make(uplink, downlink)}
  algo = _pinned_fedavg(task, chunk, unroll, **links)
  pop = jax.tree.map(jnp.asarray, population)
  state = algo.init(params)
  step, compile_s, infos = _pinned_round(algo, state, pop, base)
  state, times, losses = _time_rounds(step, state, _pinned_inputs, rounds)
  # The host step's own seconds (key agreement, sharing, dropouts), as it measures them.
  host_s = [info["secagg_seconds"] for info in infos]
  cohort, server_ctx, _ = algo.uplink.prepare_round(
      jax.jit(_pinned_cohort(algo))(base, 1, *_pinned_inputs(1)[:2]), 1)
  stages_s = _privacy_stages_s(algo, state.params, cohort, server_ctx, base, rounds)
  return _result("full" if proxy else "private", times, compile_s, losses, chunk_size=chunk,
                 unroll=unroll,
                 conv_impl=_impl(chunk), host_step_s=statistics.median(host_s[1:] or host_s),
                 privacy_stages_s=stages_s, ring_bits=mech.ring_bits, kept=mech.keep,
                 parameters=size)


def _privacy_stages_s(algo, params, cohort, server_ctx, base, rounds):
  """Seconds of the privacy stages alone for one round: every client's proxy (when the
  downlink builds one) and encode (mask, clip, quantize, noise, secure-aggregation mask)
  of a stand-in trained model, the sum, and the server's decode; no local training."""
  uplink = algo.uplink

  def stages(params, cohort, server_ctx):
    rkey = keylib.round_key(base, 1)
    round_ctx = uplink.round_context(params, keylib.server_key(rkey, keylib.UPLINK_PUBLIC),
                                     uplink.init_state())

    def one(shared, client):
      cid, _, ckey, _, ctx = client
      received = algo.downlink.client_model(shared, keylib.stage_key(ckey, keylib.PROXY))
      trained = jax.tree.map(lambda p: p + 1e-3 * (cid + 1).astype(p.dtype), received.params)
      result = ClientResult(received.params, trained, received.visible, jnp.float32(600.0))
      key = keylib.stage_key(ckey, keylib.PRIVATIZE)
      return uplink.encode(result, key, (round_ctx, ctx)), ()

    total, _ = map_reduce(one, params, tuple(cohort), chunk_size=algo.chunk_size)
    return uplink.decode(total, params, keylib.server_key(rkey, keylib.SERVER_NOISE),
                         (round_ctx, server_ctx))

  compiled, _ = _compile(stages, params, cohort, server_ctx)
  return _median_call_s(compiled, (params, cohort, server_ctx), max(rounds - 1, 1))


def run_scaling(cohort, chunk, unroll, rounds):
  x, y = fashion_mnist.load("train")
  pop = jax.tree.map(jnp.asarray, pack_clients(x, y, partition.iid(len(x), 6000, 0)))
  impl = _CONV.value if _CONV.value != "auto" else ("xla" if chunk == 1 else "im2col")
  task = make_task("cnn", "classification", 10, (28, 28, 1), conv_impl=impl)
  algo = FedAvg(task=task, client_optimizer=optax.sgd(0.05), server_optimizer=optax.sgd(1.0),
                clients_per_round=cohort, local_epochs=1, batch_size=10,
                chunk_size=min(chunk, cohort), unroll=unroll)
  state = algo.init(task.init(jax.random.key(0)))
  base = keylib.base_key(0)
  t0 = time.perf_counter()
  round_fn = roundlib.compile_round(algo, state, pop, base, 1)
  compile_s = time.perf_counter() - t0
  temp = round_fn.executable.memory_analysis().temp_size_in_bytes

  def step(state, base):
    state, m, _ = round_fn(state, pop, base)
    return state, m["train_loss"]

  _, times, _ = _time_rounds(step, state, lambda r: (base,), rounds)
  out = _result(f"scaling_{cohort}", times, compile_s, cohort=cohort,
                chunk_size=min(chunk, cohort), temp_mb=temp / 2**20)
  out["examples_per_sec"] = cohort * 10 / out["sec_per_round_median"]
  return out


def run_breakdown(rounds, chunk, unroll):
  """Times the full round and nested parts of it on the pinned workload."""
  task, params, population = _setup(_impl(chunk))
  algo = _pinned_fedavg(task, chunk, unroll)
  pop = jax.tree.map(jnp.asarray, population)
  pinned = _pinned_cohort(algo)
  cohort_of = lambda ids, pos, rnd: pinned(keylib.base_key(workload.SEED), rnd, ids, pos)

  def full(state, ids, pos, rnd):
    return algo.apply(state, pop, cohort_of(ids, pos, rnd))[0].params

  def train_only(state, ids, pos, rnd):
    # The clients' local training with nothing summed but the loss: no deltas, no
    # weighting, no server step.
    def one(shared, client):
      cid, _, _, batches, _ = client
      trained, stats = local_train(task, algo.client_optimizer, shared, pop.x[cid],
                                   pop.y[cid], *batches, unroll=unroll)
      leaf = jax.tree.leaves(trained)[0]
      return stats[0] + 0.0 * leaf.reshape(-1)[0], ()
    c = cohort_of(ids, pos, rnd)
    return map_reduce(one, state.params, tuple(c), chunk_size=chunk)[0]

  def aggregate_only(state, ids, pos, rnd):
    # Weighted sum of per-client deltas (fake trained models) and the server update.
    def one(shared, client):
      cid = client[0]
      trained = jax.tree.map(lambda p: p + 1e-3 * cid.astype(p.dtype), shared)
      w = jnp.float32(600.0)
      return {"d": jax.tree.map(lambda t, p: w * (t - p), trained, shared), "w": w}, ()
    c = cohort_of(ids, pos, rnd)
    total, _ = map_reduce(one, state.params, tuple(c), chunk_size=chunk)
    mean = jax.tree.map(lambda d: d / total["w"], total["d"])
    updates, _ = algo.server_optimizer.update(jax.tree.map(jnp.negative, mean),
                                              state.opt_state, state.params)
    return optax.apply_updates(state.params, updates)

  args = _pinned_inputs(1)
  state = algo.init(params)
  out = {"section": "breakdown", "chunk_size": chunk, "unroll": unroll,
         "conv_impl": _impl(chunk)}
  for name, fn in (("full_round", full), ("local_training", train_only),
                   ("aggregation_and_server", aggregate_only)):
    compiled, out[f"{name}_compile_s"] = _compile(fn, state, *args)
    out[f"{name}_s"] = _median_call_s(compiled, (state, *args), max(rounds - 1, 1))
  out["peak_rss_mb"] = _peak_mb()
  return out


class _RoundClock:
  """A `train.run` hook: each round's wall time and the examples and local steps its
  cohort really holds (recomputed from the round's keys, as the driver draws them)."""

  def __init__(self, cfg):
    self.cfg, self.rows, self.t = cfg, [], None

  def on_start(self, exp, params):
    self.t = time.perf_counter()
    return params

  def on_round(self, exp, state, metrics, rnd, evaluated):
    del metrics
    now = time.perf_counter()
    pop = exp.data.train
    cohort = exp.algorithm.sample_cohort(keylib.base_key(self.cfg.seed), rnd,
                                         pop.mask.shape[0], state.noise_seed)
    ids = np.asarray(cohort.client_ids)[np.asarray(cohort.valid)]
    sizes = np.asarray(pop.mask).sum(axis=1)[ids]
    steps = int(np.sum(-(-sizes // self.cfg.batch_size))) * self.cfg.local_epochs
    self.rows.append({"round": rnd, "s": now - self.t, "examples": int(sizes.sum()),
                      "steps": steps, "evaluated": bool(evaluated)})
    self.t = time.perf_counter()  # this hook's own bookkeeping is not a round's time
    return {}


def run_skew(rounds, chunk, unroll):
  """The fedavg preset's population (60,000 images over 100 clients, 10 per round, one
  epoch of batch 20) split IID and Dirichlet(0.1), through the driver (`train.run`):
  seconds per round and per 1,000 examples the sampled clients really hold (the first
  round, which compiles, and the evaluated last round are not timed)."""
  # pylint: disable=import-outside-toplevel
  from fedpriv import train
  from fedpriv.config import Config
  out = {"section": "skew", "chunk_size": chunk, "unroll": unroll}
  for part in ("iid", "dirichlet"):
    cfg = Config(partition=part, dirichlet_alpha=0.1, rounds=rounds + 1, eval_every=rounds + 1,
                 checkpoint_every=0, chunk_size=chunk, unroll=unroll, learning_rate=0.2)
    exp = train.build(cfg)
    clock = _RoundClock(cfg)
    exp.hooks.append(clock)
    train.run(exp, None, log=lambda *_: None)
    timed = [r for r in clock.rows[1:] if not r["evaluated"]]
    sizes = np.asarray(exp.data.train.mask).sum(axis=1)
    s, ex = sum(r["s"] for r in timed), sum(r["examples"] for r in timed)
    out[part] = {"s_per_round": s / len(timed), "examples_per_round": ex / len(timed),
                 "s_per_1000_examples": 1000.0 * s / ex,
                 "steps_per_round": sum(r["steps"] for r in timed) / len(timed),
                 "largest_client": int(sizes.max()), "mean_client": float(sizes.mean()),
                 "rounds_timed": len(timed)}
  out["dirichlet_over_iid_per_example"] = (out["dirichlet"]["s_per_1000_examples"]
                                           / out["iid"]["s_per_1000_examples"])
  out["peak_rss_mb"] = _peak_mb()
  return out


SECTIONS = {
    "fedavg": lambda: run_fedavg(_ROUNDS.value, _CHUNK.value, _UNROLL.value, _EVAL.value),
    "ceiling_seq": lambda: run_ceiling_seq(_ROUNDS.value, _CHUNK.value, _UNROLL.value),
    "ceiling_vmap": lambda: run_ceiling_vmap(_ROUNDS.value, _CHUNK.value, _UNROLL.value),
    "private": lambda: run_private(_ROUNDS.value, _CHUNK.value, _UNROLL.value),
    "full": lambda: run_private(_ROUNDS.value, _CHUNK.value, _UNROLL.value, proxy=True),
    "scaling": lambda: run_scaling(_COHORT.value, _SCALING_CHUNK.value, 1,
                                   max(_ROUNDS.value // 2, 2)),
    "breakdown": lambda: run_breakdown(_ROUNDS.value, _CHUNK.value, _UNROLL.value),
    "skew": lambda: run_skew(_ROUNDS.value, _CHUNK.value, _UNROLL.value),
}


def _run_subprocess(section: str, *extra: str) -> dict:
  argv = [sys.executable, "-m", "launch.benchmark", f"--one={section}", *extra,
          f"--scaling_chunk={_SCALING_CHUNK.value}",
          f"--rounds={_ROUNDS.value}", f"--chunk_size={_CHUNK.value}",
          f"--unroll={_UNROLL.value}", f"--eval={_EVAL.value}",
          f"--conv_impl={_CONV.value}"]
  proc = subprocess.run(argv, capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    raise RuntimeError(f"benchmark section {section} failed:\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1])


def _table(results: list[dict]) -> str:
  head = ("| section | s/round (median) | CPU s/round | examples/s | compile s | peak MB |\n"
          "|---|---|---|---|---|---|")
  rows = [f"| {r['section']} | {r['sec_per_round_median']:.3f} | "
          f"{r['cpu_s_per_round_median']:.2f} | {r['examples_per_sec']:.0f} | "
          f"{r['compile_s']:.1f} | {r['peak_rss_mb']:.0f} |" for r in results]
  return "\n".join([head] + rows)


def _machine() -> str:
  import platform  # pylint: disable=import-outside-toplevel
  cpu = ""
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
  except OSError:
    pass
  return (f"{os.cpu_count()} CPUs ({cpu or platform.processor()}), "
          f"jax {jax.__version__}, backend {jax.default_backend()}, "
          f"load average {os.getloadavg()[0]:.2f}")


def main(argv):
  del argv
  if _ONE.value:
    if _ONE.value not in SECTIONS:
      raise app.UsageError(f"unknown section {_ONE.value!r}; known: {sorted(SECTIONS)}")
    print(json.dumps(SECTIONS[_ONE.value]()), flush=True)
    return
  unknown = [s for s in _SECTIONS.value if s not in SECTIONS]
  if unknown:
    raise app.UsageError(f"unknown sections {unknown}; known: {sorted(SECTIONS)}")
  results, extras = [], []
  for section in _SECTIONS.value:
    runs = ([("scaling", f"--cohort={c}") for c in _COHORTS.value] if section == "scaling"
            else [(section,)])
    for run in runs:
      print(f"running {' '.join(run)} ...", flush=True)
      r = _run_subprocess(*run)
      if r.get("section") == "skew":
        extras.append(r)
        for part in ("iid", "dirichlet"):
          v = r[part]
          print(f"  skew {part}: {v['s_per_round']:.2f} s/round, "
                f"{v['examples_per_round']:.0f} examples and {v['steps_per_round']:.0f} "
                f"steps per round, {v['s_per_1000_examples']:.3f} s per 1,000 examples "
                f"(clients: largest {v['largest_client']}, mean {v['mean_client']:.0f})",
                flush=True)
        print(f"  Dirichlet(0.1) / IID per example: "
              f"{r['dirichlet_over_iid_per_example']:.2f}", flush=True)
        continue
      if "sec_per_round_median" not in r:
        extras.append(r)
        print("  " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in r.items()), flush=True)
        continue
      results.append(r)
      print(f"  {r['section']}: {r['sec_per_round_median']:.3f} s/round, "
            f"{r['examples_per_sec']:.0f} examples/s, compile {r['compile_s']:.1f} s, "
            f"peak {r['peak_rss_mb']:.0f} MB"
            + (f", temp {r['temp_mb']:.1f} MB" if "temp_mb" in r else ""), flush=True)
  print(_table(results))
  print(f"machine: {_machine()}")
  by = {r["section"]: r for r in results}
  if "fedavg" in by:
    fed = by["fedavg"]
    if "train_loss" in fed:
      got = ", ".join(f"round {k}: {fed['train_loss'][k - 1]:.4f} (peers {v})"
                      for k, v in workload.REFERENCE_LOSSES.items() if k <= len(fed["train_loss"]))
      print(f"loss cross-check: {got}")
    for name in ("private", "full"):
      if name not in by:
        continue
      ratio = by[name]["sec_per_round_median"] / fed["sec_per_round_median"]
      cpu = by[name]["cpu_s_per_round_median"] / fed["cpu_s_per_round_median"]
      print(f"{name} / fedavg round time = {ratio:.2f} (CPU time {cpu:.2f}; host step "
            f"{by[name]['host_step_s'] * 1e3:.1f} ms, privacy stages alone "
            f"{by[name]['privacy_stages_s']:.2f} s)")
    ceilings = [by[c] for c in ("ceiling_seq", "ceiling_vmap") if c in by]
    if ceilings:
      best = max(c["examples_per_sec"] for c in ceilings)
      print(f"fedavg / best ceiling = {fed['examples_per_sec'] / best:.2f}")
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump({"results": results + extras, "argv": sys.argv[1:], "machine": _machine()},
              f, indent=1)


if __name__ == "__main__":
  app.run(main)
