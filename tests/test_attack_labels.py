"""Labels from the last layer of an update."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TinyMLP, tiny_task
from fedpriv.attacks import labels as label_lib
from fedpriv.models.registry import Task


def sgd_update(task, params, x, y, lr=0.1):
  g = jax.grad(lambda p: task.mean_loss(p, x, y, jnp.ones(len(y), bool))[0])(params)
  return jax.tree.map(lambda t: -lr * t, g)


@pytest.mark.parametrize("seed", range(5))
def test_single_example_label_is_the_only_negative_bias_entry(seed):
  task = tiny_task()
  params = task.init(jax.random.key(seed))
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(1, 4)).astype(np.float32)
  y = rng.integers(0, 3, size=(1,)).astype(np.int32)
  upd = sgd_update(task, params, x, y)
  scores = label_lib.class_scores(upd["head"]["kernel"], upd["head"]["bias"])
  assert (scores < 0).sum() == 1
  np.testing.assert_array_equal(label_lib.recover_labels(scores, 1), y)
  # Without the bias, the weight columns say the same (features are ReLU outputs >= 0),
  # unless every hidden unit is off for this example.
  by_weight = label_lib.class_scores(upd["head"]["kernel"])
  if np.any(np.asarray(upd["head"]["kernel"]) != 0):
    np.testing.assert_array_equal(label_lib.recover_labels(by_weight, 1), y)


@pytest.mark.parametrize("seed", range(3))
def test_distinct_labels_of_a_batch_are_recovered(seed):
  # Ten classes: a present class's bias gradient, mean softmax - count / batch, is
  # negative while predictions are spread (1/10 < 1/3).
  task = Task("tiny10", "classification", TinyMLP(num_classes=10), (4,))
  params = task.init(jax.random.key(seed))
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(3, 4)).astype(np.float32)
  y = rng.choice(10, 3, replace=False).astype(np.int32)
  upd = sgd_update(task, params, x, y)
  scores = label_lib.class_scores(upd["head"]["kernel"], upd["head"]["bias"])
  np.testing.assert_array_equal(label_lib.recover_labels(scores, 3), np.sort(y))


def test_extra_slots_go_to_the_most_negative_classes():
  scores = np.array([-0.6, 0.3, -0.1, 0.4])
  np.testing.assert_array_equal(label_lib.recover_labels(scores, 2), [0, 2])
  np.testing.assert_array_equal(label_lib.recover_labels(scores, 4), [0, 0, 0, 2])
  np.testing.assert_array_equal(label_lib.recover_labels(scores, 1), [0])


def test_masked_bias_falls_back_to_observed_weight_columns():
  kernel = np.array([[1.0, -2.0], [0.0, -1.0]])  # update: class 0 column positive
  bias = np.array([0.5, 0.5])                      # wrong, but unobserved
  scores = label_lib.class_scores(kernel, bias, kernel_support=np.ones_like(kernel),
                                  bias_support=np.array([0.0, 1.0]))
  np.testing.assert_array_equal(label_lib.recover_labels(scores, 1), [0])


def test_label_accuracy_is_a_multiset_overlap():
  assert label_lib.label_accuracy([1, 1, 2], [1, 2, 2]) == pytest.approx(2 / 3)
  assert label_lib.label_accuracy([3], [3]) == 1.0
