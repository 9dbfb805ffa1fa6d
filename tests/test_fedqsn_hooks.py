"""The FedQSN driver hooks on a tiny experiment: per-round protection metrics (from the
model before the round), and server pretraining with its cache."""
import json

import jax
import numpy as np
import optax
import pytest

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv.config import Config
from fedpriv.data.client_data import EvalData, FederatedDataset
from fedpriv.fedavg import FedAvg
from fedpriv.fedqsn.aggregation import FedQSNUplink
from fedpriv.fedqsn.hooks import FedQSNMetrics
from fedpriv.fedqsn.pretrain import Pretrain
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.fedqsn.units import dense_spec
from fedpriv.train import Experiment, run


def _learnable(n_clients, n, seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n_clients, n, 4)).astype(np.float32)
  y = ((x[..., 0] > 0).astype(np.int32) + (x[..., 1] > 0).astype(np.int32))
  return x, y


def tiny_experiment(p1, p2, bits, rounds=3, hooks=(), validation=True, eval_examples=0):
  task = tiny_task()
  x, y = _learnable(8, 12, 0)
  pop = tiny_population([12] * 8)._replace(x=x, y=y)
  xt, yt = _learnable(1, 300, 1)
  xs, ys = _learnable(1, 200, 2)
  xv, yv = _learnable(1, 100, 3)
  data = FederatedDataset("tiny", pop, EvalData(xt[0], yt[0], np.ones(300, bool)), 3,
                          "classification", tuple(f"c{i}" for i in range(8)),
                          server=EvalData(xs[0], ys[0], np.ones(200, bool)),
                          validation=(EvalData(xv[0], yv[0], np.ones(100, bool))
                                      if validation else None))
  cfg = Config(num_clients=8, clients_per_round=4, rounds=rounds, eval_every=1,
               eval_batch_size=100, seed=3)
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  spec = dense_spec(shapes, head="head")
  down = FedQSNDownlink.make(spec, shapes, keylib.base_key(cfg.seed), p1=p1, p2=p2, bits=bits,
                             block_size=4)
  algo = FedAvg(task=task, client_optimizer=optax.sgd(0.1), server_optimizer=optax.sgd(1.0),
                clients_per_round=4, local_epochs=1, batch_size=4, chunk_size=2,
                downlink=down, uplink=FedQSNUplink.make(down, "delta", 32))
  return Experiment(cfg, data, task, algo, hooks=[*hooks, FedQSNMetrics(eval_examples)])


def test_metrics_are_written_and_proxies_come_from_the_model_before_the_round(tmp_path):
  # Without masking or quantization every proxy is the model before the round, so the
  # best client's "before" accuracy is the previous round's global accuracy.
  exp = tiny_experiment(0.0, 0.0, 32)
  summary = run(exp, tmp_path, log=lambda *_: None)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert len(rows) == 3
  for prev, row in zip(rows, rows[1:]):
    assert row["client_proxy_accuracy_before"] == pytest.approx(prev["test_accuracy"], abs=1e-6)
  for row in rows:
    # eval_examples=0: the hook's evaluation set is the whole test set.
    assert row["eval_set_global_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-6)
    assert row["server_masked_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-6)
    assert row["protection_gap"] == pytest.approx(
        row["test_accuracy"] - row["client_proxy_accuracy_after"], abs=1e-6)
  assert summary["downlink_bits_per_param"] == pytest.approx(exp.algorithm.downlink.bits_per_param)
  # Validation losses: every proxy is the previous global model, the server mask is none.
  for prev, row in zip(rows, rows[1:]):
    assert row["validation_loss_client_before"] == pytest.approx(
        prev["validation_loss_global"], rel=1e-5)
  for row in rows:
    assert row["validation_loss_server_masked"] == pytest.approx(
        row["validation_loss_global"], rel=1e-6)
  assert summary["validation_source"] == "dataset" and summary["validation_examples"] == 100


def test_each_model_is_reported_at_its_round_of_lowest_validation_loss(tmp_path):
  exp = tiny_experiment(0.5, 0.5, 4, rounds=4)
  summary = run(exp, tmp_path, log=lambda *_: None)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  test_acc = {"global": "eval_set_global_accuracy", "server_masked": "server_masked_accuracy",
              "client_before": "client_proxy_accuracy_before_by_validation",
              "client_after": "client_proxy_accuracy_after_by_validation"}
  for model, acc_key in test_acc.items():
    losses = [r[f"validation_loss_{model}"] for r in rows]
    best = int(np.argmin(losses))
    got = summary["validation_selected"][model]
    assert got["round"] == rows[best]["round"]
    assert got["validation_loss"] == pytest.approx(losses[best])
    assert got["test_accuracy"] == pytest.approx(rows[best][acc_key])
  # The best client by validation is one of the round's clients: never above the best by
  # test accuracy.
  for r in rows:
    assert r["client_proxy_accuracy_after_by_validation"] <= r["client_proxy_accuracy_after"]


def test_a_large_validation_split_is_cut_to_eval_examples(tmp_path):
  # Every client's proxy is evaluated on it twice a round: it follows eval_examples.
  exp = tiny_experiment(0.5, 0.2, 4, rounds=1, eval_examples=40)
  summary = run(exp, tmp_path, log=lambda *_: None)
  assert summary["validation_examples"] == 40 and summary["fedqsn_eval_examples"] == 40
  assert summary["validation_source"].startswith("dataset (a seeded subset of 40 of its 100")


def test_without_a_validation_set_a_seeded_disjoint_share_of_test_is_carved():
  from fedpriv.fedqsn.hooks import carve_validation
  test = EvalData(np.arange(10, dtype=np.float32)[:, None], np.arange(10), np.ones(10, bool))
  val, rest = carve_validation(test, 3, seed=0)
  assert len(val.y) == 3 and len(rest.y) == 7
  assert sorted(val.y.tolist() + rest.y.tolist()) == list(range(10))
  again, _ = carve_validation(test, 3, seed=0)
  np.testing.assert_array_equal(again.y, val.y)
  other = [carve_validation(test, 3, seed=s)[0].y.tolist() for s in range(1, 6)]
  assert any(o != val.y.tolist() for o in other)
  assert len(carve_validation(test, 0, seed=0)[0].y) == 5  # 0: half, and never more
  assert len(carve_validation(test, 9, seed=0)[0].y) == 5


def test_masked_proxies_are_measured_below_the_global_model(tmp_path):
  exp = tiny_experiment(0.5, 0.5, 2, rounds=2, validation=False)
  summary = run(exp, tmp_path, log=lambda *_: None)
  assert summary["validation_source"].startswith("carved from the test set")
  assert summary["validation_examples"] == 150 and summary["fedqsn_eval_examples"] == 150
  bits = exp.algorithm.downlink.bits_per_param
  assert summary["downlink_bits_per_param"] == pytest.approx(bits) and bits < 16
  for key in ("server_masked_accuracy", "client_proxy_accuracy_before",
              "client_proxy_accuracy_after", "protection_gap"):
    assert key in summary
  assert summary["server_masked_accuracy"] != pytest.approx(summary["test_accuracy"], abs=1e-6)


def test_pretraining_learns_from_server_data_and_the_cache_returns_the_same_model(tmp_path):
  recipe = {"optimizer": "sgd", "learning_rate": 0.2}
  exp = tiny_experiment(0.0, 0.0, 32)
  init = exp.task.init(jax.random.key(0))
  hook = Pretrain(optax.sgd(0.2), epochs=5, batch_size=16, recipe=recipe,
                  cache_dir=str(tmp_path))
  trained = hook.on_start(exp, init)
  assert not hook.stats["pretrain_cached"] and hook.stats["server_pretrained_accuracy"] > 0.6
  again = Pretrain(optax.sgd(0.2), epochs=5, batch_size=16, recipe=recipe,
                   cache_dir=str(tmp_path))
  cached = again.on_start(exp, init)
  assert again.stats["pretrain_cached"]
  jax.tree.map(np.testing.assert_array_equal, cached, trained)
  # A different recipe is a different model, not a cache hit.
  other = Pretrain(optax.sgd(0.2), epochs=2, batch_size=16, recipe=recipe,
                   cache_dir=str(tmp_path))
  other.on_start(exp, init)
  assert not other.stats["pretrain_cached"]
  assert len(list(tmp_path.glob("*.npz"))) == 2


def test_attack_hook_keeps_the_right_proxies_and_reports_the_best_attacker(tmp_path):
  from fedpriv.fedqsn import replay
  from fedpriv.fedqsn.attacks import AttackHook

  hook = AttackHook(attackers=2, colluders=3, epochs_factor=2)
  exp = tiny_experiment(0.0, 0.0, 32, rounds=4)
  exp.hooks.append(hook)
  run(exp, tmp_path, log=lambda *_: None)
  r = hook.results
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  a = r["attacks"]
  # Nothing masked: each attacker's last proxy is the model before the final round.
  np.testing.assert_allclose(a["last_proxy"]["before"], [rows[-2]["test_accuracy"]] * 2,
                             atol=1e-6)
  assert a["colluders"]["before"] == pytest.approx(rows[-2]["test_accuracy"], abs=1e-6)
  assert r["attack_global_accuracy"] == pytest.approx(rows[-1]["test_accuracy"], abs=1e-6)
  # Attackers are the final cohort, and kept a proxy for every round they were sampled.
  base = keylib.base_key(exp.cfg.seed)
  cohorts = [set(np.asarray(replay.round_cohort(exp.algorithm, base, t, 8).client_ids).tolist())
             for t in range(1, 5)]
  assert set(a["colluder_ids"]) <= cohorts[-1]
  assert a["all_proxies"]["proxies_kept"] == [sum(c in s for s in cohorts)
                                              for c in a["attacker_ids"]]
  values = (a["last_proxy"]["before"] + a["last_proxy"]["after"] + a["all_proxies"]["before"]
            + a["all_proxies"]["after"] + [a["colluders"]["before"], a["colluders"]["after"]])
  assert r["best_attacker_accuracy"] == pytest.approx(max(values))
  assert len(a["training_alone"]) == 2 and r["training_alone_accuracy"] == pytest.approx(
      np.mean(a["training_alone"]))
