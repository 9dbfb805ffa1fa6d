"""Partitioners: disjoint, complete, deterministic by seed, skewed when asked."""
import numpy as np
import pytest

from fedpriv.data import pack_clients, partition


def _check_disjoint_cover(parts, n):
  allidx = np.concatenate(parts)
  assert len(allidx) == len(set(allidx.tolist())) == n


def test_iid_is_disjoint_complete_and_seeded():
  a = partition.iid(1000, 7, seed=0)
  _check_disjoint_cover(a, 1000)
  assert max(map(len, a)) - min(map(len, a)) <= 1
  b = partition.iid(1000, 7, seed=0)
  c = partition.iid(1000, 7, seed=1)
  assert all(np.array_equal(x, y) for x, y in zip(a, b))
  assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def _label_entropy(parts, labels):
  ents = []
  for p in parts:
    q = np.bincount(labels[p], minlength=10) / len(p)
    q = q[q > 0]
    ents.append(-(q * np.log(q)).sum())
  return np.mean(ents)


def test_dirichlet_skews_labels_and_is_seeded():
  labels = np.random.default_rng(0).integers(0, 10, size=5000)
  skewed = partition.dirichlet(labels, 20, alpha=0.1, seed=0)
  mild = partition.dirichlet(labels, 20, alpha=100.0, seed=0)
  _check_disjoint_cover(skewed, 5000)
  _check_disjoint_cover(mild, 5000)
  iid = partition.iid(5000, 20, seed=0)
  assert _label_entropy(skewed, labels) < 0.6 * _label_entropy(iid, labels)
  assert _label_entropy(mild, labels) > 0.95 * _label_entropy(iid, labels)
  again = partition.dirichlet(labels, 20, alpha=0.1, seed=0)
  assert all(np.array_equal(x, y) for x, y in zip(skewed, again))
  assert min(map(len, skewed)) >= 1


def test_partitioners_refuse_nonsense():
  with pytest.raises(ValueError):
    partition.iid(10, 11, seed=0)
  with pytest.raises(ValueError):
    partition.dirichlet(np.zeros(10, int), 3, alpha=0.0, seed=0)


def test_cap_keeps_a_seeded_subset():
  parts = partition.iid(100, 2, seed=0)
  capped = partition.cap(parts, 10, seed=0)
  assert [len(p) for p in capped] == [10, 10]
  for p, c in zip(parts, capped):
    assert set(c.tolist()) <= set(p.tolist())


def test_pack_clients_pads_and_masks():
  x = np.arange(10, dtype=np.float32)[:, None]
  y = np.arange(10, dtype=np.int32)
  data = pack_clients(x, y, [np.array([0, 1, 2]), np.array([7])])
  assert data.x.shape == (2, 3, 1)
  np.testing.assert_array_equal(data.mask, [[1, 1, 1], [1, 0, 0]])
  np.testing.assert_array_equal(data.num_examples(), [3, 1])
  np.testing.assert_array_equal(data.y[1], [7, 0, 0])
  with pytest.raises(ValueError):
    pack_clients(x, y, [np.array([], int)])


def test_one_example_clients_at_fashion_mnist_scale():
  # DP-SGD as DP-FedAvg (fashion_mnist.py:dp_tempered): 60,000 clients of one example,
  # packed without padding (width 1) and each example held by exactly one client.
  n = 60000
  x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
  y = np.arange(n) % 10
  parts = partition.iid(n, n, seed=0)
  assert set(map(len, parts)) == {1}
  data = pack_clients(x, y, parts)
  assert data.x.shape == (n, 1, 3) and data.mask.all()
  held = data.x[:, 0, 0].astype(np.int64)
  assert np.array_equal(np.sort(held), np.arange(n))
  assert np.array_equal(data.y[:, 0], y[held])
  assert not np.array_equal(held, np.arange(n))  # shuffled over clients
  assert data.x.nbytes == x.nbytes  # no padding: the population costs the dataset's bytes
