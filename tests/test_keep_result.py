"""launch.tools.keep_result: what a result page keeps of a finished run."""
import json

import pytest

from launch.tools import keep_result


def test_keeps_summary_without_data_info_and_the_evaluated_rounds(tmp_path):
  (tmp_path / "summary.json").write_text(json.dumps(
      {"test_accuracy": 0.5, "epsilon": 2.0, "data_info": {"clients": list(range(100))}}))
  rows = [{"round": 1, "train_loss": 1.0},
          {"round": 2, "train_loss": 0.9, "test_accuracy": 0.4, "test_loss": 1.2},
          {"round": 3, "train_loss": 0.8},
          {"round": 4, "train_loss": 0.7, "test_accuracy": 0.5, "test_loss": 1.1}]
  (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = keep_result.kept(tmp_path)
  assert "data_info" not in out
  assert out["epsilon"] == 2.0 and out["test_accuracy"] == 0.5
  assert out["curve"] == [{"round": 2, "test_accuracy": 0.4, "test_loss": 1.2},
                          {"round": 4, "test_accuracy": 0.5, "test_loss": 1.1}]


def test_refuses_an_unfinished_run(tmp_path):
  (tmp_path / "metrics.jsonl").write_text("")
  with pytest.raises(FileNotFoundError, match="has not finished"):
    keep_result.kept(tmp_path)
