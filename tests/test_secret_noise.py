"""DP noise and randomized rounding come from a per-run secret, not from the seed: two runs
of one config draw different noise, nothing the run writes outside its checkpoint holds
the secret, and `privacy.reproducible_noise` (simulation only) brings the seed back."""
from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from conftest import tiny_population
from fedpriv import train
from fedpriv.config import PrivacyConfig
from test_private_uplink import _dataset, make

CENTRAL = dict(enabled=True, clip=0.5, noise="central", noise_multiplier=1.0)
DISTRIBUTED = dict(enabled=True, clip=0.5, bits=8, secagg=True, noise="distributed",
                   noise_multiplier=1.0, secagg_threshold=0.6)


def _run(tmp_path: pathlib.Path, name: str, privacy: dict, **extra):
  pop = tiny_population([8] * 8, seed=6)
  cfg, algo, report = make(PrivacyConfig(**privacy, **extra), num_clients=8, rounds=2)
  exp = train.Experiment(cfg, _dataset(pop), algo.task, algo, [report])
  summary = train.run(exp, tmp_path / name, log=lambda *_: None)
  return summary, tmp_path / name


def _noise_seed(workdir: pathlib.Path) -> np.ndarray:
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  mgr = ocp.CheckpointManager((workdir / "checkpoints").resolve())
  got = mgr.restore(mgr.latest_step(),
                    args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  seeds = [np.asarray(l) for l in jax.tree.leaves(got.state)
           if np.asarray(l).dtype == np.uint32 and np.asarray(l).shape == (2,)]
  assert len(seeds) == 1
  return seeds[0]


@pytest.mark.parametrize("privacy", [CENTRAL, DISTRIBUTED], ids=["central", "distributed"])
def test_two_runs_of_one_config_draw_different_noise(tmp_path, privacy):
  a, wa = _run(tmp_path, "a", privacy)
  b, wb = _run(tmp_path, "b", privacy)
  assert (wa / "config.json").read_text() == (wb / "config.json").read_text()
  assert a["params_sum"] != b["params_sum"]
  assert not np.array_equal(_noise_seed(wa), _noise_seed(wb))
  assert all(e["valid"] == "yes" for e in a["epsilons"])


def test_reproducible_noise_repeats_the_run_and_marks_every_epsilon(tmp_path):
  a, _ = _run(tmp_path, "a", CENTRAL, reproducible_noise=True)
  b, _ = _run(tmp_path, "b", CENTRAL, reproducible_noise=True)
  assert a["params_sum"] == b["params_sum"] and a["params_l2"] == b["params_l2"]
  assert a["epsilon_simulation_only"] is True
  assert a["epsilons"] and all(e["valid"].startswith("simulation only")
                               for e in a["epsilons"])


def test_the_secret_is_only_in_the_checkpoint(tmp_path):
  summary, wd = _run(tmp_path, "a", DISTRIBUTED)
  assert summary["epsilon_simulation_only"] is False
  seed = _noise_seed(wd)
  words = [int(w) for w in seed]
  needles_text = [str(w) for w in words] + [f"{w:08x}" for w in words] + [
      f"{w:x}" for w in words]
  needles_bytes = [seed.tobytes(), seed.byteswap().tobytes()] + [
      np.uint32(w).tobytes() for w in words]
  files = [p for p in wd.rglob("*") if p.is_file() and "checkpoints" not in p.parts]
  assert {p.name for p in files} >= {"metrics.jsonl", "summary.json", "config.json"}
  for p in files:
    data = p.read_bytes()
    for needle in needles_bytes:
      assert needle not in data, p
    text = data.decode("latin-1")
    for needle in needles_text:
      if len(needle) >= 6:  # short numbers occur by chance in any file of digits
        assert needle not in text, (p, needle)
  # And what the run wrote is not enough to rebuild the noise: the seed-derived key
  # that `reproducible_noise` would use gives another model.
  config = json.loads((wd / "config.json").read_text())
  assert config["privacy"]["reproducible_noise"] is False
  again, _ = _run(tmp_path, "b", DISTRIBUTED, reproducible_noise=True)
  assert again["params_sum"] != summary["params_sum"]
