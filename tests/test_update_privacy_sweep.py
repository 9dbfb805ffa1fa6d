"""The sweep's rows are valid configs that switch on exactly the stage they name."""
import importlib.util
import os

from conftest import ROOT
from fedpriv.config import Config
from launch import update_privacy_sweep as sweep


def _preset():
  spec = importlib.util.spec_from_file_location(
      "fm", os.path.join(ROOT, "launch", "configs", "fashion_mnist.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("private").to_dict()


def test_every_row_is_a_valid_config_with_its_stage_on():
  base = _preset()
  rows = sweep.rows(base["privacy"])
  assert list(rows) == ["fedavg", "mask", "clip", "quantize", "central_noise", "secagg",
                        "stack"]
  cfgs = {}
  for name, overrides in rows.items():
    privacy = {**base["privacy"], **(overrides or {})}
    if overrides is None:
      privacy["enabled"] = False
    cfgs[name] = Config.from_dict({**base, "privacy": privacy}).privacy
  assert not cfgs["fedavg"].enabled
  assert cfgs["mask"].mask_ratio == 0.9 and cfgs["mask"].clip > 1e6
  assert cfgs["clip"].clip == 0.1 and cfgs["clip"].bits == 0
  assert cfgs["quantize"].bits == 8 and cfgs["quantize"].noise == "none"
  assert cfgs["central_noise"].noise == "central" and not cfgs["central_noise"].secagg
  assert cfgs["secagg"].secagg and cfgs["secagg"].noise == "none"
  stack = cfgs["stack"]
  assert (stack.mask_ratio, stack.bits, stack.noise, stack.secagg) == (0.9, 8,
                                                                      "distributed", True)
  assert stack.target_epsilon == 4.0


def test_bits_sweep_rows_are_valid_configs_that_differ_only_in_bits_and_rotation():
  from launch import bits_sweep  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location(
      "fm2", os.path.join(ROOT, "launch", "configs", "fashion_mnist.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  base = module.get_config("fedavg").to_dict()
  rows = bits_sweep.rows(["4", "8"], 2.0, 4.0)
  assert list(rows) == ["float", "b4", "b4_rot", "b8", "b8_rot"]
  for name, overrides in rows.items():
    cfg = Config.from_dict({**base, "privacy": {**base["privacy"], **overrides}}).privacy
    assert cfg.enabled and cfg.clip == 2.0 and cfg.noise == "none" and not cfg.secagg
    assert cfg.bits == (0 if name == "float" else int(name[1:].split("_")[0]))
    assert cfg.rotation == ("hadamard" if name.endswith("_rot") else "none")
