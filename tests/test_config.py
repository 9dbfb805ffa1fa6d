"""Every option is range-checked when the config is built."""
import pytest

from fedpriv.config import Config, ConfigError


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
