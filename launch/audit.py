"""Audits a config's update-privacy mechanism: measured epsilon lower bound vs the accountant.

    python -m launch.audit --config=launch/configs/fashion_mnist.py:private_mcmahan \
        [--trials=0] [--dim=4096] [--out=audit.json] [--config.privacy.clip=...]

Builds the experiment exactly as `launch.train` does (data, model, mechanism with its
calibrated noise), then plays the canary game of `fedpriv.privacy.audit` against the
real uplink: `trials` releases per world (0, the default: the fewest whose largest
measurable bound exceeds the claim by 1; fewer than the claim needs is refused with "no
power", since such an audit could never report a violation). With `--dim=N` the releases are of an N-
parameter stand-in model instead of the config's model (the mechanism keeps the
config's clip, bits, noise multiplier, cohort and secure aggregation, so the noise per
release is the same; only the conditional-rounding bound, which grows with the number of
kept coordinates, differs); `--dim=0` audits the config's model itself, which costs
cohort x parameters per release. Exit status 1 when the measured bound exceeds the
accountant's one-release epsilon (a privacy bug), 2 on bad flags.
"""
import dataclasses
import json
import sys

from absl import app, flags

from launch.cli import check_common, config_flag, parse_flags, refuse

_CONFIG = config_flag()
_TRIALS = flags.DEFINE_integer("trials", 0, "Releases per world (half pick the threshold); "
                               "0 = enough to measure above the claim.")
_DIM = flags.DEFINE_integer("dim", 4096, "Parameters of the stand-in model; 0 = the "
                            "config's model.")
_COHORT = flags.DEFINE_integer("cohort", 0, "Clients per release; 0 = the config's "
                               "clients_per_round.")
_ALPHA = flags.DEFINE_float("alpha", 0.05, "The bound holds with probability 1 - alpha.")
_OUT = flags.DEFINE_string("out", None, "Optional JSON file for the result.")


def main(argv):
  check_common(argv, _CONFIG, "launch/configs/fashion_mnist.py:private_mcmahan")
  if (0 < _TRIALS.value < 20 or _TRIALS.value < 0 or _DIM.value < 0 or _COHORT.value < 0
      or not 0 < _ALPHA.value < 1):
    refuse("need --trials >= 20 (or 0), --dim >= 0, --cohort >= 0 and 0 < --alpha < 1")
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from fedpriv import keys as keylib  # pylint: disable=import-outside-toplevel
  from fedpriv import train  # pylint: disable=import-outside-toplevel
  from fedpriv.config import Config, ConfigError  # pylint: disable=import-outside-toplevel
  from fedpriv.privacy import audit  # pylint: disable=import-outside-toplevel
  from fedpriv.privacy.mechanism import make_mechanism  # pylint: disable=import-outside-toplevel
  from fedpriv.privacy.uplink import PrivateUplink  # pylint: disable=import-outside-toplevel

  try:
    cfg = Config.from_dict(_CONFIG.value.to_dict())
    if not (cfg.privacy.enabled and cfg.privacy.noise != "none"):
      refuse("the config adds no noise (privacy.enabled and privacy.noise): nothing to audit")
    if cfg.client_sampling != "fixed":
      refuse("the audit plays releases of a fixed-size cohort (replace-one); run it with "
             "--config.client_sampling=fixed (e.g. the :private_mcmahan preset)")
    exp = train.build(cfg)
  except ConfigError as e:
    refuse(str(e))
  uplink = exp.algorithm.uplink
  mech = uplink.mechanism
  cohort = _COHORT.value or mech.cohort
  if _DIM.value:
    mech = make_mechanism(dataclasses.replace(cfg.privacy, target_epsilon=0.0,
                                              noise_multiplier=mech.noise_multiplier),
                          num_clients=mech.num_clients, cohort=mech.cohort,
                          rounds=mech.rounds, size=_DIM.value)
    uplink = PrivateUplink(mech, lambda flat: flat, cfg.seed)
    params = jnp.zeros((_DIM.value,), jnp.float32)
  else:
    params = exp.task.init(keylib.init_key(keylib.base_key(cfg.seed)))
  claim = audit.claimed_epsilon(mech)
  trials = _TRIALS.value or audit.trials_for_power(claim, _ALPHA.value, mech.config.delta)
  top = audit.max_measurable_epsilon(trials, _ALPHA.value, mech.config.delta)
  if not top > claim:
    refuse(f"no power: {trials} releases per world can measure at most epsilon {top:.2f}, "
           f"not above the claim {claim:.2f}; use --trials="
           f"{audit.trials_for_power(claim, _ALPHA.value, mech.config.delta)} or more (or 0)")
  print(f"auditing {cfg.privacy.noise} noise, z={mech.noise_multiplier:.4f}, clip "
        f"{mech.config.clip}, bits {mech.config.bits}, secagg {mech.config.secagg}, "
        f"{mech.size} parameters, {cohort} clients, {trials} releases per world "
        f"(largest measurable bound {top:.2f}, claim {claim:.2f})", flush=True)
  result = audit.audit(uplink, params, cohort=cohort, trials=trials,
                       seed=cfg.seed, alpha=_ALPHA.value)
  out = result.as_dict()
  out.update(noise=cfg.privacy.noise, noise_multiplier=mech.noise_multiplier,
             parameters=mech.size, cohort=cohort)
  print(f"measured epsilon >= {result.epsilon_lower_bound:.3f} (confidence "
        f"{1 - result.alpha:.0%}, TPR {result.tpr:.4f} at FPR {result.fpr:.4f}); accountant, "
        f"one release: {result.claimed_epsilon:.3f} at delta {result.delta:g}: "
        f"{'consistent' if result.consistent else 'VIOLATED'}")
  if _OUT.value:
    with open(_OUT.value, "w", encoding="utf-8") as f:
      json.dump({k: (float(v) if isinstance(v, np.floating) else v) for k, v in out.items()},
                f, indent=1)
  sys.exit(0 if result.consistent else 1)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
