"""launch.attack end to end on tiny settings, and its refusal of bad input."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, requires_fmnist


def launch(*args, timeout=600):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, "-m", "launch.attack", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@requires_fmnist
def test_inversion_end_to_end(tmp_path):
  workdir = tmp_path / "inv"
  # One setting through the whole path (the undefended attack is tested in
  # test_inversion.py without the launcher).
  defenses = "bits=8"
  r = launch("--config=launch/configs/attack.py:inversion", f"--workdir={workdir}",
             f"--config.defenses={defenses}", "--config.attack_steps=10",
             "--config.log_every=5", "--config.trials=1", "--config.pool=50")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "inversion step 10/10" in r.stdout and "psnr" in r.stdout
  rows = json.loads((workdir / "attack.json").read_text())
  assert [row["defense"] for row in rows] == defenses.split(",")
  for row in rows:
    assert {"defense", "psnr", "ssim", "batch_size", "local_steps", "label_accuracy"} <= set(row)
    assert all(not isinstance(v, (dict, list)) for v in row.values())  # flat
    assert 0.0 < row["psnr"] <= 100.0 and -1.0 <= row["ssim"] <= 1.0
    assert (workdir / row["image"]).stat().st_size > 500
  assert rows[0]["bits"] == 8 and rows[0]["uplink_bits_per_param"] == 8
  assert (workdir / "reconstructions.png").stat().st_size > 500


@requires_fmnist
def test_membership_on_an_overfit_model_is_clearly_above_chance(tmp_path):
  workdir = tmp_path / "mia"
  r = launch("--config=launch/configs/attack.py:membership", f"--workdir={workdir}",
             "--config.defenses=none", "--config.train.num_clients=2",
             "--config.train.clients_per_round=2", "--config.train.train_limit=50",
             "--config.train.rounds=8", "--config.train.eval_every=4",
             "--config.train.test_limit=200", "--config.nonmembers=1000")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "round    8/8" in r.stdout
  (row,) = json.loads((workdir / "membership.json").read_text())
  assert row["defense"] == "none" and row["members"] == 50 and row["nonmembers"] == 1000
  # 50 training examples seen for 80 local epochs: the model fits them better than
  # unseen examples, and the loss gives them away (measured AUC 0.71).
  assert row["member_loss"] < row["nonmember_loss"]
  assert row["auc"] > 0.6
  assert 0.0 <= row["tpr_at_0.1%fpr"] <= row["tpr_at_1%fpr"] <= 1.0
  assert "epsilon" not in row  # no noise, no epsilon
  assert (workdir / "roc.png").stat().st_size > 1000


@pytest.mark.parametrize("args,needle", [
    (["--config.kind=steal"], "config.kind"),
    (["--config.defenses=none,foo=1"], "config.defenses"),
    (["--config.defenses=mask"], "config.defenses"),
    (["--config.batch_sizes=0"], "config.batch_sizes"),
    (["--config.batch_sizes=a"], "config.batch_sizes"),
    (["--config.train.rounds=0"], "config.train.rounds"),
    (["--config.no_such_option=1"], "no_such_option"),
    (["--config.kind=membership", "--config.train.train_limit=0"], "config.train.train_limit"),
    (["--config.labels=guess"], "config.labels"),
])
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, args, needle):
  workdir = tmp_path / "never"
  r = launch("--config=launch/configs/attack.py", f"--workdir={workdir}", *args)
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  err = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(err) == 1 and needle in err[0], r.stderr
  assert "Traceback" not in r.stderr
  assert not workdir.exists()
