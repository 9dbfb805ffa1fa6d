"""The configuration of an attack experiment: a frozen, keyword-only dataclass that
checks itself, like `fedpriv.config.Config` (which it nests as `train`, the attacked
deployment).

    kind = "inversion":  gradient inversion of one client's update, per defense,
                         batch size and number of local steps;
    kind = "membership": membership inference against the final global model of
                         `train`, per defense.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from fedpriv.config import Config, ConfigError, _check_types, _from_dict, check
from fedpriv.attacks.defenses import parse_defenses

KINDS = ("inversion", "membership")
LABELS = ("recover", "true")


def parse_ints(option: str, text: str, low: int = 1, high: int | None = None) -> list[int]:
  """A comma-separated list of integers in [low, high]."""
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise ConfigError(option, f"must be comma-separated integers, got {text!r}") from None
  check(option, bool(values), "needs at least one value")
  for v in values:
    check(option, v >= low and (high is None or v <= high),
          f"values must be in [{low}, {high if high is not None else 'inf'}], got {v}")
  return values


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttackConfig:
  """One attack experiment.

  Common: `kind` ("inversion" or "membership"), `train` (the deployment: model,
  data, client learning rate, and the population, cohort and rounds the accountant
  composes), `defenses` (comma-separated specs, see `fedpriv.attacks.defenses`),
  `clip` and `delta` (the privacy mechanism's clip bound and DP delta), `seed` (the
  attacker's randomness: victims, starting images).

  Inversion: `batch_sizes` and `local_steps` (comma-separated grids; local steps are
  full-batch SGD steps, 1 = a single gradient step), `trials` (victim batches per
  setting), `pool` (training examples the victims are drawn from), `labels`
  ("recover": from the update's last layer `head`; "true": given), `attack_steps`,
  `attack_learning_rate`, `tv_weight`, `restarts`, `log_every`.

  Membership: members are the training examples of `train` (which needs
  `train_limit` > 0), non-members the next `nonmembers` examples of the same split;
  `shadow_models` (0 = loss threshold only) shadow deployments trained on further
  disjoint slices teach a logistic-regression attack; `fpr` is the low false-positive
  rate reported; `alpha` the family-wise error level of the DP-bound check.
  """
  kind: str = "inversion"
  train: Config = dataclasses.field(default_factory=Config)
  defenses: str = "none"
  clip: float = 1.0
  delta: float = 1e-5
  seed: int = 0
  batch_sizes: str = "1"
  local_steps: str = "1"
  trials: int = 1
  pool: int = 1000
  labels: str = "recover"
  head: str = "fc2"
  attack_steps: int = 300
  attack_learning_rate: float = 0.1
  tv_weight: float = 1e-2
  restarts: int = 1
  log_every: int = 50
  nonmembers: int = 5000
  shadow_models: int = 0
  fpr: float = 0.001
  alpha: float = 0.05

  def __post_init__(self):
    _check_types(self)
    check("kind", self.kind in KINDS, f"must be one of {KINDS}, got {self.kind!r}")
    check("train.dataset", self.train.dataset != "shakespeare",
          "attacks here need an image classification dataset (fashion_mnist or tfds:...)")
    check("clip", self.clip > 0, f"must be > 0, got {self.clip}")
    check("delta", 0 < self.delta < 1, f"must be in (0, 1), got {self.delta}")
    check("seed", self.seed >= 0, f"must be >= 0, got {self.seed}")
    defenses = parse_defenses(self.defenses)
    parse_ints("batch_sizes", self.batch_sizes, 1, 64)
    parse_ints("local_steps", self.local_steps, 1, 100)
    for name in ("trials", "pool", "attack_steps", "restarts", "log_every", "nonmembers"):
      check(name, getattr(self, name) >= 1, f"must be >= 1, got {getattr(self, name)}")
    check("labels", self.labels in LABELS, f"must be one of {LABELS}, got {self.labels!r}")
    check("attack_learning_rate", self.attack_learning_rate > 0,
          f"must be > 0, got {self.attack_learning_rate}")
    check("tv_weight", self.tv_weight >= 0, f"must be >= 0, got {self.tv_weight}")
    check("shadow_models", self.shadow_models >= 0, f"must be >= 0, got {self.shadow_models}")
    check("fpr", 0 < self.fpr < 1, f"must be in (0, 1), got {self.fpr}")
    check("alpha", 0 < self.alpha < 1, f"must be in (0, 1), got {self.alpha}")
    if self.kind == "inversion":
      most = max(parse_ints("batch_sizes", self.batch_sizes)) * max(d.clients
                                                                     for d in defenses)
      check("pool", self.pool >= most, f"must hold at least {most} examples (largest "
            f"batch x clients in a sum), got {self.pool}")
    else:
      check("train.dataset", self.train.dataset == "fashion_mnist",
            "membership inference draws non-members from the rest of Fashion-MNIST's "
            f"training split; got {self.train.dataset!r}")
      check("train.train_limit", self.train.train_limit > 0,
            "membership inference needs train_limit > 0: members are the first "
            "train_limit training examples, non-members come after them")
      need = self.train.train_limit * (1 + 2 * self.shadow_models) + self.nonmembers
      check("nonmembers", need <= 60000, f"train_limit x (1 + 2 x shadow_models) + "
            f"nonmembers = {need} examples, more than the 60,000 of the split")
      for d in defenses:
        if d.privacy.get("secagg"):
          check("defenses", d.clients == self.train.clients_per_round,
                f"{d.name!r}: for membership, secagg=N must equal "
                f"train.clients_per_round={self.train.clients_per_round}")

  @classmethod
  def from_dict(cls, values: dict[str, Any]) -> "AttackConfig":
    return _from_dict(cls, values, "")

  @property
  def defense_list(self):
    return parse_defenses(self.defenses)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)
