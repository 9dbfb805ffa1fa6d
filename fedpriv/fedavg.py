"""FedAvg / FedOpt (McMahan et al. 2017; Reddi et al. 2021) with clients on an array axis.

A round, as one pure function of (server state, population, base key):

  1. sample `clients_per_round` clients uniformly without replacement;
  2. each client receives its model from the downlink (the global model for plain
     FedAvg, a masked and quantized proxy for FedQSN), trains it with `local_train`
     and hands its delta to the uplink, which encodes the message the server will sum
     (the example-weighted delta for plain FedAvg; clipped, masked, quantized, noised
     integers for the private uplink);
  3. the messages are summed over clients (`cohort.map_reduce`, in chunks, psum-ed over
     devices), the uplink decodes the sum into a mean update, and the server optimizer
     applies it (SGD with learning rate 1 is FedAvg, Adam is FedAdam).

The downlink and uplink are the protocols of `fedpriv/links.py` (checked when a
`FedAvg` is built). Shapes never depend on which clients were sampled, so the round
compiles once for the whole run (`fedpriv/rounds.py`: `compile_round`, which also runs
an uplink's host step between sampling and the round).
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from fedpriv import keys as keylib
from fedpriv import links
from fedpriv.algorithms import Rule
from fedpriv.cohort import padded_cohort_size, sharded_map_reduce
from fedpriv.data.client_data import ClientData
from fedpriv.local import local_train, with_factors
from fedpriv.models.registry import Task
from fedpriv.schedule import client_batches, poisson_clients, sample_clients


class ServerState(NamedTuple):
  """The server's state between rounds (what a checkpoint holds).

  Attributes:
    params: the global model.
    opt_state: the server optimizer's state.
    round: rounds completed so far (int32 scalar).
    noise_seed: `[2]` uint32, the data of the secret base key from which DP noise and
      randomized rounding derive (`keys.secret_key`): secret, so never written anywhere
      but the checkpoint (which keeps a resumed run bit-identical).
  """
  params: Any
  opt_state: Any
  round: jax.Array
  extra: Any = ()   # the algorithm rule's state (SCAFFOLD's control variates)
  noise_seed: Any = None
  uplink: Any = ()  # the uplink's state (adaptive clipping's clip scale), () if none


class Cohort(NamedTuple):
  """The clients of one round, padded to a multiple of chunk size x devices.

  Attributes:
    client_ids: `[m]` int32 ids into the population (0 for padding).
    valid: `[m]` bool, False for padding entries (they contribute nothing).
    keys: `[m]` client keys.
    batches: optional `([m, steps, batch], [m, steps, batch])` fixed minibatch
      schedules (used by the pinned benchmark workload); None derives them from keys.
    context: optional per-client inputs of the uplink, `[m, ...]` (e.g. secure
      aggregation's mask seeds, made on the host by `uplink.prepare_round`).
  """
  client_ids: jax.Array
  valid: jax.Array
  keys: jax.Array
  batches: Any = None
  context: Any = None


class ClientModel(NamedTuple):
  """What a client receives from the downlink.

  Attributes:
    params: the model the client trains from.
    visible: optional pytree of 0/1 arrays shaped like `params`: the coordinates the
      client holds. Local training never changes the others (they stay as received,
      e.g. zero for FedQSN-masked units). None means everything is visible.
    factors: optional pytree broadcastable to `params`: the client's model computes
      with `params * factors` (FedQSN: per output column 0 or the mask scale, which is
      masking and scaling the unit's activation); local training differentiates
      through the product, so `params` stay in the server's coordinates. None: 1.
  """
  params: Any
  visible: Any = None
  factors: Any = None

  def effective(self, params=None):
    """The weights the client's model computes with (`params`: e.g. after training)."""
    return with_factors(self.params if params is None else params, self.factors)


class ClientResult(NamedTuple):
  """What the uplink encodes for one client.

  Attributes:
    start: the params the client received (`ClientModel.params`, in the server's
      coordinates).
    trained: the params after local training (same coordinates).
    visible: as in `ClientModel`.
    weight: the client's example count (0 for cohort padding).
  """
  start: Any
  trained: Any
  visible: Any
  weight: jax.Array

  @property
  def delta(self):
    return jax.tree.map(jnp.subtract, self.trained, self.start)


class PlainDownlink(links.Downlink):
  """Every client receives the global model itself (plain FedAvg)."""
  bits_per_param = 32.0

  def client_model(self, params, key) -> ClientModel:
    del key
    return ClientModel(params)


class PlainUplink(links.Uplink):
  """Clients send their example-weighted float32 delta; the server takes the mean."""
  bits_per_param = 32.0

  def encode(self, result: ClientResult, key, context):
    del key, context
    w = result.weight
    return {"delta": jax.tree.map(lambda d: w * d, result.delta), "weight": w}

  def decode(self, total, params, key, context):
    """Returns the mean update: the server optimizer applies its negation as a gradient."""
    del params, key, context
    denom = jnp.maximum(total["weight"], 1e-12)
    return jax.tree.map(lambda s: s / denom, total["delta"])


def freeze_invisible(visible) -> optax.GradientTransformation:
  """Zeroes updates outside `visible`, so hidden coordinates keep their received value."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, v: u * v.astype(u.dtype), updates, visible), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@dataclasses.dataclass(frozen=True)
class FedAvg:
  """Federated averaging with a pluggable downlink (server->client) and uplink.

  Attributes:
    task: model and loss.
    client_optimizer: optax transformation used for local steps.
    server_optimizer: optax transformation applied to the negated mean update.
    clients_per_round: cohort size (the expected size with Poisson sampling).
    local_epochs: passes over each client's data per round.
    batch_size: local minibatch size.
    chunk_size: clients vmapped together (memory grows with it, not with the cohort).
    unroll: unroll factor of the local-step scan.
    mesh: optional 1-D device mesh (axis "clients") to shard the cohort over.
    dropout: fraction of each round's sampled clients (drawn from the round's
      `DROPOUTS` server key) whose updates never arrive; secure aggregation simulates
      its own dropouts, after masking, in its host step.
    downlink: what a client receives (default: the global model).
    uplink: what a client sends and how the server decodes the sum.
    rule: what the algorithm adds to the round (algorithms.py: FedProx, SCAFFOLD).
    client_sampling: "fixed" (`clients_per_round` without replacement) or "poisson"
      (each client with probability clients_per_round / N; a variable cohort padded to
      `capacity` slots with a validity mask, so shapes stay static).
    capacity: Poisson only: the most clients a round holds (larger draws keep a
      random `capacity` of theirs).
    secret_cohorts: draw each round's cohort from the state's secret key
      (`ServerState.noise_seed`) instead of the seed. Update privacy sets it: its
      epsilon against observers rests on amplification by sampling, which holds only
      while the cohorts are secret, and the seed is written into every config.json.
      Shuffles, proxies and dropouts still come from the seed.
  """
  task: Task
  client_optimizer: optax.GradientTransformation
  server_optimizer: optax.GradientTransformation
  clients_per_round: int
  local_epochs: int
  batch_size: int
  chunk_size: int = 1
  unroll: int = 1
  mesh: Mesh | None = None
  dropout: float = 0.0
  downlink: links.Downlink = dataclasses.field(default_factory=PlainDownlink)
  uplink: links.Uplink = dataclasses.field(default_factory=PlainUplink)
  rule: Rule = dataclasses.field(default_factory=Rule)
  client_sampling: str = "fixed"
  capacity: int = 0
  secret_cohorts: bool = False

  def __post_init__(self):
    links.check(self.downlink, links.Downlink)
    links.check(self.uplink, links.Uplink)
    if self.client_sampling not in ("fixed", "poisson"):
      raise ValueError(f"client_sampling must be 'fixed' or 'poisson', got "
                       f"{self.client_sampling!r}")
    if self.poisson and (self.capacity < 1 or self.dropout):
      raise ValueError("poisson sampling needs capacity >= 1 and no dropout")

  @property
  def poisson(self) -> bool:
    return self.client_sampling == "poisson"

  @property
  def num_devices(self) -> int:
    return 1 if self.mesh is None else self.mesh.devices.size

  @property
  def cohort_capacity(self) -> int:
    """Real cohort slots before chunk padding."""
    return self.capacity if self.poisson else self.clients_per_round

  @property
  def padded_cohort(self) -> int:
    return padded_cohort_size(self.cohort_capacity, self.chunk_size, self.num_devices)

  def sampled_count(self, cohort: Cohort):
    """How many leading entries of `cohort` were sampled (dropouts included)."""
    if self.poisson:
      return jnp.sum(cohort.valid, dtype=jnp.int32)
    return self.clients_per_round

  def init(self, params, noise_key: jax.Array | None = None) -> ServerState:
    """The state before round 1.

    Args:
      params: the initial model.
      noise_key: base key of the DP noise and randomized rounding; default a fresh
        `keys.secret_key()` (from the OS). Pass `keys.simulation_noise_key(base)` only
        for a reproducible simulation: noise derived from the seed is not private.
    """
    if noise_key is None:
      noise_key = keylib.secret_key()
    return ServerState(params, self.server_optimizer.init(params), jnp.zeros((), jnp.int32),
                       self.rule.init(params), jax.random.key_data(noise_key),
                       self.uplink.init_state())

  def sample_cohort(self, base_key: jax.Array, rnd, num_clients: int,
                    noise_seed: jax.Array | None = None) -> Cohort:
    """The cohort of round `rnd` (1-based).

    Which clients are drawn comes from `(base_key, rnd)`, or with `secret_cohorts`
    from `(noise_seed, rnd)` (the state's secret key data, `ServerState.noise_seed`),
    by the same counters; the sampled clients' keys (shuffles, proxies) and dropouts
    always come from `(base_key, rnd)`.

    Raises:
      ValueError: `secret_cohorts` without `noise_seed`.
    """
    rkey = keylib.round_key(base_key, rnd)
    if self.secret_cohorts:
      if noise_seed is None:
        raise ValueError("this algorithm draws its cohorts from the state's secret key "
                         "(secret_cohorts): pass noise_seed=state.noise_seed")
      draw_from = keylib.round_key(jax.random.wrap_key_data(noise_seed), rnd)
    else:
      draw_from = rkey
    skey = keylib.server_key(draw_from, keylib.SAMPLE_CLIENTS)
    if self.poisson:
      ids, count = poisson_clients(skey, num_clients, self.clients_per_round / num_clients,
                                   self.capacity)
      return self.pad_cohort(ids, rkey, count=count)
    ids = sample_clients(skey, num_clients, self.clients_per_round)
    return self.pad_cohort(ids, rkey)

  def pad_cohort(self, ids: jax.Array, rkey: jax.Array, batches=None,
                 count=None) -> Cohort:
    """`ids` padded to `padded_cohort`; only the first `count` (default: all) are real."""
    pad = self.padded_cohort - ids.shape[0]
    valid = jnp.arange(self.padded_cohort) < (ids.shape[0] if count is None else count)
    gone = int(self.dropout * ids.shape[0])
    if gone:  # these sampled clients drop out: their updates never reach the server
      order = jax.random.permutation(keylib.server_key(rkey, keylib.DROPOUTS), ids.shape[0])
      valid = valid.at[order[:gone]].set(False)
    ids = jnp.concatenate([ids.astype(jnp.int32), jnp.zeros((pad,), jnp.int32)])
    if batches is not None and pad:
      batches = jax.tree.map(
          lambda b: jnp.concatenate([b, jnp.zeros((pad,) + b.shape[1:], b.dtype)]), batches)
    ckeys = jax.vmap(lambda c: keylib.client_key(rkey, c))(ids)
    return Cohort(ids, valid, ckeys, batches)

  def received_model(self, params, ckey) -> ClientModel:
    """What the client with key `ckey` receives from the downlink."""
    return self.downlink.client_model(params, keylib.stage_key(ckey, keylib.PROXY))

  def local_optimizer(self, received: ClientModel, rule_state=(), mine=()):
    """The optimizer of one client's local steps: the rule's transform (e.g. FedProx's
    proximal term), the client optimizer, and the freeze of invisible coordinates."""
    optimizer = self.client_optimizer
    extra = self.rule.client_transform(rule_state, mine, received.params)
    if extra is not None:
      optimizer = optax.chain(extra, optimizer)
    if received.visible is not None:
      optimizer = optax.chain(optimizer, freeze_invisible(received.visible))
    return optimizer

  def train_client(self, params, population, cid, ckey, batches=None, rule_state=()):
    """One client's work up to the upload: receive, train locally.

    The round (`client_update`) and everything that rebuilds a round's clients outside
    it (FedQSN's metrics and attacks, `fedqsn/replay.py`) call this one function.

    Returns:
      `(received ClientModel, trained params, (loss_sum, correct, count))`.
    """
    x, y, mask = population.x[cid], population.y[cid], population.mask[cid]
    if batches is None:
      batches = client_batches(keylib.stage_key(ckey, keylib.SHUFFLE), mask,
                               self.local_epochs, self.batch_size)
    received = self.received_model(params, ckey)
    mine = self.rule.client_inputs(rule_state, cid)
    optimizer = self.local_optimizer(received, rule_state, mine)
    # Vmapped clients (chunks > 1) compute every step anyway; skipping empty blocks
    # with `cond` pays off one client at a time.
    trained, stats = local_train(self.task, optimizer, received.params, x, y, *batches,
                                 unroll=self.unroll, factors=received.factors,
                                 skip_empty=self.chunk_size == 1)
    return received, trained, stats

  def client_update(self, shared, client):
    """One client's round; vmapped over the cohort by `map_reduce`."""
    params, population, round_context, rule_state, noise_rkey = shared
    cid, valid, ckey, batches, context = client
    mask = population.mask[cid]
    if batches is None:
      batches = client_batches(keylib.stage_key(ckey, keylib.SHUFFLE), mask,
                               self.local_epochs, self.batch_size)
    # A slot that holds no client (Poisson or chunk padding) or a client that drops out
    # trains on nothing: every output of such a slot is discarded below, and with its
    # steps empty it costs no training (see `local_train`).
    batches = (batches[0], batches[1] & valid)
    received, trained, (loss_sum, correct, count) = self.train_client(
        params, population, cid, ckey, batches, rule_state)
    mine = self.rule.client_inputs(rule_state, cid)
    # A client whose update is not finite (its model diverged, or finite weights whose
    # difference overflows) sends a zero update of weight 0 instead: it stays in the
    # round, so with secure aggregation its masks still cancel, and an uplink that counts
    # clients rather than examples (update privacy) keeps it in the count, which must
    # not depend on the client's data. Example-weighted uplinks leave it out.
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(t - s)) for t, s in
                                zip(jax.tree.leaves(trained), jax.tree.leaves(received.params))]))
    trained = jax.tree.map(lambda t, s: jnp.where(finite, t, s), trained, received.params)
    dropped = valid & ~finite
    weight = jnp.where(valid & finite, mask.sum().astype(jnp.float32), 0.0)
    result = ClientResult(received.params, trained, received.visible, weight)
    # The privatizer's randomness (rounding, noise) is secret: from the state's noise
    # key, by the same counters as the public key, never from the seed.
    pkey = keylib.stage_key(keylib.client_key(noise_rkey, cid), keylib.PRIVATIZE)
    message = self.uplink.encode(result, pkey, (round_context, context))
    steps = jnp.sum(jnp.any(batches[1], axis=-1), dtype=jnp.int32)  # steps with data
    rule_summed, rule_kept = self.rule.client_outputs(rule_state, mine, received.params,
                                                      trained, steps)
    # The message of a non-finite client (a zero update) still goes into the sum; its
    # algorithm-rule outputs (e.g. control variates) and metrics do not.
    message = jax.tree.map(lambda m: jnp.where(valid, m, jnp.zeros_like(m)), message)
    rule_summed = jax.tree.map(lambda m: jnp.where(valid & finite, m, jnp.zeros_like(m)),
                               rule_summed)
    vf = (valid & finite).astype(jnp.float32)
    zero_if_dropped = lambda v: jnp.where(valid & finite, v, 0.0)
    summed = {"message": message, "loss_sum": zero_if_dropped(loss_sum),
              "correct": zero_if_dropped(correct), "count": count * vf,
              "dropped_nonfinite": dropped.astype(jnp.int32), "rule": rule_summed}
    kept = {"train_loss": loss_sum / jnp.maximum(count, 1.0), "weight": weight,
            "valid": valid & finite, "rule": rule_kept}
    return summed, kept

  def apply(self, state: ServerState, population: ClientData, cohort: Cohort,
            base_key: jax.Array | None = None, server_context: Any = None):
    """Runs one round for a given cohort; returns `(new_state, metrics)`.

    The uplink's `round_context` is computed once per round from the public key
    `server_key(round, UPLINK_PUBLIC)` (None without `base_key`) and passed, with the
    client's `cohort.context` row, to `encode`, and with `server_context` (e.g. secure
    aggregation's rebuilt seeds, from `uplink.prepare_round`) to `decode`.
    """
    population = jax.tree.map(jnp.asarray, population)
    rnd = state.round + 1
    public = (None if base_key is None else
              keylib.server_key(keylib.round_key(base_key, rnd), keylib.UPLINK_PUBLIC))
    round_context = self.uplink.round_context(state.params, public, state.uplink)
    noise_rkey = keylib.round_key(jax.random.wrap_key_data(state.noise_seed), rnd)
    total, per_client = sharded_map_reduce(
        self.client_update,
        (state.params, population, round_context, state.extra, noise_rkey),
        tuple(cohort), chunk_size=self.chunk_size, mesh=self.mesh)
    skey = keylib.server_key(noise_rkey, keylib.SERVER_NOISE)
    mean_update = self.uplink.decode(total["message"], state.params, skey,
                                     (round_context, server_context))
    neg = jax.tree.map(jnp.negative, mean_update)
    updates, opt_state = self.server_optimizer.update(neg, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    extra = self.rule.server_update(state.extra, total["rule"], per_client["rule"],
                                    per_client["valid"], cohort.client_ids)
    count = jnp.maximum(total["count"], 1.0)
    metrics = {
        "train_loss": total["loss_sum"] / count,
        "train_accuracy": total["correct"] / count,
        "clients_dropped_nonfinite": total["dropped_nonfinite"],
        # Sampled clients that were not in the round (dropouts; padding is beyond them).
        "clients_dropped_out": (jnp.zeros((), jnp.int32) if self.poisson else
                                self.clients_per_round - jnp.sum(
                                    cohort.valid[:self.clients_per_round], dtype=jnp.int32)),
        "clients_sampled": jnp.asarray(self.sampled_count(cohort), jnp.int32),
        "client_train_loss": per_client["train_loss"],
        "client_weight": per_client["weight"],
        "client_ids": cohort.client_ids,
    }
    message = total["message"]
    if isinstance(message, dict) and "diagnostics" in message:
      # The uplink's summed counts (e.g. values beyond the quantizer's range): the
      # simulation's diagnostics, not part of what a client sends.
      metrics.update({f"uplink_{k}": v for k, v in message["diagnostics"].items()})
    # E.g. adaptive clipping: its noisy count moves the bound (a no-op for most uplinks).
    uplink_state, more = self.uplink.update_state(
        state.uplink, message, keylib.server_key(noise_rkey, keylib.UPLINK_STATE))
    metrics.update(more)
    return ServerState(params, opt_state, rnd, extra, state.noise_seed, uplink_state), metrics

  def run_round(self, state: ServerState, population: ClientData, base_key: jax.Array):
    """Samples the cohort of round `state.round + 1` and runs it."""
    cohort = self.sample_cohort(base_key, state.round + 1, population.mask.shape[0],
                                state.noise_seed)
    return self.apply(state, population, cohort, base_key)
