"""The launch layer only launches: no launch module imports another's private names,
entry points can be imported together (each flag defined once), and every preset
resolves to a valid config."""
import ast
import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import ROOT
from fedpriv.attacks.config import AttackConfig
from fedpriv.config import Config, FedQSNConfig
from launch.configs import base

LAUNCH = pathlib.Path(ROOT) / "launch"
# The entry points that take --config and/or --workdir.
ENTRY_POINTS = ("train", "attack", "extract", "audit", "privacy_claims",
                "update_privacy_sweep")


def test_no_launch_module_imports_private_names_of_another():
  offenders = []
  for path in sorted(LAUNCH.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("launch")
          and not (node.module or "").startswith("launch.configs")):
        offenders += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}"
                      for a in node.names if a.name.startswith("_")]
  assert not offenders, offenders


def test_entry_points_import_together_and_share_config_and_workdir():
  code = "\n".join([
      "import importlib",
      f"mods = [importlib.import_module('launch.' + m) for m in {ENTRY_POINTS!r}]",
      "from absl import flags",
      "flags.FLAGS(['x', '--config=launch/configs/shakespeare.py:private', '--workdir=w'])",
      # Every module's holder reads the one flag that was parsed.
      "assert {m._CONFIG.value.privacy.clip for m in mods if hasattr(m, '_CONFIG')} == {0.5}",
      "assert {m._WORKDIR.value for m in mods if hasattr(m, '_WORKDIR')} == {'w'}",
      "print('ok')"])
  env = dict(os.environ, PYTHONPATH=ROOT)
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def _preset_names(module) -> list[str]:
  """The presets a config file offers, read off its refusal of an unknown one."""
  with pytest.raises(ValueError, match="; use ") as e:
    module.get_config("no_such_preset")
  names = [n.strip() for n in re.split(r",| or ", str(e.value).split("; use ", 1)[1])]
  assert len(names) >= 2 and all(re.fullmatch(r"\w+", n) for n in names), names
  return names


CONFIG_FILES = ("fashion_mnist", "shakespeare", "sentiment", "attack")


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_preset_resolves_to_a_valid_config_with_every_option(name):
  module = importlib.import_module(f"launch.configs.{name}")
  cls = AttackConfig if name == "attack" else Config
  for preset in [None, *_preset_names(module)]:
    c = module.get_config() if preset is None else module.get_config(preset)
    cfg = cls.from_dict(c.to_dict())  # raises ConfigError on a bad preset
    train = c.train if name == "attack" else c
    # Every option can be overridden on the command line (fedqsn only where it is on).
    assert set(Config().to_dict()) - {"fedqsn"} <= set(train.keys()), preset
    assert set(train.privacy.keys()) == set(Config().to_dict()["privacy"]), preset
    if "fedqsn" in train:
      assert (cfg.train if name == "attack" else cfg).fedqsn.enabled, preset


def test_base_is_config_defaults():
  assert Config.from_dict(base.config().to_dict()) == Config()
  assert (Config.from_dict({"fedqsn": base.fedqsn().to_dict()}).fedqsn
          == FedQSNConfig(enabled=True))
  assert AttackConfig.from_dict(base.options(AttackConfig()).to_dict()) == AttackConfig()
