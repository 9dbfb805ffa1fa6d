"""Wires update privacy into an experiment: the uplink and the driver hook.

`build(cfg, task, num_clients)` makes the `Mechanism` (calibrating the noise when
`target_epsilon` is set), the `PrivateUplink` that applies it, and a `PrivacyReport`
hook that writes `epsilon` (against observers) and `epsilon_server_max` (against the
server, for the client that took part most often so far) on evaluated rounds, and into
summary.json `epsilons` (every claim with its threat model, relation, sampling,
accountant and delta: `accounting.claims`), the headline `epsilon` / `delta` (the
observer RDP claim, `epsilon_label` says so), `epsilon_simulation_only`, the most
participations of any client, and the ledger's bits per parameter.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from fedpriv import keys as keylib
from fedpriv.config import Config, ConfigError, cohort_capacity
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
  beyond_range: list = dataclasses.field(default_factory=lambda: [0, 0])  # [values, of]
  participations: np.ndarray | None = None  # rounds each client took part in so far

  def _count(self, client_ids, sampled) -> None:
    if self.participations is None:
      self.participations = np.zeros(self.mechanism.num_clients, np.int64)
    ids = np.asarray(client_ids)[:int(sampled)]
    np.add.at(self.participations, ids, 1)

  @property
  def max_participations(self) -> int:
    return 0 if self.participations is None else int(self.participations.max())

  def on_resume(self, exp, state, rnd):
    """Rebuilds the participation counts of rounds 1..`rnd`: cohorts are a pure function
    of (key, round), the key being the state's secret one when the run draws its cohorts
    in secret. With `state=None` (a forecast before any run) a fresh secret key draws
    cohorts distributed like the run's, but not the run's own."""
    self.participations = None
    algo, n = exp.algorithm, self.mechanism.num_clients
    base = keylib.base_key(exp.cfg.seed)
    noise_seed = None
    if algo.secret_cohorts:
      noise_seed = (jax.random.key_data(keylib.secret_key()) if state is None
                    else state.noise_seed)
    sample = jax.jit(lambda b, r, s: algo.sample_cohort(b, r, n, s))
    for r in range(1, rnd + 1):
      cohort = sample(base, r, noise_seed)
      self._count(cohort.client_ids, algo.sampled_count(cohort))

  def on_round(self, exp, state, metrics, rnd, evaluated):
    del exp, state
    self._count(metrics["client_ids"], metrics["clients_sampled"])
    bits = ledger.round_bits(self.mechanism, self.downlink_bits_per_param,
                             metrics.get("sent"), metrics.get("secagg_uplink_bytes"),
                             metrics.get("secagg_downlink_bytes"),
                             sampled=metrics["clients_sampled"])
    self.totals = self.totals.add(bits)
    if "secagg_seconds" in metrics:
      self.secagg_seconds.append(float(metrics["secagg_seconds"]))
    out = {}
    if evaluated and "clip_bound" in metrics:  # adaptive clipping: the bound of the round
      out["clip_bound"] = float(metrics["clip_bound"])
      out["clip_fraction_below"] = float(metrics["clip_fraction_below"])
    if "uplink_beyond_range" in metrics:  # rotated quantizer: saturated / ring-carried
      sent = (int(np.sum(metrics["sent"])) if metrics.get("sent") is not None else
              int(metrics["clients_sampled"]) - int(metrics["clients_dropped_out"]))
      beyond, values = int(metrics["uplink_beyond_range"]), sent * self.mechanism.dim
      self.beyond_range = [self.beyond_range[0] + beyond, self.beyond_range[1] + values]
      out["quantizer_beyond_range_fraction"] = beyond / max(values, 1)
    if evaluated:
      out["epsilon"] = accounting.epsilon(self.mechanism, rnd)
      out["epsilon_server_max"] = accounting.server_epsilon(self.mechanism,
                                                            self.max_participations)
      # The ledger so far: exact bits sent by all clients, up and down.
      out["uplink_bits_total"] = self.totals.uplink
      out["downlink_bits_total"] = self.totals.downlink
      if self.secagg_seconds:
        out["secagg_seconds"] = self.secagg_seconds[-1]
    return out

  def bookkeeping(self, exp):
    """The ledger's running totals, kept in the checkpoint: a resumed run's totals
    (and summary) count every round, not only those since the resume."""
    del exp
    return {"privacy_ledger": list(self.totals), "secagg_seconds": list(self.secagg_seconds),
            "beyond_range": list(self.beyond_range)}

  def restore_bookkeeping(self, exp, saved):
    del exp
    self.totals = ledger.Totals(*saved["privacy_ledger"])
    self.secagg_seconds = list(saved["secagg_seconds"])
    self.beyond_range = list(saved.get("beyond_range", [0, 0]))

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
    claims = accounting.claims(mech, rounds, self.max_participations)
    head = claims[0]
    out = {"epsilon": head["epsilon"], "delta": head["delta"],
           "epsilon_label": (f"{head['name']}: against {head['threat_model']}; "
                             f"{head['relation']}; {head['sampling']}; "
                             f"{head['accountant']}; valid: {head['valid']}"),
           "epsilon_simulation_only": bool(mech.config.reproducible_noise),
           "epsilons": claims,
           "privacy_max_participations": self.max_participations,
           **self.totals.per_param(mech.size), **mech.describe()}
    if mech.adaptive:  # the bound the next round would use (the state's)
      out["clip_bound_final"] = float(np.asarray(state.uplink)) * mech.config.clip
    if mech.rotating:
      # Values the rotated quantizer saturated (without secagg) or carried modulo the
      # ring (with it), over every value sent in the run.
      out["quantizer_beyond_range_fraction"] = (self.beyond_range[0] /
                                                max(self.beyond_range[1], 1))
    if self.secagg_seconds:
      out["secagg_seconds_per_round"] = float(np.median(self.secagg_seconds))
    return out


def build(cfg: Config, task, num_clients: int, downlink_bits_per_param: float = 32.0):
  """The private uplink and its report hook for `cfg.privacy` (raises ConfigError)."""
  shapes = jax.eval_shape(task.init, keylib.init_key(keylib.base_key(cfg.seed)))
  params = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
  size, unravel = flat_size_and_unravel(params)
  mech = make_mechanism(cfg.privacy, num_clients=num_clients,
                        cohort=cfg.clients_per_round, rounds=cfg.rounds, size=size,
                        sampling=cfg.client_sampling,
                        capacity=cohort_capacity(cfg, num_clients))
  uplink = PrivateUplink(mech, unravel, cfg.seed)
  return uplink, PrivacyReport(mech, downlink_bits_per_param)
