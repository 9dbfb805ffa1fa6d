"""Loaders on the real files (small slices), a synthetic play, and tfds mock data."""
import gzip

import numpy as np
import pytest

from conftest import requires_fmnist
from fedpriv.config import Config, ConfigError
from fedpriv.data import fashion_mnist, load_dataset, shakespeare


def _write_idx(path, array):
  header = bytes([0, 0, 8, array.ndim]) + b"".join(
      int(d).to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_roundtrip_and_bad_files(tmp_path):
  a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  _write_idx(tmp_path / "a.gz", a)
  np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "a.gz"), a)
  (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")
  with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
    fashion_mnist.read_idx(tmp_path / "bad")


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
  with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
    load_dataset(Config(data_dir=str(tmp_path)))


@requires_fmnist
def test_fashion_mnist_real_files():
  x, y = fashion_mnist.load("train", limit=500)
  assert x.shape == (500, 28, 28, 1) and x.dtype == np.float32
  assert 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.9
  assert set(np.unique(y)) <= set(range(10)) and len(np.unique(y)) == 10
  xt, yt = fashion_mnist.load("test")
  assert xt.shape == (10000, 28, 28, 1) and np.bincount(yt).tolist() == [1000] * 10


@requires_fmnist
def test_fashion_mnist_federated_dataset():
  ds = load_dataset(Config(num_clients=10, clients_per_round=2, train_limit=600,
                           test_limit=100))
  assert ds.train.x.shape == (10, 60, 28, 28, 1)
  assert ds.train.num_examples().tolist() == [60] * 10
  assert ds.test.x.shape == (100, 28, 28, 1)
  skew = load_dataset(Config(num_clients=10, clients_per_round=2, train_limit=600,
                             test_limit=100, partition="dirichlet", dirichlet_alpha=0.2))
  assert skew.train.num_examples().sum() == 600


PLAY = """THE TRAGEDY OF TESTING

PERSONS REPRESENTED.

Alpha, a tester.

ACT I.

Scene I. A lab.

[Enter Alpha and BETA.]

Alp.
To be, or not to be:
that is the question.

BETA.
Whether 'tis nobler [Aside.] in the mind
to suffer.

[Exit Alpha.]

Alp.
Ay, there's the rub.

ACT II.

BETA.
Good night.
"""


def test_split_roles_on_a_synthetic_play():
  roles = shakespeare.split_roles(PLAY)
  assert set(roles) == {"ALP", "BETA"}
  assert roles["ALP"] == "To be, or not to be: that is the question. Ay, there's the rub."
  assert roles["BETA"] == "Whether 'tis nobler in the mind to suffer. Good night."


def test_windows_shift_by_one():
  ids = shakespeare.encode("abcdefghij")
  w = shakespeare.windows(ids, 4)
  assert shakespeare.decode(w[0]) == "abcde"
  assert shakespeare.decode(w[1]) == "efghi"
  assert shakespeare.decode(w[2]) == "ij"  # padded, still has a target


def test_shakespeare_real_plays():
  ds = shakespeare.load(min_chars=20000, plays=("hamlet", "macbeth"))
  names = set(ds.client_names)
  assert {"hamlet/HAM", "hamlet/KING", "macbeth/MACBETH"} <= names
  assert set(ds.client_groups) == {"hamlet", "macbeth"}
  x, y, mask = ds.train
  assert x.shape == y.shape and x.shape[-1] == 80
  # Targets are the inputs shifted by one character.
  np.testing.assert_array_equal(x[mask][:, 1:], y[mask][:, :-1])
  assert ds.info["clients"] == len(names) and ds.info["characters"] > 100000
  assert ds.num_classes == shakespeare.VOCAB_SIZE
  # Deterministic by seed.
  again = shakespeare.load(min_chars=20000, plays=("hamlet", "macbeth"))
  np.testing.assert_array_equal(again.train.x, x)


def test_shakespeare_train_and_test_windows_are_disjoint():
  ds = shakespeare.load(min_chars=20000, plays=("hamlet",), seq_len=40)
  train = {tuple(r) for r in ds.train.x[ds.train.mask]}
  test = {tuple(r) for r in ds.test.x}
  assert not train & test


def test_tfds_mock_data_loads_as_a_federated_dataset():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40):
    ds = load_dataset(Config(dataset="tfds:cifar10", num_clients=4, clients_per_round=2))
  assert ds.train.x.shape == (4, 10, 32, 32, 3)
  assert ds.num_classes == 10 and ds.test.x.shape[1:] == (32, 32, 3)
  assert 0.0 <= ds.train.x.min() and ds.train.x.max() <= 1.0


def test_tfds_refuses_unknown_or_non_image_datasets():
  tfds = pytest.importorskip("tensorflow_datasets")
  with pytest.raises(ConfigError, match="tfds:no_such_dataset"):
    load_dataset(Config(dataset="tfds:no_such_dataset"))
  with tfds.testing.mock_data(num_examples=5):
    with pytest.raises(ConfigError, match="config.dataset"):
      load_dataset(Config(dataset="tfds:imdb_reviews"))


def test_holdout_split_is_disjoint_complete_and_seeded():
  from fedpriv.data import partition
  held, rest = partition.holdout(1000, 0.15, seed=3)
  assert len(held) == 150 and not set(held) & set(rest)
  assert sorted(np.concatenate([held, rest]).tolist()) == list(range(1000))
  np.testing.assert_array_equal(partition.holdout(1000, 0.15, seed=3)[0], held)
  assert not np.array_equal(partition.holdout(1000, 0.15, seed=4)[0], held)


def test_server_holdout_of_images_never_reaches_a_client(monkeypatch):
  from fedpriv.config import FedQSNConfig

  def fake_load(split, path=None, limit=None):
    n = 500 if split == "train" else 50
    ids = np.arange(n)  # every image carries its index in its first pixels
    x = np.zeros((n, 28, 28, 1), np.float32)
    x[:, 0, 0, 0], x[:, 0, 1, 0] = ids // 256, ids % 256
    return x, (ids % 10).astype(np.int32)

  monkeypatch.setattr(fashion_mnist, "load", fake_load)
  for part in ("iid", "dirichlet"):
    cfg = Config(num_clients=10, clients_per_round=2, partition=part,
                 fedqsn=FedQSNConfig(enabled=True, server_fraction=0.2))
    ds = load_dataset(cfg)
    ident = lambda x: (x[..., 0, 0, 0] * 256 + x[..., 0, 1, 0]).astype(int)
    server_ids = set(ident(ds.server.x).tolist())
    client_ids = set(ident(ds.train.x[ds.train.mask]).tolist())
    assert len(server_ids) == 100 and ds.info["server_examples"] == 100
    assert not server_ids & client_ids
    assert server_ids | client_ids == set(range(500))
  # Off by default: no server data, every example with a client.
  plain = load_dataset(Config(num_clients=10, clients_per_round=2))
  assert plain.server is None and int(plain.train.mask.sum()) == 500


def test_server_plays_are_held_out_of_clients_and_test_set():
  from fedpriv.config import FedQSNConfig
  cfg = Config(dataset="shakespeare", model="transformer", partition="natural",
               num_clients=0, min_chars=20000, seq_len=40,
               fedqsn=FedQSNConfig(enabled=True, server_fraction=0.1))
  ds = load_dataset(cfg)
  held = set(ds.info["server_plays"])
  assert len(held) == 4 and not held & set(ds.client_groups)
  server = {tuple(r) for r in ds.server.x}
  clients = {tuple(r) for r in ds.train.x[ds.train.mask]}
  test = {tuple(r) for r in ds.test.x}
  assert len(server) > 1000 and not server & clients and not server & test
  # Without FedQSN every play belongs to the federation.
  everyone = load_dataset(cfg.__class__(**{**cfg.__dict__, "fedqsn": FedQSNConfig()}))
  assert everyone.server is None
  assert set(ds.client_groups) == set(everyone.client_groups) - held
  assert held & set(everyone.client_groups)
