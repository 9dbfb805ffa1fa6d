"""Models: the im2col convolution equals XLA's, the CNN has the paper's size, the
transformer is causal."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fedpriv.models import make_task
from fedpriv.models.layers import conv_same, im2col, max_pool_2x2


@pytest.mark.parametrize("k,cin", [(5, 1), (5, 3), (3, 4)])
def test_im2col_conv_equals_lax_conv(k, cin):
  x = jax.random.normal(jax.random.key(0), (2, 8, 6, cin))
  w = jax.random.normal(jax.random.key(1), (k, k, cin, 5))
  ours = jnp.einsum("bhwp,po->bhwo", im2col(x, k), w.reshape(-1, 5))
  ref = lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
  chex.assert_trees_all_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_im2col_conv_gradients_equal_lax_conv_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  w = jax.random.normal(jax.random.key(1), (5, 5, 3, 4))
  ours = jax.grad(lambda w, x: jnp.sin(jnp.einsum("bhwp,po->bhwo", im2col(x, 5),
                                                  w.reshape(-1, 4))).sum(), (0, 1))(w, x)
  ref = jax.grad(lambda w, x: jnp.sin(lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).sum(), (0, 1))(w, x)
  chex.assert_trees_all_close(ours, ref, atol=1e-3, rtol=1e-3)


def test_custom_vjp_conv_equals_lax_conv_values_and_gradients():
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
  w = jax.random.normal(jax.random.key(3), (5, 5, 3, 4))
  ref_f = lambda w, x: jnp.sin(lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))).sum()
  ours_f = lambda w, x: jnp.sin(conv_same(x, w)).sum()
  chex.assert_trees_all_close(ours_f(w, x), ref_f(w, x), rtol=1e-5)
  chex.assert_trees_all_close(jax.grad(ours_f, (0, 1))(w, x), jax.grad(ref_f, (0, 1))(w, x),
                              atol=1e-3, rtol=1e-3)
  # Under vmap (clients with their own kernels) it still computes the same thing.
  ws = jnp.stack([w, 2 * w])
  chex.assert_trees_all_close(jax.vmap(jax.grad(ours_f), (0, None))(ws, x),
                              jax.vmap(jax.grad(ref_f), (0, None))(ws, x), atol=1e-3, rtol=1e-3)


def test_cnn_formulations_agree():
  im2col_task = make_task("cnn", "classification", 10, (28, 28, 1), conv_impl="im2col")
  xla_task = make_task("cnn", "classification", 10, (28, 28, 1), conv_impl="xla")
  params = im2col_task.init(jax.random.key(0))
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  y = jnp.arange(4)
  m = jnp.ones(4, bool)
  chex.assert_trees_all_close(xla_task.apply(params, x), im2col_task.apply(params, x),
                              atol=1e-4, rtol=1e-4)
  g1 = jax.grad(lambda p: im2col_task.mean_loss(p, x, y, m)[0])(params)
  g2 = jax.grad(lambda p: xla_task.mean_loss(p, x, y, m)[0])(params)
  chex.assert_trees_all_close(g1, g2, atol=1e-4, rtol=1e-3)


def test_pool_equals_reduce_window():
  x = jax.random.normal(jax.random.key(0), (2, 6, 4, 3))
  ref = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
  chex.assert_trees_all_close(max_pool_2x2(x), ref)


def test_cnn_matches_mcmahan_et_al():
  task = make_task("cnn", "classification", 10, (28, 28, 1))
  params = task.init(jax.random.key(0))
  assert sum(p.size for p in jax.tree.leaves(params)) == 1_663_370
  assert params["conv2"]["kernel"].shape == (5, 5, 32, 64)
  logits = task.apply(params, jnp.zeros((3, 28, 28, 1)))
  chex.assert_shape(logits, (3, 10))


@pytest.mark.parametrize("model", ["lstm", "transformer"])
def test_char_models_are_causal(model):
  task = make_task(model, "next_token", 20, (12,))
  params = task.init(jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (2, 12), 2, 20)
  changed = tokens.at[:, 8:].set(3)
  a, b = task.apply(params, tokens), task.apply(params, changed)
  chex.assert_shape(a, (2, 12, 20))
  chex.assert_trees_all_close(a[:, :8], b[:, :8], atol=1e-5)
  assert float(jnp.abs(a[:, 8:] - b[:, 8:]).max()) > 1e-4


def test_next_token_loss_ignores_padding():
  task = make_task("transformer", "next_token", 20, (6,))
  params = task.init(jax.random.key(0))
  x = jnp.array([[2, 3, 4, 5, 6, 7]])
  y = jnp.array([[3, 4, 5, 0, 0, 0]])
  _, _, count = task.stats(params, x, y, jnp.array([True]))
  assert float(count) == 3.0
  _, _, count = task.stats(params, x, y, jnp.array([False]))
  assert float(count) == 0.0


def test_model_and_data_must_fit():
  with pytest.raises(ValueError, match="does not fit"):
    make_task("cnn", "next_token", 10, (80,))
  with pytest.raises(ValueError, match="unknown model"):
    make_task("resnet", "classification", 10, (28, 28, 1))
