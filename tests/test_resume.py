"""Crash and resume: SIGKILL at any point, rerun the same command, and the final model
and metrics are those of an uninterrupted run, with no duplicated or missing rounds."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, requires_fmnist

TINY = ["--config=launch/configs/fashion_mnist.py", "--config.num_clients=6",
        "--config.clients_per_round=2", "--config.rounds=6", "--config.train_limit=120",
        "--config.test_limit=60", "--config.eval_batch_size=60", "--config.batch_size=10",
        "--config.eval_every=1", "--config.checkpoint_every=2", "--config.unroll=1"]
TIMING = ("seconds", "elapsed", "secagg_seconds")
# The whole update-privacy stack with secure aggregation's host step (key agreement,
# dropouts) between sampling and the jitted round, and plain-round dropouts.
PRIVATE = ["--config.clients_per_round=4", "--config.privacy.enabled=True",
           "--config.privacy.clip=0.5", "--config.privacy.bits=8",
           "--config.privacy.mask_ratio=0.5", "--config.privacy.secagg=True",
           "--config.privacy.noise=distributed", "--config.privacy.noise_multiplier=1.0",
           "--config.privacy.dropout=0.25"]
# Two runs of one config draw different secret noise, so an uninterrupted reference run
# needs the seed-derived noise (`reproducible_noise`); the secret itself is tested
# below, against a copy of the crashed run's workdir. SCAFFOLD's control variates
# (server and every client's) are in the checkpoint.
VARIANTS = {"plain": ["--config.dropout=0.5"],
            "secagg": PRIVATE + ["--config.privacy.reproducible_noise=True"],
            "secagg_secret": PRIVATE,
            "scaffold": ["--config.algorithm=scaffold", "--config.dropout=0.5"]}


def _cmd(workdir, variant="plain"):
  return [sys.executable, "-m", "launch.train", f"--workdir={workdir}", *TINY,
          *VARIANTS[variant]]


def _env():
  return dict(os.environ, PYTHONPATH=ROOT)


def _metrics(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(l).items() if k not in TIMING} for l in lines]


def _final_params(workdir):
  """The newest checkpoint's step and its server state as {path: array}."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  mgr = ocp.CheckpointManager((workdir / "checkpoints").resolve())
  step = mgr.latest_step()
  got = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  flat = jax.tree_util.tree_flatten_with_path(got.state)[0]
  return step, {jax.tree_util.keystr(p): np.asarray(l) for p, l in flat}


def _assert_same_state(a, b, secret_differs):
  """Equal server states; the secret noise seed differs between two separate runs
  (each draws its own) and is equal when one run continues from the other's checkpoint."""
  assert a.keys() == b.keys()
  seed = [k for k in a if "noise_seed" in k]
  assert len(seed) == 1, list(a)
  for k in a:
    if k in seed and secret_differs:
      assert not np.array_equal(a[k], b[k]), "two runs drew the same secret noise seed"
    else:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _kill_after(workdir, variant, line, extra_delay):
  """Starts a run and SIGKILLs it once its output shows `line` (plus a delay)."""
  proc = subprocess.Popen(_cmd(workdir, variant), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  for out in proc.stdout:
    if line in out:
      time.sleep(extra_delay)
      break
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  return proc.returncode


@requires_fmnist
def test_the_secret_noise_survives_a_crash_in_the_checkpoint(tmp_path):
  # Killed after round 3 (checkpoint at 2, holding the secret): a copy of that workdir
  # runs to the end once; the original is killed again at round 5 and then finishes.
  # Both continue from the same checkpoint, so they must agree bit for bit, and both
  # must differ from a fresh run of the same config (another secret).
  variant = "secagg_secret"
  crashed = tmp_path / "crashed"
  assert _kill_after(crashed, variant, "round    3/6", 0.0) == -signal.SIGKILL
  ref = tmp_path / "ref"
  shutil.copytree(crashed, ref)
  for wd in (ref,):
    r = subprocess.run(_cmd(wd, variant), cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and "resuming" in r.stdout, r.stderr[-2000:]
  assert _kill_after(crashed, variant, "round    5/6", 0.05) == -signal.SIGKILL
  r = subprocess.run(_cmd(crashed, variant), cwd=ROOT, env=_env(), capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  assert _metrics(crashed) == _metrics(ref)
  _assert_same_state(_final_params(ref)[1], _final_params(crashed)[1], secret_differs=False)
  fresh = tmp_path / "fresh"
  r = subprocess.run(_cmd(fresh, variant), cwd=ROOT, env=_env(), capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  assert _metrics(fresh) != _metrics(ref)


@requires_fmnist
@pytest.mark.parametrize("variant", ["plain", "secagg", "scaffold"])
def test_sigkill_and_rerun_gives_the_uninterrupted_result(tmp_path, variant):
  ref = tmp_path / "ref"
  r = subprocess.run(_cmd(ref, variant), cwd=ROOT, env=_env(), capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]

  crashed = tmp_path / "crashed"
  # Killed between checkpoints (after round 3, checkpoint at 2), then again just as
  # round 5 is reported (possibly while its metrics line or checkpoint is written).
  assert _kill_after(crashed, variant, "round    3/6", 0.0) == -signal.SIGKILL
  assert _kill_after(crashed, variant, "round    5/6", 0.05) == -signal.SIGKILL
  r = subprocess.run(_cmd(crashed, variant), cwd=ROOT, env=_env(), capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "resuming" in r.stdout

  got, want = _metrics(crashed), _metrics(ref)
  assert [m["round"] for m in got] == list(range(1, 7))
  assert got == want
  step_a, a = _final_params(ref)
  step_b, b = _final_params(crashed)
  assert step_a == step_b == 6
  _assert_same_state(a, b, secret_differs=variant != "secagg")


@requires_fmnist
def test_a_workdir_of_another_run_is_refused(tmp_path):
  wd = tmp_path / "wd"
  wd.mkdir()
  (wd / "config.json").write_text('{"rounds": 99}\n')
  r = subprocess.run(_cmd(wd), cwd=ROOT, env=_env(), capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 2
  assert "another config" in r.stderr and "Traceback" not in r.stderr
