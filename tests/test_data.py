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
