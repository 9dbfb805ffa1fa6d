"""The private uplink inside FedAvg rounds: float path equals FedAvg, secure aggregation
decodes exactly what the plain quantized path decodes, masks share coordinates, the
driver compiles once, and the ledger counts the bits that were encoded."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

from conftest import tiny_population, tiny_task
from fedpriv import keys as keylib
from fedpriv import rounds, train
from fedpriv.config import Config, PrivacyConfig
from fedpriv.data.client_data import EvalData, FederatedDataset
from fedpriv.fedavg import FedAvg
from fedpriv.privacy import secagg, setup
from fedpriv.privacy.privatizers import kept_count

COHORT = 4


def make(privacy: PrivacyConfig | None, num_clients=8, rounds=3, cohort=COHORT):
  cfg = Config(num_clients=num_clients, clients_per_round=cohort, rounds=rounds,
               privacy=privacy or PrivacyConfig())
  task = tiny_task()
  kw = {}
  report = None
  if privacy is not None:
    kw["uplink"], report = setup.build(cfg, task, num_clients)
  algo = FedAvg(task=task, client_optimizer=optax.sgd(0.1), server_optimizer=optax.sgd(1.0),
                clients_per_round=cohort, local_epochs=1, batch_size=4, chunk_size=2, **kw)
  return cfg, algo, report


def one_round(algo, pop, base):
  # Both algorithms of a comparison draw their rounding and noise from the same key.
  state = algo.init(algo.task.init(jax.random.key(0)), noise_key=jax.random.key(9))
  round_fn = rounds.compile_round(algo, state, pop, base, 1, donate=False)
  new, _, _ = round_fn(state, pop, base)
  return state, new


def test_float_private_uplink_with_a_loose_clip_is_fedavg():
  pop = jax.tree.map(jnp.asarray, tiny_population([8] * 8, seed=0))  # equal weights
  base = keylib.base_key(1)
  _, plain, _ = make(None)
  _, private, _ = make(PrivacyConfig(enabled=True, clip=1e6))
  _, a = one_round(plain, pop, base)
  _, b = one_round(private, pop, base)
  chex.assert_trees_all_close(a.params, b.params, atol=1e-6)


def test_secure_aggregation_decodes_exactly_what_the_plain_quantized_sum_decodes():
  pop = jax.tree.map(jnp.asarray, tiny_population([8, 5, 8, 7, 8, 6, 8, 8], seed=1))
  base = keylib.base_key(2)
  q = dict(enabled=True, clip=0.5, bits=10, mask_ratio=0.3)
  _, quant, _ = make(PrivacyConfig(**q))
  _, sec, _ = make(PrivacyConfig(**q, secagg=True))
  _, a = one_round(quant, pop, base)
  _, b = one_round(sec, pop, base)
  # Same keys, same codes: the masked ring sum unmasks to the same integers.
  chex.assert_trees_all_equal(a.params, b.params)


def test_masking_moves_the_same_k_coordinates_for_everyone():
  pop = jax.tree.map(jnp.asarray, tiny_population([8] * 8, seed=2))
  _, algo, _ = make(PrivacyConfig(enabled=True, clip=10.0, mask_ratio=0.7))
  before, after = one_round(algo, pop, keylib.base_key(3))
  moved = sum(int((a != b).sum()) for a, b in zip(jax.tree.leaves(before.params),
                                                   jax.tree.leaves(after.params)))
  d = algo.uplink.mechanism.size
  assert moved == kept_count(d, 0.7)


def test_distributed_noise_behind_secagg_with_dropouts_adds_noise_of_the_planned_size():
  pop = jax.tree.map(jnp.asarray, tiny_population([8] * 8, seed=3))
  base = keylib.base_key(4)
  common = dict(enabled=True, clip=0.5, bits=12, secagg=True, dropout=0.25,
                secagg_threshold=0.6)
  _, quiet, _ = make(PrivacyConfig(**common))
  _, noisy, _ = make(PrivacyConfig(**common, noise="distributed", noise_multiplier=2.0))
  mech = noisy.uplink.mechanism
  assert mech.survivors == 3
  _, a = one_round(quiet, pop, base)
  _, b = one_round(noisy, pop, base)
  diff = np.concatenate([np.ravel(x - y) for x, y in zip(jax.tree.leaves(b.params),
                                                          jax.tree.leaves(a.params))])
  # Noise on the mean: z * Delta (levels) * step / survivors per coordinate; the
  # rounding differences between the two runs are far smaller.
  expect = 2.0 * mech.l2_bound / mech.survivors
  assert 0.7 * expect < diff.std() < 1.3 * expect


def _dataset(pop, num_classes=3):
  test = EvalData(np.asarray(pop.x[0]), np.asarray(pop.y[0]), np.asarray(pop.mask[0]))
  return FederatedDataset("tiny", pop, test, num_classes, "classification",
                          tuple(f"c{i}" for i in range(pop.mask.shape[0])))


def test_driver_compiles_once_and_the_ledger_counts_encoded_bits(tmp_path):
  pop = tiny_population([8] * 10, seed=4)
  privacy = PrivacyConfig(enabled=True, clip=0.5, bits=8, mask_ratio=0.5, secagg=True,
                          noise="distributed", noise_multiplier=1.0, dropout=0.25,
                          secagg_threshold=0.6)
  cfg, algo, report = make(privacy, num_clients=10, rounds=3)
  exp = train.Experiment(cfg, _dataset(pop), algo.task, algo, [report])
  summary = train.run(exp, tmp_path, log=lambda *_: None)  # assert_max_traces(n=1) inside
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 3 and all('"epsilon"' in l for l in lines)
  mech = algo.uplink.mechanism
  assert summary["delta"] == 1e-5 and np.isfinite(summary["epsilon"])
  # One client's encoded message: k ring elements below 2^ring_bits.
  cohort = algo.sample_cohort(keylib.base_key(0), 1, 10)
  cohort, server_ctx, info = algo.uplink.prepare_round(cohort, 1)
  state = algo.init(algo.task.init(jax.random.key(0)))
  from fedpriv.fedavg import ClientResult  # pylint: disable=import-outside-toplevel
  result = ClientResult(state.params, jax.tree.map(lambda p: p + 0.01, state.params), None,
                        jnp.float32(8))
  ctx = (algo.uplink.round_context(state.params, jax.random.key(1), state.uplink),
         jax.tree.map(lambda a: a[0], cohort.context))
  msg = algo.uplink.encode(result, jax.random.key(2), ctx)["vector"]
  assert msg.shape == (mech.keep,) and msg.dtype == jnp.uint32
  assert int(msg.max()) < 2 ** mech.ring_bits
  # The ledger: per sampled client, its vector (if it survived) + protocol bytes; the
  # protocol bytes are the lengths of the messages the protocol produced.
  g, share = mech.group - 1, secagg.SHARE_BYTES
  survivor_bytes = 4 + 64 + g * (12 + 8 + 2 * share + 16) + (g + 1) * (4 + share)
  dropout_bytes = 4 + 64 + g * (12 + 8 + 2 * share + 16)
  survivors, cohort_size = mech.survivors, mech.cohort
  up = (survivors * (msg.size * mech.ring_bits + 8 * survivor_bytes) +
        (cohort_size - survivors) * 8 * dropout_bytes) / cohort_size
  np.testing.assert_allclose(summary["uplink_bits_per_param"], up / mech.size, rtol=1e-12)
  assert summary["downlink_bits_per_param"] > 32.0


def test_plain_fedavg_ledger_is_32_bits_each_way(tmp_path):
  pop = tiny_population([8] * 6, seed=5)
  cfg, algo, report = make(PrivacyConfig(enabled=True, clip=1e6), num_clients=6, rounds=2)
  exp = train.Experiment(cfg, _dataset(pop), algo.task, algo, [report])
  summary = train.run(exp, tmp_path, log=lambda *_: None)
  assert summary["uplink_bits_per_param"] == 32.0
  assert summary["downlink_bits_per_param"] == 32.0


def _secagg_round(uplink, start, n=5):
  """One secure-aggregation round's encode (client i, ClientResult) and decode (sum)."""
  from fedpriv.fedavg import Cohort  # pylint: disable=import-outside-toplevel
  cohort = Cohort(jnp.arange(n, dtype=jnp.int32), jnp.ones((n,), bool), jnp.zeros((n,)), None)
  cohort, server_ctx, _ = uplink.prepare_round(cohort, 1)
  round_ctx = uplink.round_context(start, jax.random.key(5), uplink.init_state())

  def encode(i, result):
    ctx = (round_ctx, jax.tree.map(lambda a: a[i], cohort.context))
    return uplink.encode(result, jax.random.fold_in(jax.random.key(9), i), ctx)

  def decode(messages):
    total = jax.tree.map(lambda *m: sum(m[1:], m[0]), *messages)
    return uplink.decode(total, start, jax.random.key(11), (round_ctx, server_ctx))

  return encode, decode, round_ctx


def test_non_finite_and_overflowing_clients_under_secagg_send_a_masked_zero_update():
  """A client whose update is NaN, or +-Inf from finite weights of +-3e38 whose
  difference overflows, stays in the sum and the count with the encoding of a zero
  update: the pairwise masks still cancel and the decoded mean is exactly the one in
  which those clients sent zero updates (and, without noise, within rounding of the
  other clients' sum over all five)."""
  from fedpriv.fedavg import ClientResult  # pylint: disable=import-outside-toplevel
  task = tiny_task()
  start = task.init(jax.random.key(0))
  rng = np.random.default_rng(0)
  good = [jax.tree.map(lambda p: p + jnp.asarray(0.01 * rng.normal(size=p.shape), p.dtype),
                       start) for _ in range(3)]
  nan = jax.tree.map(lambda p: jnp.full(p.shape, jnp.nan, p.dtype), start)
  huge_start = jax.tree.map(lambda p: jnp.full(p.shape, -3e38, p.dtype), start)
  huge = ClientResult(huge_start, jax.tree.map(jnp.negative, huge_start), None,
                      jnp.float32(8))
  assert np.isinf(np.asarray(jax.tree.leaves(huge.delta)[0])).all()  # finite - finite
  result = lambda trained: ClientResult(start, trained, None, jnp.float32(8))
  for privacy in (dict(enabled=True, clip=0.5, bits=10, secagg=True, mask_ratio=0.3),
                  dict(enabled=True, clip=0.5, bits=10, secagg=True, noise="distributed",
                       noise_multiplier=0.5)):
    _, algo, _ = make(PrivacyConfig(**privacy), num_clients=10, cohort=5)
    uplink, mech = algo.uplink, algo.uplink.mechanism
    encode, decode, round_ctx = _secagg_round(uplink, start)
    with_bad = [encode(0, result(good[0])), encode(1, result(nan)),
                encode(2, result(good[1])), encode(3, huge), encode(4, result(good[2]))]
    with_zero = [encode(0, result(good[0])), encode(1, result(start)),
                 encode(2, result(good[1])), encode(3, result(start)),
                 encode(4, result(good[2]))]
    chex.assert_trees_all_equal(with_bad, with_zero)
    got = decode(with_bad)
    chex.assert_trees_all_equal(got, decode(with_zero))
    if not mech.noisy:  # the mean of the three good updates and two zeros, +- rounding
      flat, _ = ravel_pytree(got)
      others, _ = ravel_pytree(jax.tree.map(lambda a, b, c, s: (a - s) + (b - s) + (c - s),
                                            *good, start))
      kept = np.asarray(round_ctx[0])
      want = np.zeros(mech.size, np.float32)
      want[kept] = np.asarray(others)[kept] * mech.mask_scale / 5
      # Each client's rounding moves its codes by less than one level.
      assert float(np.abs(np.asarray(flat) - want).max()) <= mech.step + 1e-6
      assert float(np.abs(want).max()) > 5 * mech.step  # the comparison has signal


def test_rotated_uplink_runs_in_the_driver_and_reports_out_of_range_values(tmp_path):
  pop = tiny_population([8] * 10, seed=6)
  privacy = PrivacyConfig(enabled=True, clip=0.5, bits=6, rotation="hadamard",
                          rotation_sigmas=1.0)  # a narrow range: some values fall outside
  cfg, algo, report = make(privacy, num_clients=10, rounds=2)
  exp = train.Experiment(cfg, _dataset(pop), algo.task, algo, [report])
  summary = train.run(exp, tmp_path, log=lambda *_: None)  # assert_max_traces(n=1) inside
  mech = algo.uplink.mechanism
  assert mech.dim & (mech.dim - 1) == 0 and mech.dim >= mech.size
  assert summary["uplink_bits_per_param"] == pytest.approx(mech.dim * 6 / mech.size)
  frac = summary["quantizer_beyond_range_fraction"]
  # one sigma of a sub-Gaussian coordinate: a sizeable fraction, but far from all
  assert 0.0 < frac < 0.5
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert all('"quantizer_beyond_range_fraction"' in l for l in lines)


def test_rotation_behind_secure_aggregation_decodes_what_the_plain_rotated_sum_decodes():
  pop = jax.tree.map(jnp.asarray, tiny_population([8, 5, 8, 7, 8, 6, 8, 8], seed=7))
  base = keylib.base_key(8)
  q = dict(enabled=True, clip=0.5, bits=10, rotation="hadamard", rotation_sigmas=8.0)
  _, quant, _ = make(PrivacyConfig(**q))
  _, sec, _ = make(PrivacyConfig(**q, secagg=True))
  _, a = one_round(quant, pop, base)
  _, b = one_round(sec, pop, base)
  # Nothing beyond 8 sigmas here, so saturating and carrying in the ring agree exactly.
  chex.assert_trees_all_equal(a.params, b.params)
