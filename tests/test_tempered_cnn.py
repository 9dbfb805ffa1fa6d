"""Papernot et al.'s DP-SGD CNN: shapes, size, the tempered sigmoid, both formulations."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fedpriv.config import Config, ConfigError
from fedpriv.models import make_task
from fedpriv.models.tempered_cnn import TemperedCNN, strided_patches, tempered_sigmoid


def test_tempered_sigmoid_2_2_1_is_tanh_and_others_are_not():
  x = jnp.linspace(-6.0, 6.0, 101)
  chex.assert_trees_all_close(tempered_sigmoid(x), jnp.tanh(x), atol=1e-6)
  # other temperatures are bounded by (-o, s - o) but are not tanh
  y = tempered_sigmoid(x, 1.5, 1.0, 0.5)
  assert float(jnp.abs(y - jnp.tanh(x)).max()) > 0.1
  assert float(y.min()) > -0.5 and float(y.max()) < 1.0


@pytest.mark.parametrize("stride,padding,k", [(2, "SAME", 8), (2, "VALID", 4)])
def test_strided_patches_conv_equals_lax_conv(stride, padding, k):
  x = jax.random.normal(jax.random.key(0), (2, 13, 14, 3))
  w = jax.random.normal(jax.random.key(1), (k, k, 3, 5))

  @jax.jit  # one compile instead of k*k eager slices
  def both(x, w):
    return (strided_patches(x, k, stride, padding) @ w.reshape(-1, 5),
            lax.conv_general_dilated(x, w, (stride, stride), padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")))

  ours, ref = both(x, w)
  chex.assert_trees_all_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_shapes_and_parameter_count_match_the_paper():
  task = make_task("tempered_cnn", "classification", 10, (28, 28, 1))
  params = jax.eval_shape(task.init, jax.random.key(0))  # shapes only: no compile
  shapes = jax.tree.map(lambda a: a.shape, params)
  assert shapes == {"conv1": {"kernel": (8, 8, 1, 16), "bias": (16,)},
                    "conv2": {"kernel": (4, 4, 16, 32), "bias": (32,)},
                    "fc1": {"kernel": (512, 32), "bias": (32,)},  # 4 x 4 x 32 features
                    "fc2": {"kernel": (32, 10), "bias": (10,)}}
  assert sum(a.size for a in jax.tree.leaves(params)) == 26010
  out = jax.eval_shape(task.apply, params, jax.ShapeDtypeStruct((3, 28, 28, 1), jnp.float32))
  assert out.shape == (3, 10)


def test_init_by_key_and_formulations_and_tanh_agree():
  x = jax.random.normal(jax.random.key(1), (4, 28, 28, 1))
  y = jnp.arange(4) % 10
  im2col = TemperedCNN(conv_impl="im2col")
  init = jax.jit(im2col.init)
  params, again, other = (init(jax.random.key(k), x)["params"] for k in (2, 2, 3))
  chex.assert_trees_all_equal(params, again)
  assert not np.allclose(params["fc1"]["kernel"], other["fc1"]["kernel"])

  def loss(model):
    return lambda p: -jax.nn.log_softmax(model.apply({"params": p}, x))[jnp.arange(4), y].sum()

  @jax.jit  # one compile for all four
  def all_of_them(params):
    return (jax.value_and_grad(loss(im2col))(params),
            jax.value_and_grad(loss(TemperedCNN(conv_impl="xla")))(params),
            loss(TemperedCNN(activation="tanh"))(params),
            loss(TemperedCNN(activation="relu"))(params))

  (value, grad), (ref_value, ref_grad), tanh, relu = all_of_them(params)
  chex.assert_trees_all_close(value, ref_value, rtol=1e-4)
  chex.assert_trees_all_close(grad, ref_grad, atol=1e-4, rtol=1e-3)
  chex.assert_trees_all_close(tanh, ref_value, rtol=1e-4)
  # ReLU is a different function of the same parameters
  assert abs(float(relu - ref_value)) > 1e-3


def test_config_takes_it_for_images_only():
  Config(model="tempered_cnn")
  with pytest.raises(ConfigError, match="config.model: shakespeare needs"):
    Config(model="tempered_cnn", dataset="shakespeare", partition="natural")
  with pytest.raises(ValueError, match="does not fit a next_token dataset"):
    make_task("tempered_cnn", "next_token", 10, (80,))


def test_dp_tempered_preset_is_dp_sgd_of_the_paper():
  from launch.configs import fashion_mnist  # pylint: disable=import-outside-toplevel
  cfg = Config.from_dict(fashion_mnist.get_config("dp_tempered").to_dict())
  # one image per client and one SGD step of rate 1: the update is minus the gradient
  assert (cfg.num_clients, cfg.batch_size, cfg.local_epochs) == (60000, 1, 1)
  assert (cfg.client_optimizer, cfg.learning_rate) == ("sgd", 1.0)
  assert cfg.client_sampling == "poisson" and cfg.model == "tempered_cnn"
  # DP-SGD's batch 2048, learning rate 4 with momentum 0.9, 40 epochs, clip 0.1, noise 2.15
  assert (cfg.clients_per_round, cfg.server_optimizer, cfg.server_learning_rate) == (
      2048, "momentum", 4.0)
  assert round(cfg.rounds * cfg.clients_per_round / cfg.num_clients) == 40
  p = cfg.privacy
  assert (p.enabled, p.clip, p.noise, p.noise_multiplier, p.delta) == (
      True, 0.1, "central", 2.15, 1e-5)
  assert (p.mask_ratio, p.bits, p.secagg) == (0.0, 0, False)
