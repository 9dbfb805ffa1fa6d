"""Clients sharded over fake CPU devices give the same model as one device."""
import os
import subprocess
import sys

from conftest import ROOT


def test_sharded_rounds_equal_single_device_rounds():
  env = dict(os.environ, PYTHONPATH=ROOT)
  r = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "sharded_round_main.py")],
                     env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stdout + r.stderr[-3000:]
  assert r.stdout.strip().endswith("OK")
  for name in ("plain", "quantized_central", "secagg_distributed", "scaffold"):
    assert f"{name} devices=4" in r.stdout
