"""The update-privacy mechanism of a run, derived once from the config.

`Mechanism` holds every number the privatizers, secure aggregation, the accountant and
the communication ledger use (coordinates kept, quantizer step, the per-client L2
bound, noise standard deviations, ring size), so none of them is ever typed twice:
`privatizer()` builds the one privatizer chain the uplink runs from these numbers, and the
accountant reads the same object (`fedpriv.privacy.accounting`).
"""
from __future__ import annotations

import dataclasses
import math

from fedpriv.config import ConfigError, PrivacyConfig, secagg_threshold_count
from fedpriv.privacy import accounting, secagg
from fedpriv.privacy import privatizers as pv
from fedpriv.privacy.privatizers import (codes_center, kept_count, next_power_of_two,
                                         quantizer_step, rounding_norm_bound)
from fedpriv.privacy.secagg import required_ring_bits


@dataclasses.dataclass(frozen=True)
class Mechanism:
  """A run's privacy mechanism.

  Attributes:
    config: the privacy options it was made from.
    num_clients: N, the population sampled from.
    cohort: m, clients sampled per round (uniformly, without replacement).
    rounds: rounds of training (the accountant composes this many).
    size: d, parameters of the model.
    noise_multiplier: z: the noise standard deviation on the sum is z times the
      per-client L2 bound (calibrated from `target_epsilon` when that is set).
    sampling: "fixed" (`cohort` of N without replacement, replace-one) or "poisson"
      (each client with probability cohort / N, add/remove; `cohort` is the expected
      count and the mean's fixed denominator).
    capacity: the most clients a round holds (Poisson draws beyond it are truncated);
      `cohort` for fixed-size sampling.
  """
  config: PrivacyConfig
  num_clients: int
  cohort: int
  rounds: int
  size: int
  noise_multiplier: float
  sampling: str = "fixed"
  capacity: int = 0

  def __post_init__(self):
    if not self.capacity:
      object.__setattr__(self, "capacity", self.cohort)

  @property
  def poisson(self) -> bool:
    return self.sampling == "poisson"

  # -- sizes --------------------------------------------------------------------
  @property
  def keep(self) -> int:
    """k, coordinates each client sends (all of them without masking)."""
    return kept_count(self.size, self.config.mask_ratio)

  @property
  def rotating(self) -> bool:
    return self.config.rotation == "hadamard"

  @property
  def dim(self) -> int:
    """Values each client sends: k, or k padded to a power of two D when rotating."""
    return next_power_of_two(self.keep) if self.rotating else self.keep

  @property
  def quantizer_range(self) -> float:
    """R: the quantizer's levels span [-R, R]. The clip bound C without rotation; with
    it t C / sqrt(D) (t = `rotation_sigmas`), at most C. Never from the data."""
    c = self.config.clip
    if not self.rotating:
      return c
    return min(c, self.config.rotation_sigmas * c / math.sqrt(self.dim))

  @property
  def saturates(self) -> bool:
    """Whether out-of-range values are clamped (False: carried modulo the secure-
    aggregation ring, which only happens with a rotation behind secure aggregation)."""
    return not (self.rotating and self.config.secagg)

  @property
  def mask_scale(self) -> float:
    return self.size / self.keep

  @property
  def quantized(self) -> bool:
    return self.config.bits > 0

  @property
  def noisy(self) -> bool:
    return self.config.noise != "none"

  @property
  def step(self) -> float:
    """Distance between quantizer levels (float units)."""
    return quantizer_step(self.config.bits, self.quantizer_range)

  # -- sensitivity ----------------------------------------------------------------
  @property
  def level_bound(self) -> float | None:
    """Delta in levels: the bound conditional rounding enforces (None: not used)."""
    if not (self.quantized and self.noisy):
      return None
    return rounding_norm_bound(self.config.clip, self.config.bits, self.dim,
                               bound=self.quantizer_range)

  @property
  def l2_bound(self) -> float:
    """Each client's contribution to the sum has L2 norm at most this (float units)."""
    if self.level_bound is None:
      return self.config.clip
    return self.level_bound * self.step

  # -- noise --------------------------------------------------------------------
  @property
  def survivors(self) -> int:
    """Clients whose vectors reach the sum in every round; with Poisson sampling and
    distributed noise the fewest whose shares the analysis counts on (`min_cohort`)."""
    if self.poisson:
      return self.min_cohort if self.config.noise == "distributed" else self.cohort
    if not self.config.secagg:
      return self.cohort
    return self.cohort - int(self.config.dropout * self.cohort)

  @property
  def min_cohort(self) -> int:
    """Poisson only: m_min, the largest count such that fewer than m_min of any one
    client's N - 1 others are drawn in a round with probability at most
    OVERFLOW_TARGET / rounds (`accounting.underflow_probability`, added to delta).
    Distributed noise sizes each share for m_min shares, so a round with at least
    that many others carries at least the planned noise; more is post-processing.

    Raises:
      ConfigError: m_min is 0 (a round too often draws none of a client's others), so
        no share size covers the sum.
    """
    m = accounting.poisson_floor(self.num_clients, self.cohort / self.num_clients,
                                 self.rounds)
    if m < 1:
      raise ConfigError("clients_per_round", f"Poisson sampling with q = "
                        f"{self.cohort / self.num_clients:.3g} over {self.rounds} rounds "
                        "draws none of a client's others too often for distributed noise "
                        "(its shares need a floor of at least one): sample more clients "
                        "per round, or use central noise")
    return m

  @property
  def adaptive(self) -> bool:
    return self.config.adaptive_clip

  @property
  def count_stddev(self) -> float:
    """sigma_b, the std of the noise on adaptive clipping's count (0 when off)."""
    if not self.adaptive:
      return 0.0
    return self.config.adaptive_clip_count_stddev or self.cohort / 20.0

  @property
  def sum_noise_multiplier(self) -> float:
    """The noise multiplier on the sum of updates. `noise_multiplier` z is that of the
    whole round's release; with adaptive clipping the count's release takes its share
    and the sum's is raised to (z^-2 - (2 sigma_b)^-2)^-1/2 (Andrew et al. 2021,
    Theorem 1: the pair is then a Gaussian mechanism with multiplier z)."""
    z = self.noise_multiplier
    if not (self.adaptive and self.noisy) or z <= 0:
      return z
    rest = z ** -2 - (2.0 * self.count_stddev) ** -2
    return math.inf if rest <= 0 else rest ** -0.5

  @property
  def central_sigma(self) -> float:
    """Std of the server's Gaussian noise on the sum (float units at the round-1 clip
    bound; adaptive clipping scales the sum and its noise by C_t / C_1); 0 unless
    central."""
    if self.config.noise != "central":
      return 0.0
    return self.sum_noise_multiplier * self.l2_bound

  @property
  def sum_sigma_levels(self) -> float:
    """Std of the distributed noise on the sum, in quantizer levels (0 unless distributed)."""
    if self.config.noise != "distributed":
      return 0.0
    return self.noise_multiplier * self.level_bound

  @property
  def client_sigma(self) -> float:
    """Each client's discrete Gaussian share (levels): the survivors' shares add to
    `sum_sigma_levels`^2 in variance."""
    return self.sum_sigma_levels / math.sqrt(self.survivors)

  def with_colluders(self, colluders: int) -> "Mechanism":
    """The mechanism as `colluders` clients of the sum who share their noise with the
    server see it: with distributed noise they subtract their own shares, leaving
    (n - c) / n of the sum's variance, i.e. a noise multiplier z sqrt((n - c) / n) (the
    shares themselves stay as drawn). Central noise is the server's own: colluding
    clients remove none of it. Hand the result to the accountant."""
    if self.config.noise != "distributed" or colluders <= 0:
      return self
    n = self.survivors
    if colluders >= n:
      raise ValueError(f"{colluders} colluders leave no honest share among {n}")
    return dataclasses.replace(
        self, noise_multiplier=self.noise_multiplier * math.sqrt((n - colluders) / n))

  # -- secure aggregation -----------------------------------------------------------
  @property
  def group(self) -> int:
    n = self.config.secagg_neighbors
    return (n if n and n < self.capacity - 1 else self.capacity - 1) + 1

  @property
  def threshold(self) -> int:
    return secagg_threshold_count(self.config.secagg_threshold, self.group)

  @property
  def dropouts(self) -> int:
    """Sampled clients that drop out of each round (none with Poisson sampling)."""
    return 0 if self.poisson else self.cohort - self.survivors

  @property
  def required_ring_bits(self) -> int:
    # The noise the ring must hold: with Poisson, up to `capacity` shares of
    # `client_sigma` (sized for m_min), more than the planned sum's.
    sigma = (self.client_sigma * math.sqrt(self.capacity)
             if self.poisson and self.config.noise == "distributed" else self.sum_sigma_levels)
    return required_ring_bits(self.capacity, codes_center(self.config.bits), sigma)

  @property
  def ring_bits(self) -> int:
    return self.config.ring_bits or self.required_ring_bits

  @property
  def sum_ring_bits(self) -> int:
    """The ring the sum of integer vectors lives in: secure aggregation's, else int32's."""
    return self.ring_bits if self.config.secagg else 32

  # -- the chain ------------------------------------------------------------------
  def privatizer(self) -> pv.Stage:
    """The chain of stages a client runs on its flat update (and the server inverts on
    the sum), in the order whose privacy argument `privatizers`' docstring gives:
    mask, clip, rotation, central noise, quantize, distributed noise, secure
    aggregation. Each
    stage is present only when the config turns it on; every hyper-parameter comes from
    this object."""
    cfg = self.config
    stages = []
    if self.keep < self.size:
      stages.append(pv.random_mask(cfg.mask_ratio, self.size))
    stages.append(pv.clip_l2(cfg.clip))
    if self.rotating:
      stages.append(pv.hadamard_rotation(self.keep))
    if cfg.noise == "central":
      stages.append(pv.central_gaussian_noise(self.central_sigma))
    if self.quantized:
      stages.append(pv.stochastic_quantize(cfg.bits, self.quantizer_range, self.level_bound,
                                           self.sum_ring_bits, saturate=self.saturates,
                                           count_beyond=self.rotating))
    if cfg.noise == "distributed":
      stages.append(pv.discrete_gaussian_noise(self.client_sigma))
    if cfg.secagg:
      stages.append(secagg.secure_aggregation(self.ring_bits))
    return pv.chain(*stages)

  @property
  def uplink_value_bits(self) -> int:
    """Bits per sent coordinate: ring elements, b-bit codes, or float32."""
    if self.config.secagg:
      return self.ring_bits
    return self.config.bits if self.quantized else 32

  def validate(self) -> None:
    """Refuses what cannot work for this model and cohort (ConfigError)."""
    cfg = self.config
    if cfg.secagg:
      need = self.required_ring_bits
      if need > 32:
        raise ConfigError("privacy.ring_bits", f"the sum of {self.cohort} clients' "
                          f"{cfg.bits}-bit codes plus noise needs a {need}-bit ring, more "
                          "than 32: use fewer bits or fewer clients per round")
      if cfg.ring_bits and cfg.ring_bits < need:
        raise ConfigError("privacy.ring_bits", f"{cfg.ring_bits} bits can wrap: the sum of "
                          f"{self.cohort} clients' {cfg.bits}-bit codes plus 10 noise "
                          f"standard deviations needs {need} (or 0 to size it)")
    elif self.quantized and self.capacity * (2 ** cfg.bits - 1) >= 2 ** 31:
      raise ConfigError("privacy.bits", f"{self.capacity} clients' {cfg.bits}-bit codes "
                        "overflow an int32 sum")
    if self.noisy and not self.noise_multiplier > 0:
      raise ConfigError("privacy.noise_multiplier", "must be > 0 when noise is on")
    if self.noisy and not math.isfinite(self.sum_noise_multiplier):
      raise ConfigError("privacy.adaptive_clip_count_stddev", f"the count's noise "
                        f"(sigma_b = {self.count_stddev:g}) leaves no budget for the sum at "
                        f"noise multiplier {self.noise_multiplier:.4g}: 2 sigma_b must "
                        "exceed it (raise adaptive_clip_count_stddev)")
    if cfg.noise == "distributed" and self.client_sigma < 0.5:
      raise ConfigError("privacy.noise_multiplier", f"each client's discrete Gaussian "
                        f"share would have sigma {self.client_sigma:.3f} < 1/2 levels, "
                        "below what the distributed-noise bound covers: use more bits")

  def describe(self) -> dict:
    """The derived numbers, for summary.json."""
    out = {"privacy_keep": self.keep, "privacy_l2_bound": self.l2_bound,
           "privacy_noise_multiplier": self.noise_multiplier,
           "privacy_uplink_value_bits": self.uplink_value_bits}
    if self.adaptive:
      out.update(privacy_sum_noise_multiplier=self.sum_noise_multiplier,
                 privacy_count_stddev=self.count_stddev)
    if self.rotating:
      out.update(privacy_rotated_dim=self.dim, privacy_quantizer_range=self.quantizer_range)
    if self.poisson:
      out["privacy_capacity"] = self.capacity
      if self.config.noise == "distributed":
        out["privacy_min_cohort"] = self.min_cohort
    if self.config.noise == "distributed":
      out["privacy_client_sigma_levels"] = self.client_sigma
    if self.config.secagg:
      out.update(privacy_ring_bits=self.ring_bits, privacy_secagg_threshold=self.threshold,
                 privacy_secagg_group=self.group, privacy_survivors=self.survivors)
    return out


def make_mechanism(cfg: PrivacyConfig, *, num_clients: int, cohort: int, rounds: int,
                   size: int, sampling: str = "fixed", capacity: int = 0) -> Mechanism:
  """Builds the mechanism; with `target_epsilon` calibrates z with the accountant first.

  Raises:
    ConfigError: the budget cannot be met or the ring cannot hold the sum.
  """
  mech = Mechanism(cfg, num_clients, cohort, rounds, size, cfg.noise_multiplier,
                   sampling, capacity)
  if cfg.target_epsilon > 0:
    z = accounting.calibrate_noise_multiplier(mech)
    mech = dataclasses.replace(mech, noise_multiplier=z)
  mech.validate()
  return mech
