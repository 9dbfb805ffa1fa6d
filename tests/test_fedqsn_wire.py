"""The bit count of a proxy is the size of a real encoding of it, which decodes exactly."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fedpriv import keys as keylib
from fedpriv.fedqsn import wire
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.fedqsn.units import dense_spec, transformer_spec
from fedpriv.models.transformer import CharTransformer


def test_code_words_pack_levels_tightly():
  assert wire.code_word(2) == (3, 7)  # 5^3 = 125 < 128
  for bits in range(2, 9):
    g, w = wire.code_word(bits)
    base = 2 ** bits + 1
    assert base ** g <= 2 ** w < 2 * base ** g and w <= 64
    assert w / g < bits + 1  # better than one (b+1)-bit field per value
    assert w / g >= math.log2(base)


def _cnn_like():
  rng = np.random.default_rng(0)
  shapes = {"conv1": (3, 3, 2, 6), "conv2": (3, 3, 6, 10), "fc1": (40, 24), "fc2": (24, 5)}
  params = {k: {"kernel": rng.normal(size=s), "bias": rng.normal(size=s[-1:])}
            for k, s in shapes.items()}
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params), "fc2"


def _transformer():
  model = CharTransformer(vocab_size=11, max_len=6, dim=16, heads=2, depth=1)
  return model.init(jax.random.key(0), jnp.zeros((1, 6), jnp.int32))["params"]


@pytest.mark.parametrize("model", ["cnn", "transformer"])
@pytest.mark.parametrize("bits,block,variant,p1,p2", [
    (2, 8, "exact", 0.5, 0.25), (3, 5, "bernoulli", 0.3, 0.5), (4, 64, "exact", 0.0, 0.0),
    (8, 7, "bernoulli", 0.2, 0.2), (32, 64, "exact", 0.5, 0.5)])
def test_bit_count_equals_encoded_size_and_decoding_is_exact(model, bits, block, variant,
                                                             p1, p2):
  if model == "cnn":
    params, head = _cnn_like()
    spec = dense_spec(params, head)
  else:
    params = _transformer()
    spec = transformer_spec(params)
  downlink = FedQSNDownlink.make(spec, jax.eval_shape(lambda: params), keylib.base_key(1),
                                 p1=p1, p2=p2, client_mask=variant, bits=bits,
                                 block_size=block)
  build = jax.jit(lambda p, k: (downlink.client_model(p, k).params, downlink.client_keep(k)))
  for client in range(2):
    key = jax.random.key(100 + client)
    proxy, keep = build(params, key)
    counted = int(downlink.message_bits(keep))
    blob, nbits = wire.encode(proxy, keep, spec, bits, block)
    assert nbits == counted
    assert len(blob) == math.ceil(counted / 8)
    decoded, keep_back = wire.decode(blob, params, spec, bits, block)
    for g in keep:
      np.testing.assert_array_equal(keep_back[g], np.asarray(keep[g]) > 0)
    jax.tree.map(np.testing.assert_array_equal, decoded, jax.tree.map(np.asarray, proxy))
  if variant == "exact":  # the static figure is the exact per-client cost
    n = sum(x.size for x in jax.tree.leaves(params))
    assert downlink.bits_per_param == pytest.approx(counted / n)


def test_quantization_and_masking_shrink_the_message():
  params, head = _cnn_like()
  spec = dense_spec(params, head)
  shapes = jax.eval_shape(lambda: params)

  def cost(**kw):
    return FedQSNDownlink.make(spec, shapes, keylib.base_key(0), **kw).bits_per_param

  n = sum(x.size for x in jax.tree.leaves(params))
  units = sum(u for _, u in spec.groups)
  assert cost() == pytest.approx(32.0 + units / n)  # float32 everything + the bitmaps
  assert cost(bits=2, block_size=8) < cost(bits=4, block_size=8) < cost()
  assert cost(p1=0.5, p2=0.5) < cost(p1=0.5) < cost()


def test_upload_cost_is_the_same_layout_without_the_bitmaps():
  from fedpriv.fedqsn.aggregation import FedQSNUplink
  params, head = _cnn_like()
  spec = dense_spec(params, head)
  down = FedQSNDownlink.make(spec, jax.eval_shape(lambda: params), keylib.base_key(0),
                             p1=0.5, p2=0.5, bits=4, block_size=8)
  n = sum(x.size for x in jax.tree.leaves(params))
  units = sum(u for _, u in spec.groups)
  assert FedQSNUplink.make(down, "delta", 4).bits_per_param == pytest.approx(
      down.bits_per_param - units / n)
  assert FedQSNUplink.make(down, "delta", 32).bits_per_param > down.bits_per_param
