"""launch.tools.summarize_kept: seeds of one setting are one row; the figure is drawn."""
import json
import math

import pytest

from launch.tools import summarize_kept


def _kept(seed, acc, noise="central", eps=4.0, bits=0, secagg=False, rounds=240,
          rotation="none"):
  privacy = {"enabled": True, "noise": noise, "bits": bits, "mask_ratio": 0.9 if bits else 0.0,
             "rotation": rotation, "secagg": secagg}
  return {"config": {"seed": seed, "model": "tempered_cnn", "privacy": privacy},
          "rounds": rounds, "epsilon": eps if noise != "none" else math.inf,
          "test_accuracy": acc, "uplink_bits_per_param": 3.0 if secagg else 32.0,
          "seconds_per_round": 2.0,
          "curve": [{"round": r, "test_accuracy": acc - 0.01 * (3 - r)} for r in (1, 2, 3)]}


def test_seeds_of_one_setting_are_one_row_with_mean_and_spread():
  runs = [_kept(0, 0.80), _kept(1, 0.84), _kept(0, 0.87, noise="none"),
          _kept(0, 0.83, noise="distributed", bits=8, secagg=True)]
  lines = summarize_kept.table(runs).splitlines()
  assert len(lines) == 2 + 3  # header, rule, three settings
  assert lines[2].startswith("| no noise, 240 rounds | 0 | 87.00 | - |")
  assert lines[3].startswith("| central noise, eps 4, 240 rounds | 0, 1 | 82.00 (80.00 to 84.00) "
                             "| 4.00 |")
  assert "whole stack: eps 4, 8 bits, mask 0.9, SecAgg" in lines[4]


def test_a_seed_does_not_split_a_setting_but_epsilon_and_bits_do():
  key = summarize_kept.setting
  assert key(_kept(0, 0.8)) == key(_kept(3, 0.7))
  assert key(_kept(0, 0.8)) != key(_kept(0, 0.8, eps=8.0))
  assert key(_kept(0, 0.8, bits=4, secagg=True)) != key(_kept(0, 0.8, bits=8, secagg=True))
  assert key(_kept(0, 0.8, rounds=60)) != key(_kept(0, 0.8))


def test_figure_and_files(tmp_path):
  runs = [_kept(0, 0.80), _kept(1, 0.84), _kept(0, 0.87, noise="none"),
          _kept(0, 0.83, noise="distributed", bits=8, secagg=True),
          _kept(0, 0.82, noise="distributed", bits=4, secagg=True, rotation="hadamard")]
  for i, r in enumerate(runs):
    (tmp_path / f"fed_{i}.json").write_text(json.dumps(r))
  loaded = summarize_kept.load(str(tmp_path / "fed_*.json"))
  assert len(loaded) == 5
  summarize_kept.figure(loaded, tmp_path / "fig.png", "t")
  assert (tmp_path / "fig.png").stat().st_size > 10_000
  with pytest.raises(FileNotFoundError, match="no files"):
    summarize_kept.load(str(tmp_path / "nothing_*.json"))
