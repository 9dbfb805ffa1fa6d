"""Every epsilon a config's run will report, without training it.

    python -m launch.privacy_claims --config=launch/configs/fashion_mnist.py:private \
        [--config.client_sampling=poisson ...]

Builds the experiment as `launch.train` does (data, model, the mechanism with its
calibrated noise), counts each client's participations over cohorts drawn as the run
draws them (a run with update privacy draws its cohorts from its own secret key, so
these are cohorts like the run's, not the run's: the run's summary.json has its own
count), and prints `accounting.claims`: against observers
who do not learn the cohorts, and against the server for one participation and for the
most participations of any client, each by RDP and PLD with its relation, sampling and
delta.
"""
from absl import app

from launch.cli import check_common, config_flag, parse_flags, refuse

_CONFIG = config_flag()


def main(argv):
  check_common(argv, _CONFIG, "launch/configs/fashion_mnist.py:private")
  import numpy as np  # pylint: disable=import-outside-toplevel
  from fedpriv import train  # pylint: disable=import-outside-toplevel
  from fedpriv.config import Config, ConfigError  # pylint: disable=import-outside-toplevel
  from fedpriv.privacy import accounting  # pylint: disable=import-outside-toplevel
  try:
    cfg = Config.from_dict(_CONFIG.value.to_dict())
    if not cfg.privacy.enabled:
      refuse("update privacy is off (privacy.enabled): no epsilon to report")
    exp = train.build(cfg)
  except ConfigError as e:
    refuse(str(e))
  report = next(h for h in exp.hooks if hasattr(h, "mechanism"))
  mech = report.mechanism
  report.on_resume(exp, None, cfg.rounds)  # participations over a whole run's cohorts
  counts = report.participations
  print(f"noise multiplier z = {mech.noise_multiplier:.4f}, {mech.num_clients} clients, "
        f"{cfg.client_sampling} sampling of {mech.cohort} per round (capacity "
        f"{mech.capacity}), {cfg.rounds} rounds; participations over cohorts drawn like the "
        f"run's{' (from a fresh secret key)' if exp.algorithm.secret_cohorts else ''}: "
        f"max {counts.max()}, "
        f"{int(np.sum(counts >= 2))} clients with 2 or more, {int(np.sum(counts == 0))} "
        "with none")
  for c in accounting.claims(mech, cfg.rounds, int(counts.max())):
    k = "" if c["participations"] is None else f", {c['participations']} participation(s)"
    print(f"{c['name']:20s} epsilon {c['epsilon']:8.3f} at delta {c['delta']:.3g}"
          f" [{c['relation']}; {c['accountant'].split()[0]}{k}; valid: {c['valid']}]")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
