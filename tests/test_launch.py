"""The launch script end to end on tiny settings, and its refusal of bad input."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, requires_fmnist

TINY_FMNIST = ["--config.num_clients=4", "--config.clients_per_round=2",
               "--config.rounds=2", "--config.train_limit=200", "--config.test_limit=100",
               "--config.eval_batch_size=50", "--config.batch_size=10"]


def launch(*args, timeout=600, module="launch.train"):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@requires_fmnist
def test_fashion_mnist_two_rounds_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  r = launch("--config=launch/configs/fashion_mnist.py", f"--workdir={workdir}", *TINY_FMNIST)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "round    2/2" in r.stdout and "test accuracy" in r.stdout
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [l["round"] for l in lines] == [1, 2]
  for l in lines:
    assert {"round", "test_accuracy", "test_loss", "seconds"} <= set(l)
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["rounds"] == 2
  assert summary["uplink_bits_per_param"] == 32 and summary["downlink_bits_per_param"] == 32
  assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["seconds_per_round"] > 0
  assert (workdir / "curves.png").stat().st_size > 1000


def test_shakespeare_two_rounds_end_to_end(tmp_path):
  workdir = tmp_path / "run"
  r = launch("--config=launch/configs/shakespeare.py:transformer", f"--workdir={workdir}",
             "--config.num_clients=6", "--config.clients_per_round=2", "--config.rounds=2",
             "--config.max_examples_per_client=4", "--config.test_limit=40",
             "--config.eval_every=1", "--config.seq_len=20", "--config.min_chars=20000")
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["model"] == "transformer" and summary["num_clients"] == 6
  assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("args,needle", [
    (["--config.rounds=0"], "config.rounds: must be >= 1"),
    (["--config.clients_per_round=500"], "config.clients_per_round"),
    (["--config.rounds=abc"], "rounds"),
    (["--config.no_such_option=1"], "no_such_option"),
    (["--config.dataset=tfds:no_such_dataset_xyz"], "config.dataset"),
])
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, args, needle):
  workdir = tmp_path / "never"
  r = launch("--config=launch/configs/fashion_mnist.py", f"--workdir={workdir}", *args)
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  err = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(err) == 1 and needle in err[0], r.stderr
  assert "Traceback" not in r.stderr
  assert not workdir.exists()


def test_unknown_preset_is_refused(tmp_path):
  r = launch("--config=launch/configs/fashion_mnist.py:nope", f"--workdir={tmp_path}/w")
  assert r.returncode == 2 and "nope" in r.stderr and "Traceback" not in r.stderr


@requires_fmnist
def test_private_preset_end_to_end_reports_epsilon_and_bits(tmp_path):
  workdir = tmp_path / "run"
  # Poisson cohorts with distributed noise need a floor on the draw: q = 1/2 of 300.
  r = launch("--config=launch/configs/fashion_mnist.py:private", f"--workdir={workdir}",
             "--config.num_clients=300", "--config.clients_per_round=150",
             "--config.rounds=2", "--config.train_limit=3000", "--config.test_limit=100",
             "--config.chunk_size=50", "--config.eval_every=1", "--config.eval_batch_size=50",
             "--config.privacy.secagg_neighbors=4", "--config.privacy.target_epsilon=8")
  assert r.returncode == 0, r.stderr[-3000:]
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [l["round"] for l in lines] == [1, 2]
  assert 0 < lines[0]["epsilon"] < lines[1]["epsilon"] <= 8
  summary = json.loads((workdir / "summary.json").read_text())
  # delta: the target's, plus (1 + e^eps) times the chance of a draw outside the floor
  # and capacity the noise was sized for (each below 1e-12 per run).
  assert summary["epsilon"] == lines[1]["epsilon"] and 1e-5 <= summary["delta"] < 1.01e-5
  # 10% of the coordinates as ring elements plus the protocol's messages.
  assert 0 < summary["uplink_bits_per_param"] < 3
  assert summary["downlink_bits_per_param"] > 32


def test_bad_privacy_option_exits_2(tmp_path):
  r = launch("--config=launch/configs/fashion_mnist.py:private", f"--workdir={tmp_path}/w",
             "--config.privacy.noise=central")
  assert r.returncode == 2 and "Traceback" not in r.stderr
  assert "config.privacy.noise: 'central' noise with secagg" in r.stderr
