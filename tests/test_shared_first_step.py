"""Vmapped clients start from one shared model: their first local step runs on
unbatched weights (one large batch), not as a per-client (grouped) computation."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.extend import core as jex_core

from fedpriv.local import local_train
from fedpriv.models import make_task
from fedpriv.schedule import client_batches


def _convs(jaxpr):
  """(feature_group_count, batch_group_count) of every convolution, sub-jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "conv_general_dilated":
      found.append((eqn.params["feature_group_count"], eqn.params["batch_group_count"]))
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (tuple, list)) else (v,)):
        if isinstance(sub, jex_core.ClosedJaxpr):
          found += _convs(sub.jaxpr)
        elif isinstance(sub, jex_core.Jaxpr):
          found += _convs(sub)
  return found


def _clients(n_clients, examples, batch, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=(n_clients, examples, 28, 28, 1)).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 10, size=(n_clients, examples)).astype(np.int32))
  mask = jnp.ones((n_clients, examples), bool)
  keys = jax.random.split(jax.random.key(seed + 1), n_clients)
  idx, valid = jax.vmap(lambda k, m: client_batches(k, m, 1, batch))(keys, mask)
  return x, y, idx, valid


def test_one_step_clients_vmapped_from_a_shared_model_form_no_grouped_convolution():
  task = make_task("cnn", "classification", 10, (28, 28, 1), conv_impl="xla")
  params = task.init(jax.random.key(0))
  x, y, idx, valid = _clients(3, 4, 4)  # one step of batch 4 per client
  opt = optax.sgd(0.05)
  vmapped = lambda skip, axes=None: jax.vmap(
      lambda p, *c: local_train(task, opt, p, *c, skip_empty=skip)[0],
      in_axes=(axes, 0, 0, 0, 0))
  shared = jax.make_jaxpr(vmapped(False))(params, x, y, idx, valid)
  convs = _convs(shared.jaxpr)
  assert convs, "no convolution found: the check would pass vacuously"
  assert all(c == (1, 1) for c in convs), convs
  # The check can fail: clients that start from different models (batched weights), or
  # a `cond` with a batched predicate (which batches its operands), do form grouped
  # convolutions with XLA's convolution under vmap.
  own = jax.tree.map(lambda a: jnp.stack([a] * 3), params)
  for grouped in (jax.make_jaxpr(vmapped(False, 0))(own, x, y, idx, valid),
                  jax.make_jaxpr(vmapped(True))(params, x, y, idx, valid)):
    assert any(c != (1, 1) for c in _convs(grouped.jaxpr))


def test_vmapped_clients_from_a_shared_model_equal_each_client_alone():
  task = make_task("cnn", "classification", 10, (28, 28, 1), conv_impl="im2col")
  params = task.init(jax.random.key(0))
  x, y, idx, valid = _clients(3, 12, 4, seed=2)  # three steps per client
  valid = valid.at[1, 1:].set(False)             # client 1: one real step
  valid = valid.at[2].set(False)                 # client 2: an empty slot
  opt = optax.adam(1e-3)
  for unroll in (1, 2):
    one = lambda p, *c, u=unroll, s=True: local_train(task, opt, p, *c, unroll=u,
                                                       skip_empty=s)
    together, stats = jax.jit(jax.vmap(lambda p, *c: one(p, *c, s=False),
                                       in_axes=(None, 0, 0, 0, 0)))(params, x, y, idx, valid)
    for c in range(3):
      alone, alone_stats = jax.jit(one)(params, x[c], y[c], idx[c], valid[c])
      chex.assert_trees_all_close(jax.tree.map(lambda a, c=c: a[c], together), alone,
                                  rtol=1e-5, atol=1e-6)
      chex.assert_trees_all_close(jax.tree.map(lambda a, c=c: a[c], stats), alone_stats,
                                  rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_equal(jax.tree.map(lambda a: a[2], together), params)
