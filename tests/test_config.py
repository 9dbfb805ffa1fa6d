"""Every option is range-checked when the config is built."""
import pytest

from fedpriv.config import Config, ConfigError, FedQSNConfig


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
])
def test_bad_fedqsn_values_are_refused_with_the_option_named(option, value, match):
  with pytest.raises(ConfigError, match=match):
    Config.from_dict({"fedqsn": {option: value}})
  with pytest.raises(ConfigError, match=match):
    FedQSNConfig(**{option: value})


def test_fedqsn_cross_checks_and_nested_groups():
  with pytest.raises(ConfigError, match="fedqsn.server_fraction: must be > 0 when"):
    FedQSNConfig(pretrain_epochs=2)
  with pytest.raises(ConfigError, match="config.model: fedqsn masks hidden units of"):
    Config(dataset="shakespeare", model="lstm", partition="natural",
           fedqsn=FedQSNConfig(enabled=True))
  with pytest.raises(ConfigError, match="config.fedqsn.p3: unknown option"):
    Config.from_dict({"fedqsn": {"p3": 0.1}})
  cfg = Config.from_dict({"fedqsn": {"enabled": True, "p1": 0, "bits": 4}})
  assert cfg.fedqsn.p1 == 0.0 and isinstance(cfg.fedqsn.p1, float) and cfg.fedqsn.bits == 4
  assert cfg.to_dict()["fedqsn"]["bits"] == 4
  assert not Config().fedqsn.enabled  # off unless asked for
