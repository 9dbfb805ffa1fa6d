"""FedQSN proxies down with update privacy up: the combined uplink, the `full` preset's
privacy stack on a tiny transformer, and what the config refuses."""
import json

import jax
import numpy as np
import pytest

from fedpriv import keys as keylib
from fedpriv.config import Config, ConfigError
from fedpriv.fedqsn.private_uplink import PrivateProxyUplink
from fedpriv.train import build, run
from launch.configs import fashion_mnist as fmnist_presets
from test_fedqsn_launch import tiny_cfg


def _with_privacy(cfg: Config, **privacy) -> Config:
  values = cfg.to_dict()
  values["privacy"].update(enabled=True, **privacy)
  return Config.from_dict(values)


def test_without_clipping_or_noise_the_private_uplink_is_fedqsn_delta_aggregation():
  # Equal example counts, no client mask: FedQSN's example-weighted, per-coordinate
  # "delta" mean and the private uplink's per-client mean are the same mean.
  plain = tiny_cfg({"client_optimizer": "sgd", "learning_rate": 0.5},
                   p1=0.3, p2=0.0, bits=4, pretrain_epochs=0, server_fraction=0.0)
  private = _with_privacy(plain, clip=1e6)
  exps = [build(plain), build(private)]
  assert isinstance(exps[1].algorithm.uplink, PrivateProxyUplink)
  pop = jax.tree.map(np.asarray, exps[0].data.train)
  assert len(set(pop.mask.sum(1).tolist())) == 1
  base = keylib.base_key(plain.seed)
  start = exps[0].task.init(keylib.init_key(base))
  results = []
  for exp in exps:
    algo = exp.algorithm
    state, _ = jax.jit(algo.run_round)(algo.init(start), pop, base)
    results.append(state.params)
  moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(start)))
  diff = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
             for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])))
  assert moved > 1e-3 and diff < 1e-3 * moved, (moved, diff)


def test_full_presets_privacy_stack_runs_with_fedqsn_and_reports_epsilon(tmp_path):
  full = fmnist_presets.get_config("full").to_dict()
  assert full["fedqsn"]["enabled"] and full["privacy"]["enabled"]
  Config.from_dict(full)  # the preset itself is a valid config
  privacy = dict(full["privacy"], secagg_neighbors=2, dropout=0.0, target_epsilon=20.0)
  del privacy["enabled"]
  cfg = _with_privacy(tiny_cfg(bits=2), **privacy)
  summary = run(build(cfg), tmp_path, log=lambda *a, **k: None)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["round"] for r in rows] == [1, 2]
  assert 0 < rows[0]["epsilon"] < rows[1]["epsilon"] == summary["epsilon"] <= 20
  assert {"client_proxy_accuracy_after", "server_masked_accuracy"} <= set(rows[1])
  # The ledger's downlink: an NF2 proxy of the unmasked units plus secure aggregation's
  # messages; the uplink: a tenth of the coordinates as ring elements plus the protocol.
  assert 1 < summary["downlink_bits_per_param"] < 8
  assert 0 < summary["uplink_bits_per_param"] < 8


@pytest.mark.parametrize("fedqsn,needle", [
    ({"aggregation": "average"}, "config.fedqsn.aggregation: must be 'delta' with update"),
    ({"upload_bits": 4}, "config.fedqsn.upload_bits: must be 32 with update privacy"),
])
def test_combinations_that_cannot_work_are_refused(fedqsn, needle):
  values = fmnist_presets.get_config("full").to_dict()
  values["fedqsn"].update(fedqsn)
  with pytest.raises(ConfigError, match=needle):
    Config.from_dict(values)
