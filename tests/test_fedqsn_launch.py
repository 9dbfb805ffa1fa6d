"""The FedQSN presets end to end: p1=p2=0 and bits=32 builds plain FedAvg's round;
launch.extract trains (with update privacy on the uplink too), measures and attacks;
bad values exit 2."""
import json

import jax
import numpy as np
import pytest

from fedpriv import keys as keylib
from fedpriv.config import Config
from fedpriv.fedqsn.aggregation import FedQSNUplink
from fedpriv.fedqsn.pretrain import Pretrain
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.train import build
from launch.configs import fashion_mnist as fmnist_presets
from launch.configs import shakespeare as shakespeare_presets
from test_launch import launch

TINY = {"num_clients": 6, "clients_per_round": 3, "max_examples_per_client": 4,
        "test_limit": 40, "seq_len": 12, "min_chars": 20000, "eval_every": 1,
        "eval_batch_size": 20}
TINY_Q = {"pretrain_epochs": 1, "eval_examples": 20, "server_fraction": 0.1}


def tiny_cfg(top=None, **fedqsn):
  values = shakespeare_presets.get_config("fedqsn").to_dict()
  values.update(TINY, rounds=2, **(top or {}))
  values["fedqsn"].update(TINY_Q, **fedqsn)
  return Config.from_dict(values)


def test_preset_without_masks_or_quantization_is_fedavg():
  # The round itself equals FedAvg's for these settings
  # (test_fedqsn_aggregation::test_no_masking_no_quantization_is_plain_fedavg); here:
  # the preset builds that round, with the server's own data and its pretraining.
  exp = build(tiny_cfg(p1=0.0, p2=0.0, bits=32))
  down, up = exp.algorithm.downlink, exp.algorithm.uplink
  assert isinstance(down, FedQSNDownlink) and isinstance(up, FedQSNUplink)
  assert up.mode == "delta" and up.upload_bits == 32
  assert set(down.scale.values()) == {1.0}
  assert exp.data.server is not None and exp.data.info["server_plays"]
  assert any(isinstance(h, Pretrain) for h in exp.hooks)
  params = exp.task.init(keylib.init_key(keylib.base_key(exp.cfg.seed)))
  received = down.client_model(params, jax.random.key(5))
  jax.tree.map(np.testing.assert_array_equal, received.params, params)
  assert all(bool(np.all(np.asarray(v) == 1)) for v in jax.tree.leaves(received.visible))


def test_extract_with_update_privacy_trains_measures_attacks_and_reports_epsilon(tmp_path):
  # Both tiers, as in fashion_mnist.py:full (its privacy group, sized for 3 clients per
  # round), on the tiny Shakespeare transformer: two rounds, the protection metrics,
  # the accountant's epsilon, and the attacks.
  workdir = tmp_path / "run"
  args = [f"--config.{k}={v}" for k, v in TINY.items()]
  args += [f"--config.fedqsn.{k}={v}" for k, v in TINY_Q.items()]
  privacy = dict(fmnist_presets.get_config("full").privacy.to_dict(), secagg_neighbors=2,
                 dropout=0.0, target_epsilon=20.0)
  args += [f"--config.privacy.{k}={v}" for k, v in privacy.items()]
  r = launch("--config=launch/configs/shakespeare.py:fedqsn", f"--workdir={workdir}",
             "--config.rounds=2", "--config.fedqsn.bits=2", "--attackers=2", "--colluders=3",
             "--epochs_factor=1", *args, module="launch.extract")
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  keys = {"test_accuracy", "server_masked_accuracy", "client_proxy_accuracy_before",
          "client_proxy_accuracy_after", "protection_gap", "downlink_bits_per_param"}
  assert [row["round"] for row in rows] == [1, 2] and keys <= set(rows[0])
  summary = json.loads((workdir / "summary.json").read_text())
  assert keys | {"best_attacker_accuracy", "training_alone_accuracy",
                 "server_pretrained_accuracy"} <= set(summary)
  assert 0 < rows[0]["epsilon"] < rows[1]["epsilon"] == summary["epsilon"] <= 20
  # The ledger's downlink: NF2 proxies of the unmasked units, plus a mask seed and secure
  # aggregation's messages; the uplink: a tenth of the coordinates as ring elements.
  assert summary["downlink_bits_per_param"] < 4
  assert 0 < summary["uplink_bits_per_param"] < 4
  attacks = json.loads((workdir / "attacks.json").read_text())
  assert len(attacks["attacks"]["last_proxy"]["after"]) == 2
  assert attacks["attacks"]["colluders"]["k"] == 3
  assert min(attacks["attacks"]["all_proxies"]["proxies_kept"]) >= 1  # the last round's


@pytest.mark.parametrize("args,needle", [
    (["--config.fedqsn.p1=1.5"], "config.fedqsn.p1: must be in [0, 1)"),
    (["--config.fedqsn.bits=9"], "config.fedqsn.bits: must be in 2..8"),
    (["--config.fedqsn.aggregation=median"], "config.fedqsn.aggregation: must be one of"),
    (["--config.fedqsn.client_mask=topk"], "config.fedqsn.client_mask: must be one of"),
])
def test_bad_fedqsn_values_exit_2_with_one_line(tmp_path, args, needle):
  r = launch("--config=launch/configs/fashion_mnist.py:fedqsn", f"--workdir={tmp_path}/w",
             *args)
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  err = [l for l in r.stderr.splitlines() if l.strip()]
  assert len(err) == 1 and needle in err[0], r.stderr
  assert not (tmp_path / "w").exists()


def test_extract_refuses_a_run_without_fedqsn(tmp_path):
  r = launch("--config=launch/configs/fashion_mnist.py", f"--workdir={tmp_path}/w",
             module="launch.extract")
  assert r.returncode == 2 and "fedqsn.enabled" in r.stderr and "Traceback" not in r.stderr
