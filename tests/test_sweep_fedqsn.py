"""launch.sweep_fedqsn: the commands it runs and the report it writes from summaries."""
import json
import pathlib

from launch import sweep_fedqsn


def _summary(p1, bits, acc, lr=0.2, pretrained=True, attacked=False):
  q = {"p1": p1, "p2": 0.2 if p1 else 0.0, "bits": bits, "aggregation": "delta",
       "upload_bits": 32, "quantize_embeddings": False}
  s = {"config": {"fedqsn": q, "learning_rate": lr, "test_limit": 0},
       "data_info": {"test_examples": 100}, "test_accuracy": acc,
       "eval_set_global_accuracy": acc, "server_masked_accuracy": acc - 0.1,
       "client_proxy_accuracy_before": acc - 0.2, "client_proxy_accuracy_after": acc - 0.15,
       "downlink_bits_per_param": 32.0 if bits == 32 else 2.0, "fedqsn_eval_examples": 50}
  if pretrained:
    s.update(server_pretrained_accuracy=0.5, server_examples=30)
  if attacked:
    s.update(best_attacker_accuracy=acc - 0.05, training_alone_accuracy=0.3)
  return s


def _write(out, dataset, name, summary):
  wd = out / dataset / name
  wd.mkdir(parents=True)
  (wd / "summary.json").write_text(json.dumps(summary))
  rows = [{"round": r, "test_accuracy": summary["test_accuracy"] - 0.01 * (5 - r),
           **({"client_proxy_accuracy_after": 0.4} if r % 2 == 0 else {})}
          for r in range(1, 5)]
  (wd / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_top_level_overrides_reach_the_config_not_the_fedqsn_group(tmp_path):
  cmd = sweep_fedqsn.command("fashion_mnist", "qsn_50_20_b4_lr032", tmp_path, ["rounds=3"])
  assert "--config.learning_rate=0.032" in cmd and "--config.fedqsn.p1=0.5" in cmd
  assert not any(a.startswith("--config.fedqsn.learning_rate") for a in cmd)
  # the sweep-wide --set comes first, so a run's own override wins
  assert cmd.index("--config.rounds=3") < cmd.index("--config.learning_rate=0.032")


def test_report_tables_runs_with_and_without_server_pretraining(tmp_path):
  out = tmp_path / "runs"
  _write(out, "fashion_mnist", "fedavg", _summary(0.0, 32, 0.85, attacked=True))
  _write(out, "fashion_mnist", "qsn_50_20_b4_lr032", _summary(0.5, 4, 0.83, lr=0.032))
  _write(out, "sentiment", "fedavg", _summary(0.0, 32, 0.82, lr=5e-5, pretrained=False))
  plot = tmp_path / "plot.png"
  sweep_fedqsn.report(out, str(plot))
  fm = (out / "fashion_mnist.md").read_text()
  assert "| qsn_50_20_b4_lr032 | FedQSN | 0.5 | 0.2 | 4 | delta, client lr 0.032 | 83.0 |" in fm
  assert "| -2.0 |" in fm and "not run" in fm and "Server-pretrained model: 50.0%" in fm
  lm = (out / "sentiment.md").read_text()
  assert "No server pretraining" in lm and "| fedavg | FedAvg |" in lm
  assert plot.stat().st_size > 1000
  assert pathlib.Path(plot).exists()
