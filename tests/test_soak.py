"""Soak: a small private experiment (secure aggregation with dropouts, DP noise, two
clients whose updates turn NaN whenever they are sampled) runs a few hundred rounds
under random SIGKILLs and restarts, and ends bit-identical to an uninterrupted run.

Slow (minutes): outside `make test`, run by `make soak` (pytest -m slow);
FEDPRIV_SOAK_ROUNDS and FEDPRIV_SOAK_KILLS shorten or lengthen it.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

MAIN = os.path.join(ROOT, "tests", "tiny_run_main.py")
ROUNDS = int(os.environ.get("FEDPRIV_SOAK_ROUNDS", 300))
KILLS = int(os.environ.get("FEDPRIV_SOAK_KILLS", 12))
ARGS = [f"--rounds={ROUNDS}", "--checkpoint_every=7", "--private", "--nan_clients=1,7"]


def _checkpoint_leaves(workdir):
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  mgr = ocp.CheckpointManager((workdir / "checkpoints").resolve())
  got = mgr.restore(mgr.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  mgr.close()
  return mgr.latest_step(), [np.asarray(l) for l in jax.tree.leaves(got.state)]


def _metrics(workdir):
  timing = ("seconds", "elapsed", "secagg_seconds")
  return [{k: v for k, v in json.loads(l).items() if k not in timing}
          for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_random_sigkills_leave_the_run_bit_identical(tmp_path):
  ref, wd = tmp_path / "ref", tmp_path / "wd"
  r = subprocess.run([sys.executable, MAIN, str(ref), *ARGS], cwd=ROOT, capture_output=True,
                     text=True, timeout=3600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "dropped" in r.stdout  # the NaN clients were sampled and dropped

  rng = np.random.default_rng(16)
  kills = 0
  while True:
    errors = open(tmp_path / "stderr.txt", "w")  # pylint: disable=consider-using-with
    proc = subprocess.Popen([sys.executable, MAIN, str(wd), *ARGS], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=errors, text=True)
    if kills < KILLS:
      for line in proc.stdout:  # wait until it trains, then kill it at a random moment
        if line.startswith("round"):
          time.sleep(rng.uniform(0.0, 0.6))
          break
      proc.send_signal(signal.SIGKILL)
      rc = proc.wait()
      proc.stdout.close()
      if rc == -signal.SIGKILL:
        errors.close()
        kills += 1
        continue
    else:
      proc.communicate(timeout=3600)
      rc = proc.returncode
    errors.close()
    assert rc == 0, (kills, (tmp_path / "stderr.txt").read_text()[-3000:])
    break
  assert kills >= KILLS // 2, kills  # (a fast machine may finish before every kill)

  got, want = _metrics(wd), _metrics(ref)
  assert [m["round"] for m in got] == list(range(1, ROUNDS + 1))
  assert got == want
  step_a, a = _checkpoint_leaves(ref)
  step_b, b = _checkpoint_leaves(wd)
  assert step_a == step_b == ROUNDS
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert (json.loads((wd / "summary.json").read_text())["epsilon"] ==
          json.loads((ref / "summary.json").read_text())["epsilon"])
