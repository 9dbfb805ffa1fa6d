"""Defense settings of an attack, written as short specs, applied with the real privacy
mechanism of `fedpriv.privacy` (issue 4): nothing here clips, masks, quantizes or
noises by itself.

A spec is `none` or stages joined by `+`:

    mask=P      drop a fraction P of the update's coordinates (random_mask)
    bits=B      B-bit unbiased stochastic quantization over [-clip, clip]
    clip=C      the L2 clip bound (default: the attack config's `clip`)
    eps=E       Gaussian DP noise calibrated by the accountant to epsilon E at the
                config's delta after the deployment's rounds (central noise; with
                secagg, distributed discrete Gaussian shares)
    z=Z         the same with noise multiplier Z given directly
    secagg=N    secure aggregation over N clients: the attacker sees only the sum of
                N clients' updates (B defaults to 16 bits, secure aggregation sums
                integers)

e.g. `mask=0.9`, `bits=4`, `eps=8`, `secagg=4`, `secagg=4+eps=8`.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from fedpriv.config import ConfigError

SECAGG_DEFAULT_BITS = 16


@dataclasses.dataclass(frozen=True)
class Defense:
  """A parsed spec.

  Attributes:
    name: the spec as written.
    privacy: `PrivacyConfig` fields (empty for no defense).
    clients: clients in the sum the attacker sees (1, or N for secure aggregation).
  """
  name: str
  privacy: dict
  clients: int = 1

  @property
  def enabled(self) -> bool:
    return bool(self.privacy)


def _number(option: str, stage: str, text: str, kind):
  try:
    return kind(text)
  except ValueError:
    raise ConfigError(option, f"{stage!r}: {text!r} is not a{'n integer' if kind is int else ' number'}") from None


def parse_defense(spec: str, option: str = "defenses") -> Defense:
  """Parses one spec (see the module doc); raises ConfigError naming `option`."""
  spec = spec.strip()
  if spec in ("none", ""):
    return Defense("none", {})
  privacy: dict[str, Any] = {"enabled": True}
  clients, noise = 1, None
  for stage in spec.split("+"):
    name, sep, value = stage.partition("=")
    if not sep:
      raise ConfigError(option, f"{stage!r} in {spec!r}: stages are NAME=VALUE "
                        "(mask, bits, clip, eps, z, secagg)")
    if name == "mask":
      privacy["mask_ratio"] = _number(option, stage, value, float)
    elif name == "bits":
      privacy["bits"] = _number(option, stage, value, int)
    elif name == "clip":
      privacy["clip"] = _number(option, stage, value, float)
    elif name == "eps":
      privacy["target_epsilon"] = _number(option, stage, value, float)
      noise = "eps"
    elif name == "z":
      privacy["noise_multiplier"] = _number(option, stage, value, float)
      noise = "z"
    elif name == "secagg":
      clients = _number(option, stage, value, int)
      if clients < 2:
        raise ConfigError(option, f"{stage!r}: secure aggregation needs >= 2 clients")
      privacy["secagg"] = True
      privacy.setdefault("bits", SECAGG_DEFAULT_BITS)
    else:
      raise ConfigError(option, f"unknown stage {name!r} in {spec!r} (known: mask, bits, "
                        "clip, eps, z, secagg)")
  if noise is not None:
    privacy["noise"] = "distributed" if privacy.get("secagg") else "central"
  return Defense(spec, privacy, clients)


def parse_defenses(specs: str, option: str = "defenses") -> list[Defense]:
  """A comma-separated list of specs."""
  out = [parse_defense(s, option) for s in specs.split(",") if s.strip()]
  if not out:
    raise ConfigError(option, "needs at least one defense (e.g. 'none')")
  names = [d.name for d in out]
  if len(set(names)) != len(names):
    raise ConfigError(option, f"lists a defense twice: {specs!r}")
  return out


def deployment_config(train_cfg, defense: Defense, clip: float, delta: float):
  """The training config whose privacy mechanism the defense is: `train_cfg` with
  `privacy` set (and, for secure aggregation, the defense's clients per round).

  Raises:
    ConfigError: the combination is invalid (PrivacyConfig's own checks).
  """
  from fedpriv.config import PrivacyConfig  # pylint: disable=import-outside-toplevel
  if not defense.enabled:  # "none" means none, whatever the train config enabled
    return dataclasses.replace(train_cfg, privacy=PrivacyConfig())
  fields = {"clip": clip, "delta": delta, **defense.privacy}
  try:
    privacy = PrivacyConfig(**fields)
  except ConfigError as e:
    raise ConfigError("defenses", f"{defense.name!r}: {e}") from None
  changes: dict[str, Any] = {"privacy": privacy}
  if defense.privacy.get("secagg"):
    changes["clients_per_round"] = defense.clients
    changes["num_clients"] = max(train_cfg.num_clients, defense.clients)
  try:
    cfg = dataclasses.replace(train_cfg, **changes)
    privacy.check_cohort(cfg.clients_per_round)
  except ConfigError as e:
    raise ConfigError("defenses", f"{defense.name!r}: {e}") from None
  return cfg


def build_uplink(cfg, task):
  """The private uplink and its mechanism for `cfg.privacy` (or None, None when off)."""
  if not cfg.privacy.enabled:
    return None, None
  from fedpriv.privacy import setup as privacy_setup  # pylint: disable=import-outside-toplevel
  uplink, report = privacy_setup.build(cfg, task, cfg.num_clients)
  return uplink, report.mechanism


def describe(defense: Defense, mechanism, rounds: int) -> dict:
  """Flat facts about a defense for attack.json: its settings and, when it adds noise,
  the epsilon the project's accountant gives that very mechanism."""
  out: dict[str, Any] = {"defense": defense.name, "clients_in_sum": defense.clients}
  if mechanism is None:
    return out
  from fedpriv.privacy import accounting  # pylint: disable=import-outside-toplevel
  cfg = mechanism.config
  out.update(mask_ratio=cfg.mask_ratio, bits=cfg.bits, clip=cfg.clip, noise=cfg.noise,
             secagg=cfg.secagg, uplink_bits_per_param=mechanism.dim *
             mechanism.uplink_value_bits / mechanism.size)
  if mechanism.noisy:
    out.update(noise_multiplier=mechanism.noise_multiplier, delta=cfg.delta,
               epsilon=accounting.epsilon(mechanism, rounds),
               accounted_clients=mechanism.num_clients,
               accounted_clients_per_round=mechanism.cohort, accounted_rounds=rounds)
  return out
