"""One prepared accelerator run: every GPU measurement fedpriv owes, in under 8 minutes.

    make bench-gpu-wheels            # here, with internet: .gpu/ (wheels + Fashion-MNIST)
    make bench-gpu OUT=/some/dir     # there, no internet: installs .gpu/ and runs this
    python -m launch.bench_gpu --tiny --out=/tmp/gpu   # a CPU smoke test of the script

Sections run one after another, each in its own subprocess with its own time box, and
the whole run stops starting sections once `--budget_s` is spent (a section that would
start with less than a minute left is skipped and recorded as skipped). Everything
lands in `--out`: `gpu.json` (all results), `gpu.md` (the tables), `shakespeare/`
(the training run's metrics) and `log.txt`.

  bench         launch.benchmark's sections on the pinned workload at chunk 1 and chunk 10
                (the whole cohort): fedavg, the ceilings, private, full.
  peers_1000    the many-clients workload (launch/bench_peers.py), 1,000 clients per round,
  peers_10000   and 10,000: fedpriv at chunk sizes up to the whole cohort, and the PyTorch
                loop on the same GPU (if torch is installed), with the loss check.
  overhead      the per-client overhead study at 1,000 clients, chunks 1 to 1,000.
  shakespeare   Federated Shakespeare (LSTM, 10 clients per round) toward convergence: as
                many of 1,200 rounds as fit in its box, evaluated every 50 rounds (Reddi et
                al. 2021 report about 57% accuracy for FedAvg).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from absl import app, flags

_OUT = flags.DEFINE_string("out", os.environ.get("OUT", "gpu_out"), "Results folder.")
_BUDGET = flags.DEFINE_integer("budget_s", 420, "Stop starting sections after this.")
_TINY = flags.DEFINE_bool("tiny", False, "Test-sized settings (a CPU smoke test).")
_SECTIONS = flags.DEFINE_list("sections", ["bench", "peers_1000", "overhead", "peers_10000",
                                           "shakespeare"], "Sections, in order.")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _plan(tiny: bool, out: str, torch_ok: bool) -> dict:
  """Section -> (time box in seconds, [commands]); tiny shrinks every size."""
  py = sys.executable
  rounds = "2" if tiny else "4"
  peers = "fedpriv,torch" if torch_ok else "fedpriv"
  torch_py = [f"--torch_python={py}"]
  if tiny:
    bench = [[py, "-m", "launch.benchmark", "--sections=fedavg,ceiling_seq",
              "--rounds=2", "--chunk_size=1", f"--out={out}/bench_c1.json"]]
    p1000 = [[py, "-m", "launch.bench_peers", f"--peers={peers}", "--models=small_cnn",
              "--cohort=20", "--rounds=2", "--chunk_sizes=1,20", *torch_py,
              f"--workdir={out}/peers_work", f"--out={out}/peers_1000.json",
              f"--md={out}/peers_1000.md"]]
    p10000 = [[py, "-m", "launch.bench_peers", "--peers=fedpriv", "--models=small_cnn",
               "--cohort=40", "--rounds=2", "--chunk_sizes=40",
               f"--workdir={out}/peers_work", f"--out={out}/peers_10000.json",
               f"--md={out}/peers_10000.md"]]
    overhead = [[py, "-m", "launch.bench_peers", "--peers=", "--models=small_cnn",
                 "--cohort=20", "--rounds=2", "--overhead_chunks=1,20",
                 f"--workdir={out}/peers_work", f"--out={out}/overhead.json",
                 f"--md={out}/overhead.md"]]
    shakes = [[py, "-m", "launch.train", "--config=launch/configs/shakespeare.py",
               f"--workdir={out}/shakespeare", "--config.rounds=2", "--config.eval_every=1",
               "--config.train_limit=3", "--config.test_limit=50", "--config.checkpoint_every=0",
               "--config.min_chars=20000", "--config.clients_per_round=2"]]
    boxes = {"bench": 300, "peers_1000": 300, "overhead": 300, "peers_10000": 300,
             "shakespeare": 300}
  else:
    bench = [[py, "-m", "launch.benchmark", "--sections=fedavg,ceiling_seq,private,full",
              "--rounds=4", "--chunk_size=1", f"--out={out}/bench_c1.json"],
             [py, "-m", "launch.benchmark", "--sections=fedavg,ceiling_vmap", "--rounds=4",
              "--chunk_size=10", f"--out={out}/bench_c10.json"]]
    p1000 = [[py, "-m", "launch.bench_peers", f"--peers={peers}", "--models=cnn,small_cnn",
              "--cohort=1000", f"--rounds={rounds}", "--chunk_sizes=1,100,1000", *torch_py,
              f"--workdir={out}/peers_work", f"--out={out}/peers_1000.json",
              f"--md={out}/peers_1000.md"]]
    p10000 = [[py, "-m", "launch.bench_peers", f"--peers={peers}", "--models=cnn",
               "--cohort=10000", "--rounds=3", "--chunk_sizes=1000,10000", *torch_py,
               f"--workdir={out}/peers_work", f"--out={out}/peers_10000.json",
               f"--md={out}/peers_10000.md"]]
    overhead = [[py, "-m", "launch.bench_peers", "--peers=", "--models=cnn", "--cohort=1000",
                 "--rounds=3", "--overhead_chunks=1,10,100,1000",
                 f"--workdir={out}/peers_work", f"--out={out}/overhead.json",
                 f"--md={out}/overhead.md"]]
    shakes = [[py, "-m", "launch.train", "--config=launch/configs/shakespeare.py",
               f"--workdir={out}/shakespeare", "--config.rounds=1200",
               "--config.eval_every=50", "--config.checkpoint_every=0"]]
    boxes = {"bench": 120, "peers_1000": 80, "overhead": 60, "peers_10000": 60,
             "shakespeare": 130}
  return {"bench": (boxes["bench"], bench), "peers_1000": (boxes["peers_1000"], p1000),
          "overhead": (boxes["overhead"], overhead),
          "peers_10000": (boxes["peers_10000"], p10000),
          "shakespeare": (boxes["shakespeare"], shakes)}


def _run_boxed(argv, box_s, env):
  """Runs `argv` in its own process group; past `box_s`, SIGTERM to the whole group
  (launch.train then checkpoints and stops; its metrics.jsonl is already written), and
  SIGKILL 20 s later. Returns (status, stdout, stderr)."""
  proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          cwd=ROOT, env=env, start_new_session=True)
  try:
    stdout, stderr = proc.communicate(timeout=box_s)
    return ("ok" if proc.returncode == 0 else f"exit {proc.returncode}"), stdout, stderr
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
      stdout, stderr = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
      os.killpg(proc.pid, signal.SIGKILL)
      stdout, stderr = proc.communicate()
    return "timed out", stdout or "", stderr or ""


def _probe() -> dict:
  """What this machine has: jax's backend and devices, torch and its device."""
  info = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
  try:
    import jax  # pylint: disable=import-outside-toplevel
    info.update(jax=jax.__version__, backend=jax.default_backend(),
                devices=[str(d) for d in jax.devices()])
  except Exception as e:  # pylint: disable=broad-except
    info["jax_error"] = repr(e)
  try:
    import torch  # pylint: disable=import-outside-toplevel
    info.update(torch=torch.__version__, torch_cuda=torch.cuda.is_available())
  except ImportError:
    info["torch"] = None
  return info


def main(argv):
  del argv
  out = os.path.abspath(_OUT.value)
  os.makedirs(out, exist_ok=True)
  log = open(os.path.join(out, "log.txt"), "a")

  def say(msg):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    log.write(line + "\n")
    log.flush()

  start = time.perf_counter()
  info = _probe()
  say(f"machine: {json.dumps(info)}")
  plan = _plan(_TINY.value, out, bool(info.get("torch")))
  unknown = [s for s in _SECTIONS.value if s not in plan]
  if unknown:
    raise app.UsageError(f"unknown sections {unknown}; known: {list(plan)}")
  results = {"machine": info, "sections": {}}
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  if info.get("torch_cuda"):
    env["FEDPRIV_TORCH_DEVICE"] = "cuda"
  for section in _SECTIONS.value:
    box, commands = plan[section]
    left = _BUDGET.value - (time.perf_counter() - start)
    if left < 60:
      say(f"{section}: skipped ({left:.0f} s of the budget left)")
      results["sections"][section] = {"status": "skipped"}
      continue
    box = min(box, left)
    per = box / len(commands)
    section_out = []
    for argv in commands:
      say(f"{section}: {' '.join(argv[2:4])} (time box {per:.0f} s)")
      t0 = time.perf_counter()
      status, stdout, stderr = _run_boxed(argv, per, env)
      took = time.perf_counter() - t0
      say(f"  {status} in {took:.0f} s")
      log.write(stdout[-6000:] + "\n" + stderr[-3000:] + "\n")
      section_out.append({"argv": argv[1:], "status": status, "wall_s": took,
                          "stdout_tail": stdout[-4000:], "stderr_tail": stderr[-2000:]})
    results["sections"][section] = section_out
    with open(os.path.join(out, "gpu.json"), "w") as f:
      json.dump(results, f, indent=1)
  md = []
  for name in ("peers_1000", "overhead", "peers_10000"):
    path = os.path.join(out, f"{name}.md")
    if os.path.exists(path):
      with open(path) as f:
        md += [f"## {name}", "", f.read()]
  with open(os.path.join(out, "gpu.md"), "w") as f:
    f.write("\n".join(md))
  say(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
  app.run(main)
