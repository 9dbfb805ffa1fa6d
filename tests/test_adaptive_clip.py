"""Adaptive clipping (Andrew, Thakkar, McMahan & Ramaswamy 2021): the bound tracks the
target quantile of update norms through the noisy count, the sum's noise multiplier is
raised so that the round is a Gaussian mechanism with the configured z (checked against
dp_accounting composing the two releases itself), the bound lives in the server state
and its checkpoints, and the refusals."""
from __future__ import annotations

import math

import dp_accounting as dpa
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_population, tiny_task
from fedpriv import train
from fedpriv.config import Config, ConfigError, FedQSNConfig, PrivacyConfig
from fedpriv.data.client_data import EvalData, FederatedDataset
from fedpriv.fedavg import ClientResult, FedAvg
from fedpriv.privacy import accounting, setup
from fedpriv.privacy.mechanism import make_mechanism
from fedpriv.privacy.uplink import PrivateUplink
from fedpriv.workdir import Workdir


def _uplink(clip, quantile, cohort, count_stddev=0.5, size=8, **kw):
  cfg = PrivacyConfig(enabled=True, clip=clip, adaptive_clip=True,
                      adaptive_clip_quantile=quantile, adaptive_clip_count_stddev=count_stddev,
                      **kw)
  mech = make_mechanism(cfg, num_clients=10 * cohort, cohort=cohort, rounds=10, size=size)
  return PrivateUplink(mech, lambda v: v)


def _track(uplink, norms, rounds, seed=0):
  """Runs `rounds` rounds of the bound's update on clients with update norms `norms`."""
  size = uplink.mechanism.size
  direction = jnp.ones(size) / math.sqrt(size)
  updates = jnp.asarray(norms, jnp.float32)[:, None] * direction

  @jax.jit
  def one_round(scale, key):
    ctx = uplink.round_context(None, jax.random.fold_in(key, 0), scale)
    def client(u, k):
      r = ClientResult(jnp.zeros(size), u, None, jnp.float32(1))
      return uplink.encode(r, k, (ctx, None))
    msgs = jax.vmap(client)(updates, jax.random.split(jax.random.fold_in(key, 1),
                                                      len(norms)))
    total = jax.tree.map(lambda x: x.sum(0), msgs)
    return uplink.update_state(scale, total, jax.random.fold_in(key, 2))

  scale = uplink.init_state()
  for r in range(rounds):
    scale, metrics = one_round(scale, jax.random.key(1000 * seed + r))
  return float(scale) * uplink.mechanism.config.clip, metrics


@pytest.mark.parametrize("quantile", [0.3, 0.8])
def test_the_bound_moves_to_the_target_quantile_of_update_norms(quantile):
  rng = np.random.default_rng(0)
  norms = np.exp(rng.normal(0.0, 0.5, size=100))  # log-normal, median 1
  want = float(np.quantile(norms, quantile))
  for start in (20.0 * want, want / 20.0):  # far above and far below
    up = _uplink(start, quantile, cohort=100)
    bound, metrics = _track(up, norms, rounds=120)
    assert abs(math.log(bound / want)) < 0.15, (start, bound, want)
    # the noisy fraction below the final bound is near the target
    assert abs(float(metrics["clip_fraction_below"]) - quantile) < 0.15


def test_the_sum_noise_is_raised_so_the_round_is_a_gaussian_with_multiplier_z():
  z, sigma_b, clip = 1.0, 2.0, 0.7
  for sampling in ("fixed", "poisson"):
    cfg = PrivacyConfig(enabled=True, clip=clip, noise="central", noise_multiplier=z,
                        adaptive_clip=True, adaptive_clip_count_stddev=sigma_b)
    mech = make_mechanism(cfg, num_clients=1000, cohort=50, rounds=10, size=100,
                          sampling=sampling, capacity=80 if sampling == "poisson" else 0)
    z_sum = (z ** -2 - (2 * sigma_b) ** -2) ** -0.5
    assert mech.sum_noise_multiplier == pytest.approx(z_sum)
    assert mech.central_sigma == pytest.approx(z_sum * clip)
    # dp_accounting composes the two releases itself: the sum (sensitivity 2C under
    # replace-one, C under add/remove) and the count of b - 1/2 (sensitivity 1 and 1/2).
    f = accounting.sensitivity_factor(mech)
    for k in (1, 7):
      acc = accounting.rdp_accountant(mech)
      acc.compose(dpa.SelfComposedDpEvent(dpa.ComposedDpEvent(
          [dpa.GaussianDpEvent(z_sum / f), dpa.GaussianDpEvent(sigma_b / (f / 2))]), k))
      direct = acc.get_epsilon(1e-5)
      assert accounting.server_epsilon(mech, k) == pytest.approx(direct, rel=1e-9)
    # the default sigma_b is the expected cohort / 20 (the paper's choice)
    default = make_mechanism(PrivacyConfig(enabled=True, noise="central", noise_multiplier=z,
                                           adaptive_clip=True),
                             num_clients=1000, cohort=50, rounds=10, size=100)
    assert default.count_stddev == pytest.approx(2.5)


def _dataset(pop, num_classes=3):
  test = EvalData(np.asarray(pop.x[0]), np.asarray(pop.y[0]), np.asarray(pop.mask[0]))
  return FederatedDataset("tiny", pop, test, num_classes, "classification",
                          tuple(f"c{i}" for i in range(pop.mask.shape[0])))


def test_the_bound_is_in_the_server_state_and_its_checkpoints(tmp_path):
  pop = tiny_population([8] * 10, seed=11)
  privacy = PrivacyConfig(enabled=True, clip=5.0, noise="central", noise_multiplier=0.5,
                          adaptive_clip=True, adaptive_clip_count_stddev=1.0,
                          adaptive_clip_lr=0.5)
  cfg = Config(num_clients=10, clients_per_round=5, rounds=3, checkpoint_every=1,
               privacy=privacy)
  task = tiny_task()
  uplink, report = setup.build(cfg, task, 10)
  algo = FedAvg(task=task, client_optimizer=optax.sgd(0.1), server_optimizer=optax.sgd(1.0),
                clients_per_round=5, local_epochs=1, batch_size=4, chunk_size=5,
                uplink=uplink)
  exp = train.Experiment(cfg, _dataset(pop), task, algo, [report])
  summary = train.run(exp, tmp_path, log=lambda *_: None)  # compiles once (asserted)
  final = summary["clip_bound_final"]
  # tiny updates are far below 5: the bound shrinks by exp(-0.5 (b - 1/2)) per round
  assert final < 5.0 * math.exp(-0.5 * 0.2 * 3)
  template = algo.init(task.init(jax.random.key(0)))
  wd = Workdir(tmp_path, cfg.to_dict(), write=True, log=lambda *_: None)
  try:
    step, state, _ = wd.restore_newest(template)
  finally:
    wd.close()
  assert step == 3
  assert float(state.uplink) * 5.0 == pytest.approx(final, rel=1e-6)
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert all('"clip_bound"' in l for l in lines)


def test_refusals():
  with pytest.raises(ConfigError, match="adaptive_clip: with secure aggregation"):
    PrivacyConfig(enabled=True, bits=8, secagg=True, adaptive_clip=True)
  with pytest.raises(ConfigError, match="adaptive_clip_quantile"):
    PrivacyConfig(enabled=True, adaptive_clip=True, adaptive_clip_quantile=1.0)
  with pytest.raises(ConfigError, match="adaptive_clip_lr"):
    PrivacyConfig(enabled=True, adaptive_clip=True, adaptive_clip_lr=0.0)
  with pytest.raises(ConfigError, match="adaptive_clip_count_stddev"):
    make_mechanism(PrivacyConfig(enabled=True, noise="central", noise_multiplier=2.0,
                                 adaptive_clip=True, adaptive_clip_count_stddev=0.5),
                   num_clients=100, cohort=10, rounds=1, size=10)
  with pytest.raises(ConfigError, match="adaptive_clip: is not supported with fedqsn"):
    Config(privacy=PrivacyConfig(enabled=True, adaptive_clip=True),
           fedqsn=FedQSNConfig(enabled=True, aggregation="delta"))
