"""The `privacy` option group with every key at its default (update privacy off).

Config files include it so that `--config.privacy.KEY=VALUE` overrides work; see
`fedpriv.config.PrivacyConfig` for what each key means.
"""
import dataclasses

import ml_collections


def privacy_defaults() -> ml_collections.ConfigDict:
  from fedpriv.config import PrivacyConfig  # pylint: disable=import-outside-toplevel
  return ml_collections.ConfigDict(
      {f.name: getattr(PrivacyConfig(), f.name) for f in dataclasses.fields(PrivacyConfig)})
