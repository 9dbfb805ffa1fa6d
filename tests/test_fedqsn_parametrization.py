"""FedQSN proxies train in the paper's parametrization: masks scale activations, not weights.

One client's round through fedpriv (downlink, local training, "delta" uplink, server SGD
with rate 1) must move the global model exactly as the same optimizer steps move a model
written by hand whose masked activations are multiplied by the mask vector (0 or the
mask scale s) while its weights stay at the server's scale: the tiny MLP of conftest
(mask after the hidden layer) and a one-block character transformer (masks on the
embedding output, the attention projection and the MLP projection, before the residual
adds). Under SGD a weight-scaled proxy would move s^2 times less, under Adam s times less,
so these comparisons fail for the old parametrization.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv.data.client_data import ClientData
from fedpriv.fedavg import FedAvg
from fedpriv.fedqsn import masks, nf_quant
from fedpriv.fedqsn.aggregation import FedQSNUplink
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.fedqsn.units import dense_spec, transformer_spec
from fedpriv.models.registry import Task
from fedpriv.models.transformer import CharTransformer
from fedpriv.schedule import client_batches

P1, P2 = 0.25, 0.5
SCALE = 1.0 / ((1.0 - P1) * (1.0 - P2))  # 8/3, written out rather than taken from fedpriv


class MaskedMLP(nn.Module):
  """conftest.TinyMLP with its hidden activation multiplied by `mask` (same params)."""
  mask: jax.Array
  num_classes: int = 3

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    h = nn.relu(nn.Dense(8, name="hidden")(x)) * self.mask
    return nn.Dense(self.num_classes, name="head")(h)


class MaskedBlock(nn.Module):
  dim: int
  heads: int
  attn_mask: jax.Array
  mlp_mask: jax.Array

  @nn.compact
  def __call__(self, x):
    t, hd = x.shape[-2], self.dim // self.heads
    h = nn.LayerNorm(name="ln1")(x)
    q, k, v = (nn.Dense(self.dim, name=n)(h).reshape(*h.shape[:-1], self.heads, hd)
               for n in ("query", "key", "value"))
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / jnp.sqrt(hd).astype(x.dtype)
    logits = jnp.where(jnp.tril(jnp.ones((t, t), bool)), logits, jnp.finfo(logits.dtype).min)
    att = jnp.einsum("...hqk,...khd->...qhd", jax.nn.softmax(logits, axis=-1), v)
    x = x + nn.Dense(self.dim, name="attn_out")(att.reshape(*x.shape[:-1], self.dim)) * self.attn_mask
    h = nn.gelu(nn.Dense(4 * self.dim, name="mlp_in")(nn.LayerNorm(name="ln2")(x)))
    return x + nn.Dense(self.dim, name="mlp_out")(h) * self.mlp_mask


class MaskedTransformer(nn.Module):
  """models.transformer.CharTransformer (depth 1) with FedQSN's masked activations."""
  vocab_size: int
  max_len: int
  dim: int
  heads: int
  masks: dict

  @nn.compact
  def __call__(self, tokens):
    t = tokens.shape[-1]
    x = nn.Embed(self.vocab_size, self.dim, name="embed")(tokens)
    pos = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_len, self.dim))
    x = (x + pos[:t]) * self.masks["embed"]
    x = MaskedBlock(self.dim, self.heads, self.masks["block0/attn_out"],
                    self.masks["block0/mlp_out"], name="block0")(x)
    return nn.Dense(self.vocab_size, name="head")(nn.LayerNorm(name="ln_f")(x))


def _tiny_transformer(masks_=None):
  kw = dict(vocab_size=11, max_len=6, dim=8, heads=2)
  if masks_ is None:
    return Task("tiny_tf", "next_token", CharTransformer(depth=1, **kw), (6,))
  return Task("ref_tf", "next_token", MaskedTransformer(masks=masks_, **kw), (6,))


def _token_population(n, examples, seed):
  rng = np.random.default_rng(seed)
  x = rng.integers(1, 11, size=(n, examples, 6)).astype(np.int32)
  y = np.concatenate([x[..., 1:], rng.integers(1, 11, size=(n, examples, 1))], -1)
  return ClientData(x, y.astype(np.int32), np.ones((n, examples), bool))


MODELS = {
    "mlp": (tiny_task, lambda p: dense_spec(p, head="head"),
            lambda act: Task("ref_mlp", "classification", MaskedMLP(act["hidden"]), (4,)),
            lambda: tiny_population([12, 12, 12], seed=5)),
    "transformer": (_tiny_transformer, transformer_spec, _tiny_transformer,
                    lambda: _token_population(3, 8, seed=6)),
}


def _reference_round(ref_task, optimizer, start, pop, cid, ckey, epochs, batch_size):
  """Plain optax steps on the hand-written activation-masked model (no fedpriv training)."""
  x, y, mask = (np.asarray(a[cid]) for a in pop)
  idx, valid = client_batches(keylib.stage_key(ckey, keylib.SHUFFLE), jnp.asarray(mask),
                              epochs, batch_size)
  params, state = start, optimizer.init(start)
  grad = jax.jit(jax.grad(lambda p, bx, by, bv: ref_task.mean_loss(p, bx, by, bv)[0]))
  for bi, bv in zip(np.asarray(idx), np.asarray(valid)):
    assert bv.any()  # equal-sized clients: every step is a real one
    g = grad(params, x[bi], y[bi], jnp.asarray(bv))
    updates, state = optimizer.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize("model,opt,bits", [
    ("mlp", "sgd", 32), ("mlp", "adam", 4), ("transformer", "sgd", 32),
    ("transformer", "adam", 4)])
def test_one_round_equals_the_same_steps_on_an_activation_masked_model(model, opt, bits):
  make_task, make_spec, make_ref, make_pop = MODELS[model]
  task = make_task()
  params = task.init(jax.random.key(0))
  spec = make_spec(params)
  optimizer = optax.sgd(0.5) if opt == "sgd" else optax.adam(0.02)
  down = FedQSNDownlink.make(spec, jax.eval_shape(lambda: params), keylib.base_key(1),
                             p1=P1, p2=P2, client_mask="exact", bits=bits, block_size=4)
  algo = FedAvg(task=task, client_optimizer=optimizer, server_optimizer=optax.sgd(1.0),
                clients_per_round=1, local_epochs=2, batch_size=4,
                downlink=down, uplink=FedQSNUplink.make(down, "delta", 32))
  pop = jax.tree.map(jnp.asarray, make_pop())
  base = keylib.base_key(2)
  new = jax.jit(algo.run_round)(algo.init(params), pop, base)[0].params

  cohort = algo.sample_cohort(base, 1, pop.mask.shape[0])
  cid, ckey = int(cohort.client_ids[0]), cohort.keys[0]
  keep = down.client_keep(keylib.stage_key(ckey, keylib.PROXY))
  assert all(0 < float(k.sum()) < k.shape[0] for k in keep.values())
  # What the paper sends: masked units' columns zeroed, kept weights (quantized) at the
  # server's scale; the scale only multiplies activations.
  start = nf_quant.nf_quantize(masks.apply_mask(params, spec, keep), spec, bits, 4)
  ref_task = make_ref({g: keep[g] * SCALE for g in keep})
  trained = _reference_round(ref_task, optimizer, start, pop, cid, ckey, 2, 4)
  visible = masks.visibility(params, spec, keep)
  want = jax.tree.map(lambda p, t, s, v: p + v * (t - s), params, trained, start, visible)
  if model == "transformer" and opt == "adam":
    # The key bias has zero gradient in exact arithmetic (softmax ignores a shift shared
    # by all keys), so Adam turns both sides' rounding noise into full-size steps.
    new["block0"]["key"]["bias"] = want["block0"]["key"]["bias"]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5), new, want)
  moved = max(float(jnp.abs(a - b).max()) for a, b in
              zip(jax.tree.leaves(new), jax.tree.leaves(params)))
  assert moved > 1e-2
