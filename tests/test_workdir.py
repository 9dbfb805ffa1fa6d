"""Runs that survive how people use them: one writer per workdir, damaged checkpoints,
preemption (SIGTERM/SIGINT) and continuing a run for more rounds. Tiny experiments in
process; a second process only where a lock or a signal needs one."""
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from fedpriv import train
from fedpriv import workdir as workdir_lib
from fedpriv.config import ConfigError
from fedpriv.privacy import accounting
from tiny_run_main import tiny_experiment

MAIN = os.path.join(ROOT, "tests", "tiny_run_main.py")
TIMING = ("seconds", "elapsed", "secagg_seconds")
QUIET = lambda *a, **k: None  # noqa: E731


def _run(workdir, log=QUIET, **kw):
  return train.run(tiny_experiment(**kw), workdir, log=log)


def _metrics(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  return [{k: v for k, v in json.loads(l).items() if k not in TIMING} for l in lines]


def _same_run(a, b):
  """Same metrics (round by round) and the same final model, bit for bit."""
  assert _metrics(a) == _metrics(b)
  sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
  assert (sa["params_sum"], sa["params_l2"]) == (sb["params_sum"], sb["params_l2"])
  return sa, sb


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted 4-round run (checkpoints every 2 rounds)."""
  wd = tmp_path_factory.mktemp("ref") / "wd"
  _run(wd)
  return wd


def _holder(workdir):
  proc = subprocess.Popen([sys.executable, MAIN, str(workdir), "--hold"], cwd=ROOT,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "holding"
  return proc


def test_a_live_writer_is_refused_and_a_killed_one_taken_over(tmp_path, reference):
  wd = tmp_path / "wd"
  holder = _holder(wd)
  try:
    with pytest.raises(train.WorkdirError, match=f"in use by pid {holder.pid} "):
      _run(wd)
    assert not (wd / "metrics.jsonl").exists() and not (wd / "checkpoints").exists()
    # The launch script refuses at once: one line, exit 2, naming the holder.
    r = subprocess.run([sys.executable, "-m", "launch.train", f"--workdir={wd}",
                        "--config=launch/configs/fashion_mnist.py"], cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 2 and f"pid {holder.pid}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  _run(wd)  # the dead holder's lock is taken over
  assert [m["round"] for m in _metrics(wd)] == [1, 2, 3, 4]
  _same_run(wd, reference)


def _largest_file(folder):
  files = [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
  return max(files, key=os.path.getsize)


def _truncate(step_dir):
  path = _largest_file(step_dir / "state")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _drop_meta(step_dir):
  shutil.rmtree(step_dir / "meta")


def _other_shapes(step_dir):
  """The checkpoint of the same round from a model with another output layer."""
  other = step_dir.parent.parent.parent / "other"
  train.run(tiny_experiment(rounds=3, checkpoint_every=1, num_classes=4), other, log=QUIET)
  shutil.rmtree(step_dir)
  shutil.copytree(other / "checkpoints" / step_dir.name, step_dir)


@pytest.mark.parametrize("damage", [_truncate, _drop_meta, _other_shapes])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage):
  wd, ref = tmp_path / "wd", tmp_path / "ref"
  _run(ref, rounds=5, checkpoint_every=1)
  _run(wd, rounds=3, checkpoint_every=1)  # checkpoints 2 and 3 (two are kept)
  damage(wd / "checkpoints" / "3")
  said = []
  _run(wd, log=said.append, rounds=5, checkpoint_every=1)
  damaged = [l for l in said if "cannot be restored" in l]
  assert len(damaged) == 1 and "checkpoint 3" in damaged[0] and "\n" not in damaged[0]
  assert any("resuming" in l and "after round 2" in l for l in said)
  assert (wd / "checkpoints.damaged" / "3").is_dir()
  assert [m["round"] for m in _metrics(wd)] == [1, 2, 3, 4, 5]
  _same_run(wd, ref)


def test_no_restorable_checkpoint_is_refused_not_restarted(tmp_path):
  wd = tmp_path / "wd"
  _run(wd, rounds=3, checkpoint_every=1)
  before = (wd / "metrics.jsonl").read_text()
  for step in ("2", "3"):
    _truncate(wd / "checkpoints" / step)
  with pytest.raises(train.WorkdirError, match="no checkpoint .* can be restored"):
    _run(wd, rounds=3, checkpoint_every=1)
  assert (wd / "metrics.jsonl").read_text() == before  # nothing started over


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_finishes_the_round_checkpoints_and_exits_75(tmp_path, reference, sig):
  wd = tmp_path / "wd"
  # Checkpoints every 2 rounds; the signal arrives during round 3.
  r = subprocess.run([sys.executable, MAIN, str(wd), "--rounds=4", "--checkpoint_every=2",
                      "--signal_at=3", f"--signal={sig}"], cwd=ROOT, capture_output=True,
                     text=True, timeout=600)
  assert r.returncode == train.PREEMPTED_EXIT == 75, r.stderr[-2000:]
  assert f"{sig}: stopped after round 3" in r.stdout and "Traceback" not in r.stderr
  assert sorted(os.listdir(wd / "checkpoints")) == ["2", "3"]
  said = []
  _run(wd, log=said.append)  # the same command continues: no round lost or repeated
  assert any("resuming" in l and "after round 3" in l for l in said)
  assert [m["round"] for m in _metrics(wd)] == [1, 2, 3, 4]
  _same_run(wd, reference)


def test_a_run_is_continued_for_more_rounds_with_its_history(tmp_path):
  wd, ref = tmp_path / "wd", tmp_path / "ref"
  _run(ref, rounds=6, checkpoint_every=3)
  _run(wd, rounds=4, checkpoint_every=2)
  said = []
  summary = _run(wd, log=said.append, rounds=6, checkpoint_every=3)
  assert any("continuing" in l and "rounds 4 -> 6" in l for l in said)
  _same_run(wd, ref)
  history = json.loads((wd / "config_history.json").read_text())
  assert len(history) == 1 and history[0]["after_round"] == 4
  assert history[0]["changed"] == {"checkpoint_every": [2, 3], "rounds": [4, 6]}
  assert summary["config_history"] == history
  assert json.loads((wd / "config.json").read_text())["rounds"] == 6
  # Anything else is another run; fewer rounds cannot undo the ones done.
  with pytest.raises(train.WorkdirError, match="another config.*learning_rate"):
    _run(wd, rounds=6, checkpoint_every=3, learning_rate=0.2)
  with pytest.raises(train.WorkdirError, match="cannot undo"):
    _run(wd, rounds=5, checkpoint_every=3)


def test_a_run_written_before_an_option_existed_continues_at_its_default(tmp_path):
  # A workdir of an older fedpriv lacks the options added since; at their defaults they
  # change nothing, so the run resumes. Set to anything else they are another config.
  wd, ref = tmp_path / "wd", tmp_path / "ref"
  _run(ref, rounds=4)
  _run(wd, rounds=2)
  old = json.loads((wd / "config.json").read_text())
  del old["privacy"]["rotation"], old["algorithm"]
  (wd / "config.json").write_text(json.dumps(old))
  said = []
  _run(wd, log=said.append, rounds=4)
  assert any("continuing" in l and "rounds 2 -> 4" in l for l in said)
  assert not any("rotation" in l or "algorithm" in l for l in said)
  _same_run(wd, ref)
  changes = workdir_lib.config_changes(old, {**old, "algorithm": "scaffold"},
                                       defaults={"algorithm": "fedavg"})
  assert changes == {"algorithm": [None, "scaffold"]}


def test_a_continued_private_run_is_accounted_for_its_new_total(tmp_path):
  wd, ref = tmp_path / "wd", tmp_path / "ref"
  direct = _run(ref, rounds=3, private="central")
  first = _run(wd, rounds=2, private="central")
  continued = _run(wd, rounds=3, private="central")
  mech = tiny_experiment(rounds=3, private="central").algorithm.uplink.mechanism
  assert continued["epsilon"] == direct["epsilon"] == accounting.epsilon(mech, 3)
  assert continued["epsilon"] > first["epsilon"]
  assert continued["config_history"][0]["changed"] == {"rounds": [2, 3]}
  _same_run(wd, ref)


def test_noise_calibrated_to_the_old_total_is_not_continued(tmp_path):
  wd = tmp_path / "wd"
  _run(wd, rounds=2, target_epsilon=8.0)
  with pytest.raises(ConfigError, match="target_epsilon"):
    _run(wd, rounds=3, target_epsilon=8.0)
  assert json.loads((wd / "config.json").read_text())["rounds"] == 2


def test_the_lock_is_released_when_a_run_ends(tmp_path):
  """A notebook may run the same workdir twice in one process."""
  wd = tmp_path / "wd"
  _run(wd, rounds=2)
  _run(wd, rounds=2)
  assert jax.process_count() == 1 and not workdir_lib._HELD  # pylint: disable=protected-access
  np.testing.assert_equal([m["round"] for m in _metrics(wd)], [1, 2])
