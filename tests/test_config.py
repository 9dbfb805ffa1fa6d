"""Every option is range-checked when the config is built."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from fedpriv.config import Config, ConfigError, FedQSNConfig, PrivacyConfig


@pytest.mark.parametrize("option,value,match", [
    ("rounds", 0, "rounds: must be >= 1"),
    ("clients_per_round", 101, r"clients_per_round: must be in \[1, num_clients=100\]"),
    ("learning_rate", -1.0, "learning_rate: must be > 0"),
    ("dataset", "mnist", "dataset: must be one of"),
    ("model", "lstm", "model: image datasets need 'cnn'"),
    ("partition", "natural", "partition: image datasets take"),
    ("dirichlet_alpha", 0.0, "dirichlet_alpha: must be > 0"),
    ("client_optimizer", "rmsprop", "client_optimizer: must be one of"),
    ("client_momentum", 1.0, r"client_momentum: must be in \[0, 1\)"),
    ("batch_size", 2.5, "batch_size: must be a int"),
    ("rounds", True, "rounds: must be a int"),
    ("seed", -1, "seed: must be >= 0"),
    ("test_fraction", 1.0, r"test_fraction: must be in \(0, 1\)"),
    ("conv_impl", "fft", "conv_impl: must be one of"),
    ("lr_schedule", "cosine", "lr_schedule: must be one of"),
    ("warmup_fraction", 0.06, "warmup_fraction: is set but lr_schedule is 'constant'"),
    ("validation_fraction", -0.1, r"validation_fraction: must be in \[0, 1\)"),
    ("sentiment_labels", "stars", "sentiment_labels: must be one of"),
    ("client_sampling", "bernoulli", "client_sampling: must be one of"),
    ("client_capacity", 20, "client_capacity: is for client_sampling='poisson'"),
    ("client_capacity", -1, "client_capacity: must be >= 0"),
])
def test_bad_values_are_refused_with_the_option_named(option, value, match):
  with pytest.raises(ConfigError, match=match):
    Config(**{option: value})


def test_from_dict_refuses_unknown_keys_and_accepts_known_ones():
  with pytest.raises(ConfigError, match="config.roundz: unknown option"):
    Config.from_dict({"roundz": 3})
  cfg = Config.from_dict({"rounds": 3, "learning_rate": 1})
  assert cfg.rounds == 3 and cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float)


def test_shakespeare_rules():
  Config(dataset="shakespeare", model="lstm", partition="natural", num_clients=0)
  with pytest.raises(ConfigError, match="shakespeare is naturally federated"):
    Config(dataset="shakespeare", model="lstm", partition="iid")
  with pytest.raises(ConfigError, match="shakespeare needs"):
    Config(dataset="shakespeare", model="cnn", partition="natural")


@pytest.mark.parametrize("option,value,match", [
    ("p1", 1.0, r"fedqsn.p1: must be in \[0, 1\)"),
    ("p2", -0.1, r"fedqsn.p2: must be in \[0, 1\)"),
    ("bits", 1, r"fedqsn.bits: must be in 2..8 \(NF-b quantization\) or 32"),
    ("bits", 16, r"fedqsn.bits: must be in 2..8"),
    ("upload_bits", 9, r"fedqsn.upload_bits: must be in 2..8"),
    ("block_size", 0, "fedqsn.block_size: must be >= 1"),
    ("aggregation", "median", "fedqsn.aggregation: must be one of"),
    ("client_mask", "topk", "fedqsn.client_mask: must be one of"),
    ("server_fraction", 1.0, r"fedqsn.server_fraction: must be in \[0, 1\)"),
    ("pretrain_epochs", -1, "fedqsn.pretrain_epochs: must be >= 0"),
    ("pretrain_learning_rate", 0.0, "fedqsn.pretrain_learning_rate: must be > 0"),
    ("pretrain_batch_size", 0, "fedqsn.pretrain_batch_size: must be >= 1"),
    ("eval_examples", -5, "fedqsn.eval_examples: must be >= 0"),
    ("p1", "half", "fedqsn.p1: must be a float"),
    ("quantize_embeddings", True, "fedqsn.quantize_embeddings: needs fedqsn.bits in 2..8"),
])
def test_bad_fedqsn_values_are_refused_with_the_option_named(option, value, match):
  with pytest.raises(ConfigError, match=match):
    Config.from_dict({"fedqsn": {option: value}})
  with pytest.raises(ConfigError, match=match):
    FedQSNConfig(**{option: value})


def test_fedqsn_cross_checks_and_nested_groups():
  with pytest.raises(ConfigError, match="fedqsn.server_fraction: must be > 0 when"):
    FedQSNConfig(pretrain_epochs=2)
  with pytest.raises(ConfigError, match="fedqsn.p2: must be < 1 - p1 with client_mask "
                     "count_of_all"):
    FedQSNConfig(p1=0.8, p2=0.2, client_mask="count_of_all")
  FedQSNConfig(p1=0.8, p2=0.2, client_mask="exact")  # 0.8 + 0.2 * 0.2 hidden: fine
  with pytest.raises(ConfigError, match="config.model: fedqsn masks hidden units of"):
    Config(dataset="shakespeare", model="lstm", partition="natural",
           fedqsn=FedQSNConfig(enabled=True))
  with pytest.raises(ConfigError, match="config.fedqsn.p3: unknown option"):
    Config.from_dict({"fedqsn": {"p3": 0.1}})
  cfg = Config.from_dict({"fedqsn": {"enabled": True, "p1": 0, "bits": 4}})
  assert cfg.fedqsn.p1 == 0.0 and isinstance(cfg.fedqsn.p1, float) and cfg.fedqsn.bits == 4
  assert cfg.to_dict()["fedqsn"]["bits"] == 4
  assert not Config().fedqsn.enabled  # off unless asked for


@pytest.mark.parametrize("values,match", [
    ({"clip": 0.0}, r"clip: must be > 0"),
    ({"mask_ratio": 1.0}, r"mask_ratio: must be in \[0, 1\)"),
    ({"mask_ratio": -0.1}, r"mask_ratio: must be in \[0, 1\)"),
    ({"bits": 17}, r"bits: must be 0 \(float32\) or in \[1, 16\]"),
    ({"noise": "laplace"}, "noise: must be one of"),
    ({"noise_multiplier": -1.0}, "noise_multiplier: must be >= 0"),
    ({"target_epsilon": -1.0}, "target_epsilon: must be > 0, or 0 for off"),
    ({"delta": 1.0}, r"delta: must be in \(0, 1\)"),
    ({"delta": 0.0}, r"delta: must be in \(0, 1\)"),
    ({"secagg_threshold": 0.5}, r"secagg_threshold: must be in \(0.5, 1\]"),
    ({"secagg_neighbors": 3}, "secagg_neighbors: must be 0 .all. or an even number"),
    ({"dropout": 1.0}, r"dropout: must be in \[0, 1\)"),
    ({"ring_bits": 33}, r"ring_bits: must be 0 \(sized automatically\) or in \[2, 32\]"),
    ({"noise": "central"}, "noise_multiplier: noise 'central' needs noise_multiplier > 0"),
    ({"noise_multiplier": 1.0}, "noise_multiplier: is set but noise is 'none'"),
    ({"target_epsilon": 4.0}, "target_epsilon: needs noise"),
    ({"secagg": True}, "bits: secure aggregation sums integers"),
    ({"secagg": True, "bits": 8, "noise": "central", "noise_multiplier": 1.0},
     "noise: 'central' noise with secagg would show the server a noiseless sum"),
    ({"noise": "distributed", "noise_multiplier": 1.0, "bits": 8},
     "noise: 'distributed' noise is only sound behind secure aggregation"),
    ({"dropout": 0.1}, "dropout: is secure aggregation.s"),
    ({"rotation": "dct", "bits": 8}, "rotation: must be one of"),
    ({"rotation": "hadamard"}, "rotation: the rotation exists to shrink the quantizer"),
    ({"rotation": "hadamard", "bits": 8, "rotation_sigmas": 0.5},
     r"rotation_sigmas: must be in \[1, 64\]"),
    ({"rotation_sigmas": 3.0, "bits": 8}, "rotation_sigmas: sets the rotated quantizer"),
    ({"adaptive_clip": True, "bits": 8, "secagg": True},
     "adaptive_clip: with secure aggregation the count"),
    ({"adaptive_clip_quantile": 0.0}, r"adaptive_clip_quantile: must be in \(0, 1\)"),
    ({"adaptive_clip_lr": 0.0}, "adaptive_clip_lr: must be > 0"),
    ({"adaptive_clip_count_stddev": -1.0}, "adaptive_clip_count_stddev: must be >= 0"),
])
def test_bad_privacy_values_are_refused(values, match):
  with pytest.raises(ConfigError, match="config.privacy." + match):
    Config.from_dict({"privacy": {"enabled": True, **values}})


def test_secagg_threshold_must_survive_the_dropouts():
  ok = {"enabled": True, "secagg": True, "bits": 8, "dropout": 0.2,
        "secagg_threshold": 0.6}
  Config.from_dict({"clients_per_round": 10, "privacy": ok})  # 8 of 10 left, t = 6
  with pytest.raises(ConfigError, match="config.privacy.dropout: 5 of 10 clients drop out"):
    Config.from_dict({"clients_per_round": 10, "privacy": {**ok, "dropout": 0.5}})
  with pytest.raises(ConfigError, match="config.privacy.secagg_neighbors: must be < "):
    Config.from_dict({"clients_per_round": 10,
                      "privacy": {**ok, "dropout": 0.0, "secagg_neighbors": 10}})


def test_ring_too_small_for_the_cohort_is_refused():
  from fedpriv.privacy.mechanism import make_mechanism  # pylint: disable=import-outside-toplevel
  from fedpriv.config import PrivacyConfig  # pylint: disable=import-outside-toplevel
  cfg = PrivacyConfig(enabled=True, secagg=True, bits=8, ring_bits=10)
  with pytest.raises(ConfigError, match="privacy.ring_bits: 10 bits can wrap"):
    make_mechanism(cfg, num_clients=100, cohort=10, rounds=1, size=100)
  big = PrivacyConfig(enabled=True, secagg=True, bits=16, noise="distributed",
                      noise_multiplier=1e6)
  with pytest.raises(ConfigError, match="privacy.ring_bits: .* more than 32"):
    make_mechanism(big, num_clients=100, cohort=10, rounds=1, size=100)
  sized = make_mechanism(PrivacyConfig(enabled=True, secagg=True, bits=8), num_clients=100,
                         cohort=10, rounds=1, size=100)
  assert 10 * 255 < 2 ** sized.ring_bits


@pytest.mark.parametrize("changes,match", [
    ({"client_capacity": 5}, "client_capacity: must be >= clients_per_round=10"),
    ({"dropout": 0.1}, "dropout: is not supported with poisson sampling"),
])
def test_bad_poisson_sampling_options_are_refused(changes, match):
  with pytest.raises(ConfigError, match=match):
    Config(client_sampling="poisson", **changes)


def test_reproducible_noise_must_be_a_bool():
  from fedpriv.config import PrivacyConfig  # pylint: disable=import-outside-toplevel
  with pytest.raises(ConfigError, match="reproducible_noise: must be a bool"):
    PrivacyConfig(reproducible_noise=1)


@pytest.mark.parametrize("values,match", [
    ({"algorithm": "fedsgd"}, "config.algorithm: must be one of"),
    ({"prox_mu": -0.1}, "config.prox_mu: must be >= 0"),
    ({"prox_mu": 0.1}, "config.prox_mu: is FedProx's proximal weight"),
    ({"algorithm": "scaffold", "client_optimizer": "adam"},
     "config.client_optimizer: 'scaffold' .* plain SGD"),
    ({"algorithm": "scaffold", "privacy": PrivacyConfig(enabled=True)},
     "config.algorithm: 'scaffold' uploads a control-variate delta"),
    ({"algorithm": "scaffold", "fedqsn": FedQSNConfig(enabled=True)},
     "config.algorithm: 'scaffold' needs clients to train the global model"),
    ({"max_client_state_mb": 0.0}, "config.max_client_state_mb: must be > 0"),
    ({"server_optimizer": "lamb"}, "config.server_optimizer: must be one of"),
])
def test_bad_algorithm_choices_are_refused(values, match):
  with pytest.raises(ConfigError, match=match):
    Config(**values)


def test_algorithms_that_compose_with_the_privacy_tiers_are_accepted():
  Config(algorithm="fedprox", prox_mu=0.1, privacy=PrivacyConfig(enabled=True),
         fedqsn=FedQSNConfig(enabled=True))
  Config(algorithm="fedprox", prox_mu=0.0)  # mu=0: FedAvg
  for server in ("adam", "adagrad", "yogi"):
    Config(algorithm="scaffold", server_optimizer=server)


def test_scaffold_with_update_privacy_exits_2_with_one_line(tmp_path):
  r = subprocess.run([sys.executable, "-m", "launch.train",
                      "--config=launch/configs/fashion_mnist.py:private",
                      f"--workdir={tmp_path}/w", "--config.algorithm=scaffold"],
                     cwd=ROOT, capture_output=True, text=True, timeout=600,
                     env={**os.environ, "PYTHONPATH": ROOT})
  err = [l for l in r.stderr.splitlines() if l.strip()]
  assert r.returncode == 2 and len(err) == 1 and "scaffold" in err[0], r.stderr
  assert not (tmp_path / "w").exists()


def test_linear_schedule_warms_up_decays_and_needs_the_step_count():
  from fedpriv import optimizers  # pylint: disable=import-outside-toplevel
  cfg = Config(client_optimizer="adamw", learning_rate=1e-4, lr_schedule="linear",
               warmup_fraction=0.1, weight_decay=0.01)
  with pytest.raises(ConfigError, match="lr_schedule: 'linear' needs the number of local steps"):
    optimizers.client_optimizer(cfg)
  with pytest.raises(ConfigError, match="warmup_fraction: must be in"):
    Config(lr_schedule="linear", warmup_fraction=1.0)
  lr = optimizers.client_learning_rate(cfg, 50)
  rates = [float(lr(s)) for s in range(51)]
  assert rates[0] == 0 and abs(rates[5] - 1e-4) < 1e-10 and rates[50] == 0
  assert all(a < b for a, b in zip(rates[:5], rates[1:6]))     # warm-up over 5 = 10% of 50
  assert all(a > b for a, b in zip(rates[5:50], rates[6:51]))  # then linear decay to 0
  assert abs(rates[30] - 1e-4 * 20 / 45) < 1e-10
