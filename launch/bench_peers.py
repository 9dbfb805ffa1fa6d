"""Many small clients: fedpriv against a hand-written PyTorch loop and Flower, one run.

    make bench-peers          # creates .venv-torch and .venv-flwr, then runs this
    python -m launch.bench_peers --models=cnn --out=peers.json --md=peers.md
    python -m launch.bench_peers --peers= --overhead_chunks=1,10,50,100,250,1000

The workload is `launch/many_clients.py`: 6,000 Fashion-MNIST clients of 10 examples,
1,000 per round, one SGD step of batch 10 each, the same clients, batches and initial
weights (written once to `<workdir>/init_<model>.npz`) for every peer. Each peer runs in
its own subprocess, one after another, under a sampler that adds up the resident memory
and CPU seconds of the subprocess and all its descendants (Flower's Ray workers too).

Per peer and model it reports seconds per round (median over the rounds after the
first), clients per second, peak memory, CPU seconds, the mean client training loss of
every round (checked against fedpriv's), and the time per client split into compute
(the same number of SGD steps of batch 10 of ONE model in one loop, batches gathered
beforehand: the training step alone) and overhead (everything else a round does).

`--overhead_chunks` adds the per-client overhead study (fedpriv only): for each chunk
size, nested variants of the round (see `run_overhead`), so that differences say where a
client's time goes beyond its training step.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time

from absl import app, flags

from launch import many_clients as mc

_MODELS = flags.DEFINE_list("models", ["cnn"], f"Models, of {list(mc.MODELS)}.")
_PEERS = flags.DEFINE_list("peers", ["fedpriv", "torch", "flower"],
                           "Peers to run, in order (fedpriv, torch, flower).")
_ROUNDS = flags.DEFINE_integer("rounds", 4, "Rounds of fedpriv and the PyTorch loop "
                               "(the first is warm-up and not in the median).")
_COHORT = flags.DEFINE_integer("cohort", mc.CLIENTS_PER_ROUND, "Clients per round.")
_CHUNKS = flags.DEFINE_list("chunk_sizes", ["1"],
                            "fedpriv rows: one per chunk size (1 is fedpriv's default).")
_FLOWER_ROUNDS = flags.DEFINE_integer("flower_rounds", 2, "Rounds of Flower (slow).")
_FLOWER_COHORT = flags.DEFINE_integer(
    "flower_cohort", 0, "Clients per Flower round (0: --cohort); its loss is then not "
    "comparable, its per-client times are.")
_OVERHEAD = flags.DEFINE_list("overhead_chunks", [],
                              "Chunk sizes for the per-client overhead study (fedpriv).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/bench_peers", "Initial weights go here.")
_OUT = flags.DEFINE_string("out", "", "Write all results as JSON here.")
_MD = flags.DEFINE_string("md", "", "Write the markdown tables here.")
_TORCH_PY = flags.DEFINE_string("torch_python", ".venv-torch/bin/python",
                                "Python of the PyTorch virtualenv.")
_FLOWER_PY = flags.DEFINE_string("flower_python", ".venv-flwr/bin/python",
                                 "Python of the Flower virtualenv.")
_ONE = flags.DEFINE_string("one", "", "Internal: run one fedpriv measurement here.")
_MODEL = flags.DEFINE_string("model", "cnn", "Internal: the model of --one.")
_CHUNK = flags.DEFINE_integer("chunk", 1, "Internal: the chunk size of --one.")
_PARAMS = flags.DEFINE_string("params", "", "Internal: the initial weights of --one.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- fedpriv (runs in the project's venv, one measurement per subprocess) -------------

def _task(model: str, chunk: int):
  from fedpriv.models import make_task  # pylint: disable=import-outside-toplevel
  if model == "small_cnn":
    return mc.small_cnn_task()
  return make_task("cnn", "classification", 10, (28, 28, 1),
                   conv_impl="xla" if chunk == 1 else "im2col")


def write_initial_params(model: str, path: str) -> None:
  """The weights every peer starts from: the pinned workload's PyTorch-default draw for
  the McMahan CNN, flax's default initialization (seeded) for the small CNN."""
  if model == "cnn":
    from launch import workload  # pylint: disable=import-outside-toplevel
    params = workload.initial_params()
  else:
    import jax  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    params = jax.tree.map(np.asarray, mc.small_cnn_task().init(jax.random.key(mc.SEED)))
  mc.save_params(path, params)


def _setup(model, chunk, cohort, params_path):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from fedpriv.data import fashion_mnist, pack_clients  # pylint: disable=import-outside-toplevel

  x, y = fashion_mnist.load("train")
  parts = mc.partition(mc.population_size(cohort))
  pop = jax.tree.map(jnp.asarray, pack_clients(x, y, list(parts)))
  params = jax.tree.map(jnp.asarray, mc.load_params(params_path))
  return x, y, parts, pop, _task(model, chunk), params


def _algo(task, cohort, chunk):
  import optax  # pylint: disable=import-outside-toplevel
  from fedpriv.fedavg import FedAvg  # pylint: disable=import-outside-toplevel
  return FedAvg(task=task, client_optimizer=optax.sgd(mc.LR), server_optimizer=optax.sgd(1.0),
                clients_per_round=cohort, local_epochs=1, batch_size=mc.BATCH,
                chunk_size=min(chunk, cohort), unroll=1)


def _time_calls(fn, args_for_round, rounds):
  """Calls `fn(*args_for_round(r))` for rounds 1..`rounds`; wall and CPU seconds each."""
  import jax  # pylint: disable=import-outside-toplevel
  wall, cpu, outs = [], [], []
  for rnd in range(1, rounds + 1):
    args = args_for_round(rnd)
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(*args))
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
    outs.append(out)
  return wall, cpu, outs


def _median_after_first(values):
  return statistics.median(values[1:] or values)


def run_fedpriv(model, cohort, chunk, rounds, params_path):
  """fedpriv's FedAvg round (`FedAvg.apply` on the pinned cohort and batches, jitted
  once, state donated: what `launch.train` compiles), then the training steps alone."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from fedpriv import keys as keylib  # pylint: disable=import-outside-toplevel

  _, _, _, pop, task, params = _setup(model, chunk, cohort, params_path)
  algo = _algo(task, cohort, chunk)
  base = keylib.base_key(mc.SEED)

  def step(state, ids, pos, rnd):
    c = algo.pad_cohort(ids, keylib.round_key(base, rnd), batches=(pos, jnp.ones(pos.shape, bool)))
    state, m = algo.apply(state, pop, c)
    return state, m["train_loss"]

  def inputs(rnd):
    ids, pos = mc.round_schedule(rnd, cohort)
    return jnp.asarray(ids), jnp.asarray(pos), jnp.asarray(rnd, jnp.int32)

  state = algo.init(params)
  t0 = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=0).lower(state, *inputs(1)).compile()
  compile_s = time.perf_counter() - t0
  holder = [state]

  def call(*args):
    holder[0], loss = compiled(holder[0], *args)
    return loss

  wall, cpu, losses = _time_calls(call, inputs, rounds)
  out = {"peer": "fedpriv", "model": model, "cohort": cohort, "chunk_size": algo.chunk_size,
         "rounds": rounds, "round_s": wall, "round_cpu_s": cpu,
         "sec_per_round": _median_after_first(wall),
         "cpu_s_per_round": _median_after_first(cpu),
         "train_loss": [float(l) for l in losses], "compile_s": compile_s,
         "jax": jax.__version__, "backend": jax.default_backend()}
  out.update(_steps_alone(model, cohort, rounds, params_path))
  return out


def _steps_alone(model, cohort, rounds, params_path):
  """`cohort` SGD steps of batch 10 of ONE model in one `lax.scan`, batches gathered
  beforehand (host side): the training step alone, nothing federated."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jax import lax  # pylint: disable=import-outside-toplevel

  x, y, parts, _, task, params = _setup(model, 1, cohort, params_path)
  ones = jnp.ones((mc.BATCH,), bool)

  def train(p, xb, yb):
    def sgd_step(p, batch):
      g, _ = jax.grad(task.mean_loss, has_aux=True)(p, batch[0], batch[1], ones)
      return jax.tree.map(lambda a, b: a - mc.LR * b, p, g), None
    return lax.scan(sgd_step, p, (xb, yb))[0]

  def inputs(rnd):
    _, idx = mc.round_examples(parts, rnd, cohort)
    idx = idx.reshape(-1, mc.BATCH)
    return params, jnp.asarray(x[idx]), jnp.asarray(y[idx])

  compiled = jax.jit(train).lower(*inputs(1)).compile()
  wall, cpu, _ = _time_calls(compiled, inputs, max(rounds, 2))
  return {"steps_alone_s": _median_after_first(wall),
          "steps_alone_cpu_s": _median_after_first(cpu)}


def run_overhead(model, cohort, chunk, rounds, params_path):
  """Nested variants of one round at one chunk size (one compile each):

  full          `FedAvg.apply`: gather the client's rows, its schedule, the downlink,
                local training, delta, weighting, finiteness check, uplink encode, the
                chunked sum, decode and the server step.
  train_gather  each client gathers its rows of the population and its batch, trains
                from the shared model, and only its trained model is summed (no delta,
                weight, check or server step).
  train_pregathered  as train_gather with the batches gathered beforehand (host side):
                what is left is vmapping/scanning clients that each start from the
                shared model and the sum of their models.
  steps_alone   (from `run_fedpriv`'s companion) the same SGD steps of one model.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from fedpriv import keys as keylib  # pylint: disable=import-outside-toplevel
  from fedpriv.cohort import map_reduce  # pylint: disable=import-outside-toplevel
  from fedpriv.local import local_train  # pylint: disable=import-outside-toplevel

  x, y, parts, pop, task, params = _setup(model, chunk, cohort, params_path)
  algo = _algo(task, cohort, chunk)
  chunk = algo.chunk_size
  if cohort % chunk:
    raise ValueError(f"the overhead study needs chunk sizes that divide {cohort}, got {chunk}")
  base = keylib.base_key(mc.SEED)

  def cohort_of(ids, pos, rnd):
    return algo.pad_cohort(ids, keylib.round_key(base, rnd),
                           batches=(pos, jnp.ones(pos.shape, bool)))

  def full(state, ids, pos, xb, yb, rnd):
    del xb, yb
    return algo.apply(state, pop, cohort_of(ids, pos, rnd))[0].params

  def train_gather(state, ids, pos, xb, yb, rnd):
    del xb, yb, rnd
    def one(shared, client):
      cid, p = client
      trained, _ = local_train(task, algo.client_optimizer, shared, pop.x[cid], pop.y[cid],
                               p, jnp.ones(p.shape, bool))
      return trained, ()
    return map_reduce(one, state.params, (ids, pos), chunk_size=chunk)[0]

  def train_pregathered(state, ids, pos, xb, yb, rnd):
    del ids, pos, rnd
    idx = jnp.broadcast_to(jnp.arange(mc.BATCH, dtype=jnp.int32), (mc.STEPS, mc.BATCH))
    def one(shared, client):
      cx, cy = client
      trained, _ = local_train(task, algo.client_optimizer, shared, cx, cy, idx,
                               jnp.ones(idx.shape, bool))
      return trained, ()
    return map_reduce(one, state.params, (xb, yb), chunk_size=chunk)[0]

  def inputs(rnd):
    ids, pos = mc.round_schedule(rnd, cohort)
    _, idx = mc.round_examples(parts, rnd, cohort)
    idx = idx.reshape(cohort, mc.BATCH)
    return (algo.init(params), jnp.asarray(ids), jnp.asarray(pos), jnp.asarray(x[idx]),
            jnp.asarray(y[idx]), jnp.asarray(rnd, jnp.int32))

  out = {"section": "overhead", "model": model, "cohort": cohort, "chunk_size": chunk}
  for name, fn in (("full", full), ("train_gather", train_gather),
                   ("train_pregathered", train_pregathered)):
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*inputs(1)).compile()
    out[f"{name}_compile_s"] = time.perf_counter() - t0
    out[f"{name}_temp_mb"] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    wall, cpu, _ = _time_calls(compiled, inputs, max(rounds, 2))
    out[f"{name}_s"] = _median_after_first(wall)
    out[f"{name}_cpu_s"] = _median_after_first(cpu)
  return out


# --- the driver ---------------------------------------------------------------------

class _TreeSampler:
  """Samples the resident memory and CPU time of a process and all its descendants."""

  def __init__(self, pid: int, every: float = 0.25):
    self.pid, self.every = pid, every
    self.peak_rss_mb = 0.0
    self.cpu = {}  # pid -> last seen utime+stime, seconds
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._tick = os.sysconf("SC_CLK_TCK")
    self._page = os.sysconf("SC_PAGE_SIZE")

  def _tree(self):
    children: dict[int, list[int]] = {}
    stats = {}
    for entry in os.listdir("/proc"):
      if not entry.isdigit():
        continue
      try:
        with open(f"/proc/{entry}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      pid = int(entry)
      stats[pid] = fields
      children.setdefault(int(fields[1]), []).append(pid)
    tree, todo = [], [self.pid]
    while todo:
      p = todo.pop()
      if p in stats:
        tree.append(p)
      todo.extend(children.get(p, []))
    return [(p, stats[p]) for p in tree]

  def _run(self):
    while not self._stop.is_set():
      rss = 0
      for pid, f in self._tree():
        rss += int(f[21]) * self._page  # field 24 of stat: rss in pages
        self.cpu[pid] = (int(f[11]) + int(f[12])) / self._tick  # utime, stime
      self.peak_rss_mb = max(self.peak_rss_mb, rss / 2**20)
      self._stop.wait(self.every)

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()

  @property
  def cpu_s(self) -> float:
    return sum(self.cpu.values())


def _run_child(argv: list[str], env=None) -> dict:
  t0 = time.perf_counter()
  proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT, env=env, start_new_session=True)
  with _TreeSampler(proc.pid) as sampler:
    out, err = proc.communicate()
  wall = time.perf_counter() - t0
  lines = [l for l in out.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    raise RuntimeError(f"{' '.join(argv[:4])} failed (exit {proc.returncode}):\n{err[-3000:]}")
  result = json.loads(lines[-1])
  result.update({"process_tree_peak_rss_mb": sampler.peak_rss_mb,
                 "process_tree_cpu_s": sampler.cpu_s, "process_wall_s": wall})
  return result


def _fedpriv_argv(kind: str, model: str, chunk: int, cohort: int, params: str) -> list[str]:
  return [sys.executable, "-m", "launch.bench_peers", f"--one={kind}", f"--model={model}",
          f"--chunk={chunk}", f"--cohort={cohort}", f"--rounds={_ROUNDS.value}",
          f"--params={params}", "--peers="]


def _with_per_client(r: dict) -> dict:
  cohort = r["cohort"]
  r["clients_per_s"] = cohort / r["sec_per_round"]
  r["ms_per_client"] = 1e3 * r["sec_per_round"] / cohort
  if "steps_alone_s" in r:
    r["compute_ms_per_client"] = 1e3 * r["steps_alone_s"] / cohort
    r["overhead_ms_per_client"] = r["ms_per_client"] - r["compute_ms_per_client"]
  return r


def _load_line() -> str:
  one, five, fifteen = os.getloadavg()
  return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def _peer_table(rows: list[dict]) -> str:
  head = ("| peer | model | clients/round | s/round | clients/s | ms/client: compute + "
          "overhead | CPU s/round | peak MB (tree) | loss per round | load before |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
  out = [head]
  for r in rows:
    name = r["peer"] + (f" (chunk {r['chunk_size']})" if r["peer"] == "fedpriv" else "")
    split = (f"{r['ms_per_client']:.2f}: {r['compute_ms_per_client']:.2f} + "
             f"{r['overhead_ms_per_client']:.2f}" if "compute_ms_per_client" in r
             else f"{r['ms_per_client']:.2f}")
    cpu = r.get("cpu_s_per_round")
    out.append(f"| {name} | {r['model']} | {r['cohort']} | {r['sec_per_round']:.2f} | "
               f"{r['clients_per_s']:.0f} | {split} | "
               f"{'-' if cpu is None else f'{cpu:.2f}'} | "
               f"{r['process_tree_peak_rss_mb']:.0f} | "
               f"{', '.join(f'{l:.4f}' for l in r['train_loss'])} | {r['load_before']} |")
  return "\n".join(out)


def _overhead_table(rows: list[dict], steps: dict) -> str:
  head = ("| model | chunk | full round s | clients/s | ms/client | x steps alone | "
          "train+gather s | train pregathered s | CPU s (full) | temp MB (full) |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
  out = [head]
  for r in rows:
    alone = steps.get(r["model"])
    ratio = f"{r['full_s'] / alone:.2f}" if alone else "-"
    out.append(f"| {r['model']} | {r['chunk_size']} | {r['full_s']:.2f} | "
               f"{r['cohort'] / r['full_s']:.0f} | {1e3 * r['full_s'] / r['cohort']:.2f} | "
               f"{ratio} | {r['train_gather_s']:.2f} | {r['train_pregathered_s']:.2f} | "
               f"{r['full_cpu_s']:.2f} | {r['full_temp_mb']:.0f} |")
  return "\n".join(out)


def _loss_check(rows: list[dict]) -> list[str]:
  lines = []
  for model in {r["model"] for r in rows}:
    ref = next((r for r in rows if r["model"] == model and r["peer"] == "fedpriv"), None)
    if ref is None:
      continue
    for r in rows:
      if r is ref or r["model"] != model or r["cohort"] != ref["cohort"]:
        continue
      n = min(len(r["train_loss"]), len(ref["train_loss"]))
      diff = max(abs(a - b) for a, b in zip(r["train_loss"][:n], ref["train_loss"][:n]))
      lines.append(f"{model}: {r['peer']} vs fedpriv, rounds 1-{n}: max |loss difference| "
                   f"= {diff:.2e}")
  return lines


def main(argv):
  del argv
  if _ONE.value:
    fn = {"fedpriv": run_fedpriv, "overhead": run_overhead}[_ONE.value]
    print(json.dumps(fn(_MODEL.value, _COHORT.value, _CHUNK.value, _ROUNDS.value,
                        _PARAMS.value)), flush=True)
    return
  for m in _MODELS.value:
    if m not in mc.MODELS:
      raise app.UsageError(f"unknown model {m!r}; known: {list(mc.MODELS)}")
  for p in _PEERS.value:
    if p not in ("fedpriv", "torch", "flower"):
      raise app.UsageError(f"unknown peer {p!r}; known: fedpriv, torch, flower")
  os.makedirs(_WORKDIR.value, exist_ok=True)
  cohort = _COHORT.value
  rows, overhead, steps, failed = [], [], {}, []
  t_start, cpu_start = time.perf_counter(), os.times()
  for model in _MODELS.value:
    params = os.path.abspath(os.path.join(_WORKDIR.value, f"init_{model}.npz"))
    write_initial_params(model, params)
    for peer in _PEERS.value:
      runs = []
      if peer == "fedpriv":
        runs = [_fedpriv_argv("fedpriv", model, int(c), cohort, params) for c in _CHUNKS.value]
      elif peer == "torch":
        runs = [[_TORCH_PY.value, "-m", "launch.peer_torch", f"--model={model}",
                 f"--cohort={cohort}", f"--rounds={_ROUNDS.value}", f"--params={params}"]]
      else:
        runs = [[_FLOWER_PY.value, "-m", "launch.peer_flower", f"--model={model}",
                 f"--cohort={_FLOWER_COHORT.value or cohort}",
                 f"--rounds={_FLOWER_ROUNDS.value}", f"--params={params}"]]
      for argv in runs:
        load = _load_line()
        print(f"running {peer} {model} ({' '.join(argv[2:4])}) ... load {load}", flush=True)
        env = dict(os.environ, PYTHONPATH=ROOT)
        try:
          r = _with_per_client(_run_child(argv, env))
        except RuntimeError as e:  # a peer that fails or is stopped: keep the others
          print(f"  failed: {str(e).splitlines()[-1]}", flush=True)
          failed.append({"peer": peer, "model": model, "error": str(e)[-500:]})
          continue
        r["load_before"] = load
        rows.append(r)
        if _OUT.value:  # what is measured so far survives a run stopped later
          with open(_OUT.value, "w") as f:
            json.dump({"peers": rows, "overhead": overhead, "failed": failed}, f, indent=1)
        if peer == "fedpriv" and "steps_alone_s" in r:
          steps[model] = r["steps_alone_s"]
        print(f"  {r['sec_per_round']:.2f} s/round, {r['clients_per_s']:.0f} clients/s, "
              f"peak {r['process_tree_peak_rss_mb']:.0f} MB, loss {r['train_loss']}",
              flush=True)
    for chunk in _OVERHEAD.value:
      print(f"running overhead {model} chunk {chunk} ... load {_load_line()}", flush=True)
      try:
        r = _run_child(_fedpriv_argv("overhead", model, int(chunk), cohort, params),
                       dict(os.environ, PYTHONPATH=ROOT))
      except RuntimeError as e:  # e.g. out of memory at a large chunk: keep the rest
        print(f"  failed: {str(e).splitlines()[-1]}", flush=True)
        failed.append({"model": model, "chunk_size": int(chunk), "error": str(e)[-500:]})
        continue
      overhead.append(r)
      print(f"  full {r['full_s']:.2f} s, train+gather {r['train_gather_s']:.2f} s, "
            f"pregathered {r['train_pregathered_s']:.2f} s", flush=True)
  end = os.times()
  summary = {
      "wall_s": time.perf_counter() - t_start,
      "children_cpu_s": (end.children_user + end.children_system
                         - cpu_start.children_user - cpu_start.children_system),
      "load_at_end": _load_line(), "cpus": os.cpu_count(), "argv": sys.argv[1:]}
  md = []
  if rows:
    md += [_peer_table(rows), ""]
    md += [f"- {l}" for l in _loss_check(rows)]
    fed = {r["model"]: r for r in rows if r["peer"] == "fedpriv"}
    for r in rows:
      if r["peer"] != "fedpriv" and r["model"] in fed:
        md.append(f"- {r['model']}: fedpriv (chunk {fed[r['model']]['chunk_size']}) is "
                  f"{fed[r['model']]['clients_per_s'] / r['clients_per_s']:.2f}x "
                  f"{r['peer']} in clients per second")
  if overhead:
    md += ["", _overhead_table(overhead, steps)]
  md += [f"- {f.get('peer', 'overhead')} ({f['model']}, chunk {f.get('chunk_size', '-')}) "
         f"failed: {f['error'].splitlines()[-1]}" for f in failed]
  md += ["", f"Run wall {summary['wall_s']:.0f} s, CPU of all children "
         f"{summary['children_cpu_s']:.0f} s, load average at the end {summary['load_at_end']}"
         f" ({summary['cpus']} CPUs)."]
  text = "\n".join(md)
  print(text)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump({"peers": rows, "overhead": overhead, "failed": failed, "summary": summary}, f, indent=1)
  if _MD.value:
    with open(_MD.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  app.run(main)
