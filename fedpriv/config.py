"""Experiment configuration: a frozen, keyword-only dataclass that checks itself.

The library never reads flags. Launch scripts turn their ml_collections config into a
`Config` with `Config.from_dict`, which refuses unknown keys, wrong types and values out
of range with a `ConfigError` naming the option and what it allows, before any work
starts. Nested groups (e.g. `fedqsn`, `privacy`) are dataclasses of their own.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

DATASETS = ("fashion_mnist", "shakespeare", "sentiment")  # plus "tfds:<name>"
MODELS = ("cnn", "tempered_cnn", "lstm", "transformer", "minilm")
IMAGE_MODELS = ("cnn", "tempered_cnn")
PARTITIONS = ("iid", "dirichlet", "natural")
CLIENT_OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
LR_SCHEDULES = ("constant", "linear")
SENTIMENT_LABELS = ("sign", "5bin")
CONV_IMPLS = ("auto", "im2col", "xla")
SERVER_OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad", "yogi")
ALGORITHMS = ("fedavg", "fedprox", "scaffold")
FEDQSN_MODELS = ("cnn", "transformer", "minilm")
FEDQSN_CLIENT_MASKS = ("bernoulli", "exact", "count_of_all")
FEDQSN_AGGREGATIONS = ("average", "delta")
FEDQSN_BITS = (2, 3, 4, 5, 6, 7, 8, 32)
CLIENT_SAMPLINGS = ("fixed", "poisson")
OVERFLOW_TARGET = 1e-12  # automatic Poisson capacity: P(any round overflows) below this


class ConfigError(ValueError):
  """A configuration value is out of range; `str()` is the one line to show a user."""

  def __init__(self, option: str, message: str):
    super().__init__(f"config.{option}: {message}")
    self.option = option


def check(option: str, ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(option, message)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FedQSNConfig:
  """FedQSN model privacy (see fedpriv/fedqsn): clients receive masked, quantized proxies.

  Mechanism: `p1` (server mask ratio over hidden units, drawn once per run), `p2`
  (client mask ratio on top, drawn per client per round), `client_mask` ("bernoulli":
  each surviving unit dropped independently with probability p2; "exact":
  floor(p2 * surviving units) dropped; "count_of_all", the official code's default:
  floor(p2 * all units) of the survivors dropped, p1 + p2 < 1), `bits` (NF-b quantization of the large
  weights, 2..8; 32 = none), `block_size` (values per absmax block), `aggregation`
  ("delta": the server keeps full precision and applies the mean of
  trained-minus-received on the coordinates each client saw; "average": the paper's
  mean of trained client weights), `upload_bits` (NF quantization of what clients send
  back; 32 = none), `quantize_embeddings` (also NF-b quantize the token and position
  embedding tables, which the paper sends at full precision: on MiniLM with the pruned
  vocabulary they are a third of the parameters but most of a proxy's bits; a p1 0.5,
  p2 0.2, NF4 proxy costs 13.1 bits per parameter without it, 3.9 with it).

  Server pretraining: `server_fraction` of the training data (Fashion-MNIST: examples;
  Shakespeare: plays) is held by the server and never given to a client; the server
  trains on it for `pretrain_epochs` (batch `pretrain_batch_size`, the client optimizer
  kind at `pretrain_learning_rate`) before round 1. `pretrain_cache_dir` ("" = none)
  stores pretrained models keyed by everything that determines them.

  Measurement: `eval_examples` test examples (0 = all) for the per-round proxy metrics.
  """
  enabled: bool = False
  p1: float = 0.0
  p2: float = 0.0
  client_mask: str = "exact"
  bits: int = 32
  block_size: int = 64
  aggregation: str = "delta"
  upload_bits: int = 32
  quantize_embeddings: bool = False
  server_fraction: float = 0.0
  pretrain_epochs: int = 0
  pretrain_batch_size: int = 32
  pretrain_learning_rate: float = 0.05
  pretrain_cache_dir: str = ""
  eval_examples: int = 0

  def __post_init__(self):
    _check_types(self, prefix="fedqsn.")
    for name in ("p1", "p2", "server_fraction"):
      value = getattr(self, name)
      check(f"fedqsn.{name}", 0.0 <= value < 1.0, f"must be in [0, 1), got {value}")
    for name in ("bits", "upload_bits"):
      value = getattr(self, name)
      check(f"fedqsn.{name}", value in FEDQSN_BITS,
            f"must be in 2..8 (NF-b quantization) or 32 (none), got {value}")
    check("fedqsn.block_size", self.block_size >= 1, f"must be >= 1, got {self.block_size}")
    check("fedqsn.quantize_embeddings", not self.quantize_embeddings or self.bits != 32,
          "needs fedqsn.bits in 2..8 (the embeddings are quantized at those bits)")
    check("fedqsn.client_mask", self.client_mask in FEDQSN_CLIENT_MASKS,
          f"must be one of {FEDQSN_CLIENT_MASKS}, got {self.client_mask!r}")
    if self.client_mask == "count_of_all":
      check("fedqsn.p2", self.p1 + self.p2 < 1.0, "must be < 1 - p1 with client_mask "
            f"count_of_all (p1 + p2 of all units are hidden), got p1 {self.p1}, p2 {self.p2}")
    check("fedqsn.aggregation", self.aggregation in FEDQSN_AGGREGATIONS,
          f"must be one of {FEDQSN_AGGREGATIONS}, got {self.aggregation!r}")
    check("fedqsn.pretrain_epochs", self.pretrain_epochs >= 0,
          f"must be >= 0, got {self.pretrain_epochs}")
    if self.pretrain_epochs:
      check("fedqsn.server_fraction", self.server_fraction > 0,
            "must be > 0 when pretrain_epochs > 0 (the server pretrains on it)")
    check("fedqsn.pretrain_batch_size", self.pretrain_batch_size >= 1,
          f"must be >= 1, got {self.pretrain_batch_size}")
    check("fedqsn.pretrain_learning_rate", self.pretrain_learning_rate > 0,
          f"must be > 0, got {self.pretrain_learning_rate}")
    check("fedqsn.eval_examples", self.eval_examples >= 0,
          f"must be >= 0, got {self.eval_examples}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
  """One federated experiment.

  Data: `dataset` ("fashion_mnist", "shakespeare", "sentiment" or "tfds:<name>"),
  `partition` ("iid", "dirichlet", "natural"), `dirichlet_alpha`, `num_clients` (0 = every
  natural client), `max_examples_per_client` (0 = no cap), `data_dir` (tfds/IDX/sentiment
  folder), `train_limit`/`test_limit` (0 = all; small slices for tests), and for
  Shakespeare `seq_len`, `min_chars`, `test_fraction`. Sentiment (movie-review sentences,
  model "minilm"): `seq_len` tokens per sentence, `test_fraction` and
  `validation_fraction` of the sentences held out, `sentiment_labels` ("sign": positive
  vs negative; "5bin": five rating bins).

  Federation: `clients_per_round`, `client_sampling` ("fixed": exactly
  `clients_per_round` clients uniformly without replacement; "poisson": each client
  independently with probability clients_per_round / num_clients, padded to
  `client_capacity` slots with a validity mask, 0 = sized so that a draw exceeds it with
  probability below 1e-12 over the run; a larger draw keeps a random `client_capacity`
  of its clients, and the accountant adds that probability to delta), `rounds`,
  `dropout` (the fraction of each round's
  sampled clients whose update never arrives; with secure aggregation use
  `privacy.dropout`, which drops clients after they have masked), `local_epochs`, `batch_size`,
  `learning_rate` and `client_optimizer` (+ `client_momentum`, `weight_decay`),
  `lr_schedule` ("constant"; "linear": a linear warm-up over `warmup_fraction` of each
  client's local steps, then linear decay to 0 at its last step; each client starts a
  fresh optimizer every round, so the schedule restarts with it),
  `server_optimizer` and `server_learning_rate` (sgd with 1.0 is FedAvg; "adam",
  "adagrad", "yogi" are Reddi et al. 2021's FedAdam, FedAdagrad, FedYogi).

  Algorithm: `algorithm` ("fedavg"; "fedprox": local steps add the proximal term
  `prox_mu`/2 ||w - w_received||^2; "scaffold": SCAFFOLD's control variates, option II,
  one per client kept for the whole population, at most `max_client_state_mb` of them).

  Execution: `seed`, `eval_every`, `eval_batch_size`, `checkpoint_every` (rounds
  between checkpoints; 0 = only at the end), `chunk_size` (clients vmapped at
  once), `unroll` (local-step scan unroll), `conv_impl` ("auto", "im2col", "xla": the
  CNN's convolution formulation; auto = "xla" when clients are not vmapped, i.e.
  chunk_size 1, else "im2col"), `num_devices` (0: no sharding; n: shard the cohort over
  n devices).

  Privacy tiers: `fedqsn` (a `FedQSNConfig` group: masked, quantized proxies sent
  down) and `privacy` (a `PrivacyConfig` group: what each client does to its update
  before it goes up).
  """
  dataset: str = "fashion_mnist"
  model: str = "cnn"
  partition: str = "iid"
  dirichlet_alpha: float = 0.5
  num_clients: int = 100
  clients_per_round: int = 10
  client_sampling: str = "fixed"
  client_capacity: int = 0
  rounds: int = 20
  dropout: float = 0.0
  local_epochs: int = 1
  batch_size: int = 20
  learning_rate: float = 0.05
  client_optimizer: str = "sgd"
  client_momentum: float = 0.9
  weight_decay: float = 0.0
  lr_schedule: str = "constant"
  warmup_fraction: float = 0.0
  server_optimizer: str = "sgd"
  server_learning_rate: float = 1.0
  algorithm: str = "fedavg"
  prox_mu: float = 0.0
  max_client_state_mb: float = 1024.0
  seed: int = 0
  eval_every: int = 1
  eval_batch_size: int = 1000
  checkpoint_every: int = 5
  chunk_size: int = 1
  unroll: int = 5
  conv_impl: str = "auto"
  num_devices: int = 0
  max_examples_per_client: int = 0
  data_dir: str = ""
  train_limit: int = 0
  test_limit: int = 0
  seq_len: int = 80
  min_chars: int = 2000
  test_fraction: float = 0.2
  validation_fraction: float = 0.1
  sentiment_labels: str = "sign"
  fedqsn: FedQSNConfig = dataclasses.field(default_factory=FedQSNConfig)
  privacy: "PrivacyConfig" = dataclasses.field(default_factory=lambda: PrivacyConfig())

  def __post_init__(self):
    _check_types(self)
    ds = self.dataset
    check("dataset", ds in DATASETS or (ds.startswith("tfds:") and len(ds) > 5),
          f"must be one of {DATASETS} or 'tfds:<name>', got {ds!r}")
    check("model", self.model in MODELS, f"must be one of {MODELS}, got {self.model!r}")
    text = ds == "shakespeare"
    if ds == "sentiment":
      check("model", self.model == "minilm",
            f"sentiment needs 'minilm', got {self.model!r}")
      check("partition", self.partition in ("iid", "dirichlet"),
            f"sentiment takes 'iid' or 'dirichlet', got {self.partition!r}")
      check("seq_len", self.seq_len <= 512, f"must be <= 512 tokens, got {self.seq_len}")
    elif text:
      check("model", self.model in ("lstm", "transformer"),
            f"shakespeare needs 'lstm' or 'transformer', got {self.model!r}")
      check("partition", self.partition == "natural",
            f"shakespeare is naturally federated (one client per role): use 'natural', "
            f"got {self.partition!r}")
    else:
      check("model", self.model in IMAGE_MODELS,
            f"image datasets need 'cnn' or 'tempered_cnn', got {self.model!r}")
      check("partition", self.partition in ("iid", "dirichlet"),
            f"image datasets take 'iid' or 'dirichlet', got {self.partition!r}")
    check("dirichlet_alpha", self.dirichlet_alpha > 0,
          f"must be > 0, got {self.dirichlet_alpha}")
    check("num_clients", self.num_clients >= (0 if text else 1),
          f"must be >= {0 if text else 1}, got {self.num_clients}")
    check("clients_per_round", self.clients_per_round >= 1,
          f"must be >= 1, got {self.clients_per_round}")
    if self.num_clients:
      check("clients_per_round", self.clients_per_round <= self.num_clients,
            f"must be in [1, num_clients={self.num_clients}], got {self.clients_per_round}")
    check("client_sampling", self.client_sampling in CLIENT_SAMPLINGS,
          f"must be one of {CLIENT_SAMPLINGS}, got {self.client_sampling!r}")
    check("client_capacity", self.client_capacity >= 0,
          f"must be >= 0 (0 = sized automatically), got {self.client_capacity}")
    if self.client_sampling == "poisson":
      if self.client_capacity:
        check("client_capacity", self.client_capacity >= self.clients_per_round,
              f"must be >= clients_per_round={self.clients_per_round} (the expected "
              f"draw), got {self.client_capacity}")
      check("dropout", self.dropout == 0, "is not supported with poisson sampling")
      check("privacy.dropout", self.privacy.dropout == 0,
            "is not supported with poisson sampling")
      check("client_sampling", not self.fedqsn.enabled,
            "'poisson' is not supported with fedqsn (its hooks replay fixed-size cohorts)")
    else:
      check("client_capacity", self.client_capacity == 0,
            "is for client_sampling='poisson' (fixed-size cohorts hold clients_per_round)")
    for name in ("rounds", "local_epochs", "batch_size", "eval_every", "eval_batch_size",
                 "chunk_size", "unroll"):
      check(name, getattr(self, name) >= 1, f"must be >= 1, got {getattr(self, name)}")
    check("conv_impl", self.conv_impl in CONV_IMPLS,
          f"must be one of {CONV_IMPLS}, got {self.conv_impl!r}")
    check("learning_rate", self.learning_rate > 0, f"must be > 0, got {self.learning_rate}")
    check("client_optimizer", self.client_optimizer in CLIENT_OPTIMIZERS,
          f"must be one of {CLIENT_OPTIMIZERS}, got {self.client_optimizer!r}")
    check("client_momentum", 0 <= self.client_momentum < 1,
          f"must be in [0, 1), got {self.client_momentum}")
    check("weight_decay", self.weight_decay >= 0, f"must be >= 0, got {self.weight_decay}")
    check("server_optimizer", self.server_optimizer in SERVER_OPTIMIZERS,
          f"must be one of {SERVER_OPTIMIZERS}, got {self.server_optimizer!r}")
    check("server_learning_rate", self.server_learning_rate > 0,
          f"must be > 0, got {self.server_learning_rate}")
    self._check_algorithm()
    check("seed", self.seed >= 0, f"must be >= 0, got {self.seed}")
    for name in ("num_devices", "max_examples_per_client", "train_limit", "test_limit",
                 "checkpoint_every"):
      check(name, getattr(self, name) >= 0, f"must be >= 0, got {getattr(self, name)}")
    check("seq_len", self.seq_len >= 2, f"must be >= 2, got {self.seq_len}")
    check("min_chars", self.min_chars >= 1, f"must be >= 1, got {self.min_chars}")
    check("test_fraction", 0 < self.test_fraction < 1,
          f"must be in (0, 1), got {self.test_fraction}")
    check("dropout", 0 <= self.dropout < 1, f"must be in [0, 1), got {self.dropout}")
    check("validation_fraction", 0 <= self.validation_fraction < 1,
          f"must be in [0, 1), got {self.validation_fraction}")
    check("validation_fraction", self.test_fraction + self.validation_fraction < 1,
          f"test_fraction + validation_fraction must be < 1, got "
          f"{self.test_fraction} + {self.validation_fraction}")
    check("sentiment_labels", self.sentiment_labels in SENTIMENT_LABELS,
          f"must be one of {SENTIMENT_LABELS}, got {self.sentiment_labels!r}")
    check("lr_schedule", self.lr_schedule in LR_SCHEDULES,
          f"must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
    check("warmup_fraction", 0 <= self.warmup_fraction < 1,
          f"must be in [0, 1), got {self.warmup_fraction}")
    if self.lr_schedule == "constant":
      check("warmup_fraction", self.warmup_fraction == 0,
            "is set but lr_schedule is 'constant': use lr_schedule 'linear'")
    if self.fedqsn.enabled:
      check("model", self.model in FEDQSN_MODELS,
            f"fedqsn masks hidden units of {FEDQSN_MODELS} only, got {self.model!r}")
    if self.privacy.enabled:
      self.privacy.check_cohort(self.clients_per_round)
      if self.privacy.secagg:
        check("dropout", self.dropout == 0, "with secure aggregation clients drop out "
              "after masking: set privacy.dropout instead")
    if self.fedqsn.enabled and self.privacy.enabled:
      check("privacy.adaptive_clip", not self.privacy.adaptive_clip,
            "is not supported with fedqsn (its private uplink wraps a fixed clip bound)")
      check("fedqsn.aggregation", self.fedqsn.aggregation == "delta",
            "must be 'delta' with update privacy (the privacy mechanism bounds updates; "
            f"'average' would overwrite the model with unbounded values), got "
            f"{self.fedqsn.aggregation!r}")
      check("fedqsn.upload_bits", self.fedqsn.upload_bits == 32,
            "must be 32 with update privacy (privacy.bits quantizes the upload), got "
            f"{self.fedqsn.upload_bits}")

  def _check_algorithm(self) -> None:
    check("algorithm", self.algorithm in ALGORITHMS,
          f"must be one of {ALGORITHMS}, got {self.algorithm!r}")
    check("prox_mu", self.prox_mu >= 0, f"must be >= 0, got {self.prox_mu}")
    if self.algorithm != "fedprox":
      check("prox_mu", self.prox_mu == 0,
            f"is FedProx's proximal weight: set algorithm 'fedprox' (got {self.algorithm!r})")
    check("max_client_state_mb", self.max_client_state_mb > 0,
          f"must be > 0, got {self.max_client_state_mb}")
    if self.algorithm != "scaffold":
      return
    check("algorithm", not self.privacy.enabled,
          "'scaffold' uploads a control-variate delta beside the model update, a second "
          "message that update privacy does not clip, noise or account: use 'fedavg' or "
          "'fedprox' with privacy")
    check("algorithm", not self.fedqsn.enabled,
          "'scaffold' needs clients to train the global model itself; FedQSN clients train "
          "a masked, quantized proxy, so their control variates would not estimate its "
          "gradient: use 'fedavg' or 'fedprox' with fedqsn")
    check("client_optimizer", self.client_optimizer == "sgd",
          "'scaffold' (option II) reads its control variates off plain SGD steps: "
          f"use 'sgd', got {self.client_optimizer!r}")

  @classmethod
  def from_dict(cls, values: dict[str, Any], prefix: str = "") -> "Config":
    return _from_dict(cls, values, prefix)

  @property
  def resolved_conv_impl(self) -> str:
    if self.conv_impl != "auto":
      return self.conv_impl
    return "xla" if self.chunk_size == 1 else "im2col"

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _field_types(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _check_types(obj, prefix: str = "") -> None:
  for name, tp in _field_types(type(obj)).items():
    value = getattr(obj, name)
    option = prefix + name
    if dataclasses.is_dataclass(tp):
      check(option, isinstance(value, tp), f"must be a {tp.__name__} group")
      continue
    if tp is float:
      ok = isinstance(value, (int, float)) and not isinstance(value, bool)
      if ok:
        object.__setattr__(obj, name, float(value))
    elif tp is int:
      ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is bool:
      ok = isinstance(value, bool)
    elif tp is str:
      ok = isinstance(value, str)
    else:
      ok = True
    check(option, ok, f"must be a {getattr(tp, '__name__', tp)}, got {value!r}")


def _from_dict(cls, values: dict[str, Any], prefix: str):
  types = _field_types(cls)
  unknown = sorted(set(values) - set(types))
  if unknown:
    raise ConfigError(prefix + unknown[0], f"unknown option (known: {', '.join(sorted(types))})")
  kwargs = {}
  for name, value in values.items():
    tp = types[name]
    if dataclasses.is_dataclass(tp):
      if not isinstance(value, dict):
        raise ConfigError(prefix + name, "must be a group of options")
      kwargs[name] = _from_dict(tp, value, prefix + name + ".")
    else:
      kwargs[name] = value
  try:
    return cls(**kwargs)
  except ConfigError as e:
    if prefix and not e.option.startswith(prefix):
      raise ConfigError(prefix + e.option, str(e).split(": ", 1)[1]) from None
    raise


NOISE_KINDS = ("none", "central", "distributed")
ROTATIONS = ("none", "hadamard")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PrivacyConfig:
  """Update privacy (see fedpriv/privacy): what each client does to its update.

  Stages, in the order they run: `mask_ratio` p (a random fraction p of the
  coordinates is dropped, the same for every client of a round, survivors scaled by
  d/k), `clip` C (L2 clip, after the mask), `bits` b (unbiased stochastic quantization
  to 2^b levels over [-C, C]; 0 = float32), `noise` ("none"; "central": the server adds
  N(0, (z * sensitivity)^2) to the sum; "distributed": each client adds a discrete
  Gaussian share, so the sum of the survivors carries the full noise), with
  `noise_multiplier` z, or `target_epsilon` (> 0: z is calibrated before training so
  that epsilon at `delta` after all rounds is at most this; 0 = off), and `secagg`
  (pairwise-masked sums in Z_(2^ring_bits) with X25519 seeds and Shamir shares;
  `secagg_threshold` is the fraction of a client's share holders needed to recover its
  secrets, `secagg_neighbors` the neighbours per client (0 = all: Bonawitz et al.;
  an even number: SecAgg+'s sparse graph), `dropout` the fraction of the cohort that
  drops out after sharing keys, `ring_bits` 0 = the smallest ring that holds the sum).

  `rotation`: "hadamard" applies a randomized Hadamard rotation (public per-round signs)
  after the clip and before the quantizer, padding the update to the next power of two
  D, and the quantizer's range becomes [-R, R] with R = `rotation_sigmas` * C / sqrt(D)
  (each rotated coordinate is sub-Gaussian with scale <= C / sqrt(D), so a coordinate
  falls outside with probability <= 2 exp(-rotation_sigmas^2 / 2)); such coordinates
  are saturated (without secagg) or carried modulo the ring (with it), and counted
  (`quantizer_beyond_range_fraction`). Needs `bits`.

  `adaptive_clip`: the clip bound follows the `adaptive_clip_quantile` gamma of the
  clients' update norms (Andrew, Thakkar, McMahan & Ramaswamy 2021): `clip` is its
  value in round 1; each round the server adds N(0, sigma_b^2) (sigma_b =
  `adaptive_clip_count_stddev`, 0 = the expected cohort / 20, the paper's choice) to
  the count of clients whose norm was at most the bound, and sets C <- C exp(-eta (b -
  gamma)), eta = `adaptive_clip_lr`, b the noisy fraction. The update's noise multiplier
  is raised to (z^-2 - (2 sigma_b)^-2)^-1/2 so that the two releases together are a
  Gaussian mechanism with multiplier z, which is what the accountant composes. The
  bound lives in the server state (and its checkpoints). Not with secure aggregation
  (the count would have to go through the same secure sum: not implemented).

  `reproducible_noise`: derive the DP noise and randomized rounding from `seed` instead
  of a per-run secret from the OS. Anyone holding the config can then regenerate the
  noise, so the privacy guarantee is void: every epsilon in summary.json is marked
  "simulation only". For debugging and bit-for-bit comparisons of two runs.
  """
  enabled: bool = False
  clip: float = 1.0
  mask_ratio: float = 0.0
  bits: int = 0
  noise: str = "none"
  noise_multiplier: float = 0.0
  target_epsilon: float = 0.0
  delta: float = 1e-5
  secagg: bool = False
  secagg_threshold: float = 0.67
  secagg_neighbors: int = 0
  dropout: float = 0.0
  ring_bits: int = 0
  rotation: str = "none"
  rotation_sigmas: float = 4.0
  adaptive_clip: bool = False
  adaptive_clip_quantile: float = 0.5
  adaptive_clip_lr: float = 0.2
  adaptive_clip_count_stddev: float = 0.0
  reproducible_noise: bool = False

  def __post_init__(self):
    _check_types(self)
    check("clip", self.clip > 0, f"must be > 0, got {self.clip}")
    check("mask_ratio", 0 <= self.mask_ratio < 1, f"must be in [0, 1), got {self.mask_ratio}")
    check("bits", self.bits == 0 or 1 <= self.bits <= 16,
          f"must be 0 (float32) or in [1, 16], got {self.bits}")
    check("noise", self.noise in NOISE_KINDS, f"must be one of {NOISE_KINDS}, got {self.noise!r}")
    check("noise_multiplier", self.noise_multiplier >= 0,
          f"must be >= 0, got {self.noise_multiplier}")
    check("target_epsilon", self.target_epsilon >= 0,
          f"must be > 0, or 0 for off, got {self.target_epsilon}")
    check("delta", 0 < self.delta < 1, f"must be in (0, 1), got {self.delta}")
    check("secagg_threshold", 0.5 < self.secagg_threshold <= 1,
          f"must be in (0.5, 1], got {self.secagg_threshold}")
    check("secagg_neighbors", self.secagg_neighbors >= 0 and self.secagg_neighbors % 2 == 0,
          f"must be 0 (all) or an even number >= 2, got {self.secagg_neighbors}")
    check("dropout", 0 <= self.dropout < 1, f"must be in [0, 1), got {self.dropout}")
    check("ring_bits", self.ring_bits == 0 or 2 <= self.ring_bits <= 32,
          f"must be 0 (sized automatically) or in [2, 32], got {self.ring_bits}")
    check("rotation", self.rotation in ROTATIONS,
          f"must be one of {ROTATIONS}, got {self.rotation!r}")
    check("rotation_sigmas", 1 <= self.rotation_sigmas <= 64,
          f"must be in [1, 64] (standard deviations the quantizer's range spans), got "
          f"{self.rotation_sigmas}")
    if not self.enabled:
      return
    if self.noise == "none":
      check("noise_multiplier", self.noise_multiplier == 0,
            "is set but noise is 'none': choose noise 'central' or 'distributed'")
      check("target_epsilon", self.target_epsilon == 0,
            "needs noise: set noise to 'central' or 'distributed'")
    else:
      check("noise_multiplier", self.noise_multiplier > 0 or self.target_epsilon > 0,
            f"noise {self.noise!r} needs noise_multiplier > 0 or target_epsilon > 0")
    if self.secagg:
      check("bits", self.bits >= 1,
            "secure aggregation sums integers: set bits (e.g. 8) so updates are quantized")
      check("noise", self.noise != "central",
            "'central' noise with secagg would show the server a noiseless sum: use "
            "'distributed'")
    else:
      check("noise", self.noise != "distributed",
            "'distributed' noise is only sound behind secure aggregation: set secagg or "
            "use 'central'")
      check("dropout", self.dropout == 0, "is secure aggregation's (clients drop out "
            "after masking): without secagg use the top-level dropout")
    if self.noise == "distributed":
      check("bits", self.bits >= 1, "distributed noise is integer-valued: set bits")
    check("adaptive_clip_quantile", 0 < self.adaptive_clip_quantile < 1,
          f"must be in (0, 1), got {self.adaptive_clip_quantile}")
    check("adaptive_clip_lr", self.adaptive_clip_lr > 0,
          f"must be > 0, got {self.adaptive_clip_lr}")
    check("adaptive_clip_count_stddev", self.adaptive_clip_count_stddev >= 0,
          f"must be >= 0 (0 = expected cohort / 20), got {self.adaptive_clip_count_stddev}")
    if self.adaptive_clip:
      check("adaptive_clip", not self.secagg, "with secure aggregation the count of "
            "clients under the bound must go through the same secure sum, which is not "
            "implemented: turn off secagg or adaptive_clip")
    if self.rotation == "none":
      check("rotation_sigmas", self.rotation_sigmas == 4.0,
            "sets the rotated quantizer's range: set rotation 'hadamard' or leave it at 4")
    else:
      check("rotation", self.bits >= 1, "the rotation exists to shrink the quantizer's "
            "range: set bits (e.g. 8), or use rotation 'none' for float32 updates")

  def check_cohort(self, cohort: int) -> None:
    """Refuses secure-aggregation settings that no round of `cohort` clients can meet."""
    if not self.secagg:
      return
    check("privacy.secagg", cohort >= 2, f"needs at least 2 clients per round, got {cohort}")
    if self.secagg_neighbors:
      check("privacy.secagg_neighbors", self.secagg_neighbors < cohort,
            f"must be < clients_per_round={cohort}, got {self.secagg_neighbors}")
    survivors = cohort - int(self.dropout * cohort)
    group = (self.secagg_neighbors or cohort - 1) + 1
    need = secagg_threshold_count(self.secagg_threshold, group)
    worst = group - (cohort - survivors)  # every dropout in one client's group
    check("privacy.dropout", worst >= need,
          f"{cohort - survivors} of {cohort} clients drop out, which can leave a client "
          f"with fewer than its threshold of {need} share holders (of {group}); "
          "lower dropout or secagg_threshold")


def secagg_threshold_count(fraction: float, group: int) -> int:
  """The Shamir threshold t for a group of `group` share holders."""
  return max(2, min(group, math.ceil(fraction * group - 1e-9)))


def cohort_capacity(cfg: Config, num_clients: int) -> int:
  """Slots a round's cohort is padded to (before chunking): `clients_per_round` for
  fixed-size sampling; for Poisson, `client_capacity`, or (0) the smallest count that
  a draw from N + 1 clients (the larger add/remove neighbour) exceeds with probability
  at most OVERFLOW_TARGET / rounds per round, capped at N."""
  if cfg.client_sampling != "poisson":
    return cfg.clients_per_round
  if cfg.client_capacity:
    check("client_capacity", cfg.client_capacity <= num_clients,
          f"must be <= the {num_clients} clients, got {cfg.client_capacity}")
    return cfg.client_capacity
  from scipy import stats  # pylint: disable=import-outside-toplevel
  q = cfg.clients_per_round / num_clients
  cap = int(stats.binom.isf(OVERFLOW_TARGET / cfg.rounds, num_clients + 1, q))
  while cap < num_clients and stats.binom.sf(cap, num_clients + 1, q) > (
      OVERFLOW_TARGET / cfg.rounds):
    cap += 1
  return max(cfg.clients_per_round, min(cap, num_clients))
