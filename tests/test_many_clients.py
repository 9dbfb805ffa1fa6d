"""The many-clients peer workload: the same clients, batches and weights for every peer."""
import numpy as np
import pytest

from launch import many_clients as mc


def test_partition_is_a_disjoint_cover_of_the_training_set():
  parts = mc.partition()
  assert parts.shape == (6000, 10)
  assert np.array_equal(np.sort(parts.ravel()), np.arange(60_000))


def test_a_cohort_above_the_population_gets_iid_clients_of_distinct_examples():
  parts = mc.partition(mc.population_size(10_000))
  assert parts.shape == (10_000, 10)
  assert all(len(set(row)) == 10 for row in parts)
  assert parts.max() < 60_000
  # The first 6,000 clients are the disjoint split itself.
  assert np.array_equal(parts[:6000], mc.partition())


def test_round_sample_is_seeded_sorted_and_changes_with_the_round():
  a = mc.sampled_clients(1)
  assert np.array_equal(a, mc.sampled_clients(1))
  assert len(np.unique(a)) == 1000 and np.all(np.diff(a) > 0) and a.max() < 6000
  assert not np.array_equal(a, mc.sampled_clients(2))


def test_round_examples_are_the_clients_own_examples_in_schedule_order():
  parts = mc.partition()
  ids, idx = mc.round_examples(parts, 3, cohort=5)
  _, pos = mc.round_schedule(3, cohort=5)
  assert idx.shape == (5, 1, 10)
  for k, c in enumerate(ids):
    assert np.array_equal(idx[k, 0], parts[c][pos[k, 0]])
    assert set(idx[k, 0]) == set(parts[c])


def test_params_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  params = {"conv1": {"kernel": rng.normal(size=(2, 2, 1, 3)).astype(np.float32),
                      "bias": rng.normal(size=3).astype(np.float32)}}
  path = str(tmp_path / "p.npz")
  mc.save_params(path, params)
  back = mc.load_params(path)
  np.testing.assert_array_equal(back["conv1"]["kernel"], params["conv1"]["kernel"])


@pytest.mark.parametrize("model,shape", [("cnn", (7, 7, 64)), ("small_cnn", (4, 4, 32))])
def test_torch_layout_computes_the_same_dense_layer_on_nchw_flattening(model, shape):
  h, w, c = shape
  rng = np.random.default_rng(1)
  act = rng.normal(size=(2, h, w, c)).astype(np.float32)  # NHWC activation
  kernel = rng.normal(size=(h * w * c, 5)).astype(np.float32)
  params = {"fc1": {"kernel": kernel, "bias": np.zeros(5, np.float32)},
            "conv1": {"kernel": rng.normal(size=(3, 3, 1, 4)).astype(np.float32),
                      "bias": np.zeros(4, np.float32)}}
  state = mc.to_torch_layout(model, params)
  flax_out = act.reshape(2, -1).astype(np.float64) @ kernel
  torch_out = (act.transpose(0, 3, 1, 2).reshape(2, -1).astype(np.float64)
               @ state["fc1.weight"].T)
  np.testing.assert_allclose(torch_out, flax_out, rtol=1e-9, atol=1e-9)
  assert state["conv1.weight"].shape == (4, 1, 3, 3)  # OIHW
  np.testing.assert_array_equal(state["conv1.weight"][2, 0], params["conv1"]["kernel"][:, :, 0, 2])


def test_small_cnn_has_the_papers_parameter_count():
  import jax  # pylint: disable=import-outside-toplevel
  # launch.many_clients defines no flags (launch.bench_peers does, and other tests import
  # launch modules whose flags have the same names).
  params = mc.small_cnn_task().init(jax.random.key(0))
  assert sum(a.size for a in jax.tree.leaves(params)) == 26_010
