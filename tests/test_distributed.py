"""Two processes on localhost (jax.distributed, CPU collectives through gloo) train the
same model as one process."""
import json
import os
import socket
import subprocess
import sys

import numpy as np

from conftest import ROOT, requires_fmnist

TINY = ["--config=launch/configs/fashion_mnist.py", "--config.num_clients=8",
        "--config.clients_per_round=4", "--config.rounds=2", "--config.train_limit=160",
        "--config.test_limit=100", "--config.eval_batch_size=50", "--config.batch_size=10",
        "--config.chunk_size=1", "--config.unroll=1"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(devices=None):
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("XLA_FLAGS", None)
  if devices:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env


def _read(workdir):
  summary = json.loads((workdir / "summary.json").read_text())
  metrics = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return summary, metrics


@requires_fmnist
def test_two_processes_train_the_same_model_as_one(tmp_path):
  one = tmp_path / "one"
  r = subprocess.run([sys.executable, "-m", "launch.train", f"--workdir={one}", *TINY],
                     cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]

  two = tmp_path / "two"
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-m", "launch.train", f"--workdir={two}", *TINY,
       "--config.num_devices=2", f"--coordinator_address=localhost:{port}",
       "--num_processes=2", f"--process_id={i}"],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  s1, m1 = _read(one)
  s2, m2 = _read(two)
  assert s2["processes"] == 2 and s2["devices"] == 2 and s1["processes"] == 1
  np.testing.assert_allclose(s2["params_sum"], s1["params_sum"], rtol=1e-5)
  np.testing.assert_allclose(s2["params_l2"], s1["params_l2"], rtol=1e-6)
  for a, b in zip(m1, m2):
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-5)
    np.testing.assert_allclose(b["test_loss"], a["test_loss"], rtol=1e-5)
  assert "round    2/2" in outs[0][0] and "round" not in outs[1][0]  # only process 0 logs
