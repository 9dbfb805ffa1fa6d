"""Every option of `fedpriv.config.Config` at its default, as an ml_collections ConfigDict.

Presets start from `config()` and set only what differs, so a default lives in one place
(the dataclass) and every option can be overridden with `--config.KEY=VALUE` (the
override parser knows only the keys a config file sets). The `fedqsn` group is left out
on purpose: a preset that sends FedQSN proxies adds `fedqsn()` with its knobs, and
`--config.fedqsn.KEY=...` is refused elsewhere rather than silently ignored.
"""
import dataclasses

import ml_collections

from launch.configs.privacy_defaults import privacy_defaults


def options(obj) -> ml_collections.ConfigDict:
  """A config dataclass instance's options at their values, option groups left out."""
  return ml_collections.ConfigDict(
      {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
       if not dataclasses.is_dataclass(getattr(obj, f.name))})


def config() -> ml_collections.ConfigDict:
  """`Config()` as a ConfigDict: every top-level option and the `privacy` group (off)."""
  from fedpriv.config import Config  # pylint: disable=import-outside-toplevel
  c = options(Config())
  c.privacy = privacy_defaults()
  return c


def fedqsn() -> ml_collections.ConfigDict:
  """The `fedqsn` group at `FedQSNConfig`'s defaults, switched on."""
  from fedpriv.config import FedQSNConfig  # pylint: disable=import-outside-toplevel
  q = options(FedQSNConfig())
  q.enabled = True
  return q
