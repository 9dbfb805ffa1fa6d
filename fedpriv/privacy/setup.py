"""Wires update privacy into an experiment: the uplink and the driver hook.

`build(cfg, task, num_clients)` makes the `Mechanism` (calibrating the noise when
`target_epsilon` is set), the `PrivateUplink` that applies it, and a `PrivacyReport`
hook that writes `epsilon` on evaluated rounds and `delta`, `epsilon`, `epsilon_pld`
and the ledger's bits per parameter into summary.json.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from fedpriv import keys as keylib
from fedpriv.config import Config, ConfigError
from fedpriv.privacy import accounting, ledger
from fedpriv.privacy.mechanism import Mechanism, make_mechanism
from fedpriv.privacy.uplink import PrivateUplink, flat_size_and_unravel


@dataclasses.dataclass
class PrivacyReport:
  """Driver hook: per-round epsilon and the communication ledger's running totals."""
  mechanism: Mechanism
  downlink_bits_per_param: float = 32.0
  totals: ledger.Totals = dataclasses.field(default_factory=ledger.Totals)
  secagg_seconds: list = dataclasses.field(default_factory=list)

  def on_round(self, exp, state, metrics, rnd, evaluated):
    del exp, state
    bits = ledger.round_bits(self.mechanism, self.downlink_bits_per_param,
                             metrics.get("sent"), metrics.get("secagg_uplink_bytes"),
                             metrics.get("secagg_downlink_bytes"))
    self.totals = self.totals.add(bits)
    if "secagg_seconds" in metrics:
      self.secagg_seconds.append(float(metrics["secagg_seconds"]))
    out = {}
    if evaluated:
      out["epsilon"] = accounting.epsilon(self.mechanism, rnd)
      # The ledger so far: exact bits sent by all clients, up and down.
      out["uplink_bits_total"] = self.totals.uplink
      out["downlink_bits_total"] = self.totals.downlink
      if self.secagg_seconds:
        out["secagg_seconds"] = self.secagg_seconds[-1]
    return out

  def on_continue(self, exp, changes, after_round):
    """A run continued for more rounds is accounted for its new total by `on_round` and
    `on_end` (they compose the rounds the state has run); noise calibrated to the old
    total cannot be continued, since the rounds left would need other noise."""
    del exp, after_round
    target = self.mechanism.config.target_epsilon
    if "rounds" in changes and target:
      raise ConfigError("rounds", f"the run's noise was calibrated by privacy.target_epsilon="
                        f"{target:g} for {changes['rounds'][0]} rounds; continuing it for "
                        "another number of rounds would change the noise mid-run: use a new "
                        "workdir (or a fixed privacy.noise_multiplier)")

  def on_end(self, exp, state):
    del exp
    mech = self.mechanism
    rounds = int(state.round)
    out = {"delta": mech.config.delta,
           "epsilon": accounting.epsilon(mech, rounds),
           "epsilon_pld": accounting.epsilon_pld(mech, rounds),
           **self.totals.per_param(mech.size), **mech.describe()}
    if self.secagg_seconds:
      out["secagg_seconds_per_round"] = float(np.median(self.secagg_seconds))
    return out


def build(cfg: Config, task, num_clients: int, downlink_bits_per_param: float = 32.0):
  """The private uplink and its report hook for `cfg.privacy` (raises ConfigError)."""
  shapes = jax.eval_shape(task.init, keylib.init_key(keylib.base_key(cfg.seed)))
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  size, unravel = flat_size_and_unravel(params)
  mech = make_mechanism(cfg.privacy, num_clients=num_clients,
                        cohort=cfg.clients_per_round, rounds=cfg.rounds, size=size)
  uplink = PrivateUplink(mech, unravel, cfg.seed)
  return uplink, PrivacyReport(mech, downlink_bits_per_param)
