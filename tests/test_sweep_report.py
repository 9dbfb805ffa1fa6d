"""launch.sweep (a grid of runs from a small file) and launch.report (tables and plots)."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, requires_fmnist
from launch import report, sweep

TINY = {"num_clients": 2, "clients_per_round": 2, "rounds": 1, "train_limit": 100,
        "test_limit": 100, "eval_batch_size": 50, "batch_size": 10}


def run_module(module, *args, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def write_sweep(path, body: dict):
  path.write_text(f"def get_sweep():\n  return {body!r}\n")
  return path


@requires_fmnist
def test_sweep_runs_a_grid_resumes_and_reports(tmp_path):
  file = write_sweep(tmp_path / "lr.py", {
      "config": "launch/configs/fashion_mnist.py", "overrides": TINY,
      "grid": {"learning_rate": [0.05, 0.1]}})
  out = tmp_path / "runs"
  r = run_module("launch.sweep", f"--sweep={file}", f"--out={out}")
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  assert "[1/2] learning_rate0.05" in r.stdout and "[2/2] learning_rate0.1" in r.stdout
  assert "round    1/1" in r.stdout  # the runs' progress is echoed
  record = json.loads((out / "sweep.json").read_text())
  assert [e["status"] for e in record] == ["ok", "ok"]
  for e in record:
    summary = json.loads((out / e["name"] / "summary.json").read_text())
    assert summary["config"]["learning_rate"] == e["overrides"]["learning_rate"]
  again = run_module("launch.sweep", f"--sweep={file}", f"--out={out}")
  assert again.returncode == 0 and again.stdout.count("done before, skipped") == 2

  result = report.make_report([str(out / "*")], tmp_path / "report", log=lambda *a: None)
  assert "| learning_rate0.05 |" in result["markdown"]
  assert "curves.png" in result["plots"]
  assert any(s.startswith("accuracy_vs_epsilon.png") for s in result["skipped"])
  assert (tmp_path / "report" / "curves.png").stat().st_size > 1000


def fake_run(folder, name, accuracy, epsilon=None, bits=32.0, fedqsn=None, gap=None):
  wd = folder / name
  wd.mkdir(parents=True)
  cfg = {"privacy": {"enabled": epsilon is not None, "clip": 0.1, "bits": 12,
                     "noise": "distributed", "secagg": True, "mask_ratio": 0.9}}
  if fedqsn:
    cfg["fedqsn"] = {"enabled": True, **fedqsn}
  s = {"test_accuracy": accuracy, "uplink_bits_per_param": bits, "rounds": 3, "config": cfg}
  if epsilon is not None:
    s.update(epsilon=epsilon, delta=1e-5)
  if gap is not None:
    s["protection_gap"] = gap
  (wd / "summary.json").write_text(json.dumps(s))


def test_report_draws_the_plots_whose_metrics_exist(tmp_path):
  runs = tmp_path / "runs"
  fake_run(runs, "fedavg", 0.85)
  for eps, acc in ((1.0, 0.6), (4.0, 0.7), (16.0, 0.8)):
    fake_run(runs, f"eps{eps:g}", acc, epsilon=eps, bits=1.2)
  for p1, gap in ((0.3, 0.1), (0.5, 0.2), (0.8, 0.4)):
    fake_run(runs, f"qsn{p1}", 0.8, fedqsn={"p1": p1, "p2": 0.2, "bits": 4}, gap=gap)
  (runs / "attack").mkdir()
  (runs / "attack" / "attack.json").write_text(json.dumps([
      {"defense": "none", "batch_size": b, "local_steps": 1, "psnr": 30.0 / b, "ssim": 0.5}
      for b in (1, 4)]))
  result = report.make_report([str(runs / "*")], tmp_path / "rep", log=lambda *a: None)
  for name in ("accuracy_vs_epsilon.png", "accuracy_vs_bits.png", "gap_vs_p1.png",
               "inversion_psnr.png"):
    assert name in result["plots"] and (tmp_path / "rep" / name).stat().st_size > 1000
  # One p2 and one b value: those plots still draw (single points), curves do not.
  assert any(s.startswith("curves.png") for s in result["skipped"])
  md = result["markdown"]
  assert "| eps4 | 0.7 | 4 |" in md and "## Gradient inversion" in md
  assert "mask 0.9, clip 0.1, 12 bits, distributed noise, secagg" in md


def test_shipped_sweep_files_expand_to_valid_configs():
  files = sorted(glob.glob(os.path.join(ROOT, "launch", "sweeps", "*.py")))
  assert files
  checked = 0
  for path in files:
    spec = sweep.load_sweep(path)
    runs = sweep.expand(spec)
    assert runs and len(set(runs)) == len(runs)
    try:
      sweep.load_config(spec["config"])
    except ValueError:
      continue  # its preset belongs to a tier not in this checkout (e.g. :private)
    for name, overrides in runs.items():
      sweep.check_run(spec, name, overrides)
    checked += 1
  assert checked >= 1


@pytest.mark.parametrize("body,needle", [
    ({"config": "launch/configs/fashion_mnist.py"}, "needs a 'grid' or 'runs'"),
    ({"config": "launch/configs/fashion_mnist.py", "grid": {"rounds": [0]}},
     "config.rounds"),
    ({"config": "launch/configs/fashion_mnist.py", "grid": {"nokey": [1]}}, "nokey"),
    ({"config": "launch/configs/fashion_mnist.py", "grid": {"rounds": []}}, "non-empty"),
    ({"grid": {"rounds": [1]}}, "'config'"),
])
def test_bad_sweeps_exit_2_with_one_line(tmp_path, body, needle):
  file = write_sweep(tmp_path / "bad.py", body)
  r = run_module("launch.sweep", f"--sweep={file}", f"--out={tmp_path}/out")
  assert r.returncode == 2, r.stderr
  err = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(err) == 1 and needle in err[0], r.stderr
  assert not (tmp_path / "out").exists()


def _sweep_of_tiny_runs(tmp_path, rounds):
  """A sweep of one run whose launcher is the tiny experiment (tests/tiny_run_main.py)."""
  return write_sweep(tmp_path / "tiny.py", {
      "module": "tiny_run_main", "config": "launch/configs/fashion_mnist.py",
      "overrides": {"rounds": rounds, "checkpoint_every": 1000}, "runs": {"a": {}}})


def _start_sweep(file, out):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
  return subprocess.Popen([sys.executable, "-m", "launch.sweep", f"--sweep={file}",
                           f"--out={out}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait_for_rounds(proc):
  for line in proc.stdout:
    if line.strip().startswith("round"):
      return
  raise AssertionError("the run never started")


def test_a_second_sweep_on_the_same_output_is_refused(tmp_path):
  out = tmp_path / "runs"
  holder = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "tiny_run_main.py"),
                             str(out), "--hold"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "holding"
    r = run_module("launch.sweep", f"--sweep={_sweep_of_tiny_runs(tmp_path, 2)}",
                   f"--out={out}")
    assert r.returncode == 2 and f"pid {holder.pid}" in r.stderr, r.stderr
    assert not (out / "a").exists()
  finally:
    holder.kill()
    holder.wait()


def test_a_preempted_sweep_checkpoints_its_run_and_resumes_it(tmp_path):
  out = tmp_path / "runs"
  file = _sweep_of_tiny_runs(tmp_path, 10**6)  # far more rounds than the test waits for
  proc = _start_sweep(file, out)
  _wait_for_rounds(proc)
  proc.send_signal(signal.SIGTERM)  # a scheduler preempts the sweep
  tail = proc.communicate(timeout=600)[0]
  assert proc.returncode == 75, tail[-2000:]
  assert json.loads((out / "sweep.json").read_text())[0]["status"] == "preempted"
  log = (out / "a" / "log.txt").read_text()
  done = int(log.split("SIGTERM: stopped after round ")[1].split()[0])
  # Rerun (for a few more rounds than were done): the run resumes in place.
  rerun = _start_sweep(_sweep_of_tiny_runs(tmp_path, done + 2), out)
  tail = rerun.communicate(timeout=600)[0]
  assert rerun.returncode == 0, tail[-2000:]
  log = (out / "a" / "log.txt").read_text()
  assert "SIGTERM: stopped" in log and f"after round {done}" in log  # the log was kept
  rounds = [json.loads(l)["round"] for l in (out / "a" / "metrics.jsonl").read_text()
            .splitlines()]
  assert rounds == list(range(1, done + 3))


def test_a_killed_sweep_leaves_no_run_behind(tmp_path):
  out = tmp_path / "runs"
  proc = _start_sweep(_sweep_of_tiny_runs(tmp_path, 10**6), out)
  _wait_for_rounds(proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  from fedpriv import workdir  # pylint: disable=import-outside-toplevel
  deadline = time.time() + 300
  while True:  # the run got SIGTERM when the sweep died: it checkpoints and lets go
    try:
      release = workdir.claim(out / "a")
      break
    except workdir.WorkdirError:
      assert time.time() < deadline, "the run outlived its sweep"
      time.sleep(0.5)
  release()
  # Its output went to the dead sweep, but its checkpoint (every 1000 rounds) is there.
  assert os.listdir(out / "a" / "checkpoints")
