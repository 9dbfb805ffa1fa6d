"""Runs a privacy attack experiment.

    python -m launch.attack --config=launch/configs/attack.py[:inversion|:membership] \
        --workdir=DIR [--config.defenses=none,bits=4,eps=8 --config.batch_sizes=1,4 ...]

Inversion writes DIR/attack.json (one flat object per defense x local steps x batch
size: defense, psnr, ssim, ...), DIR/images/*.png and DIR/reconstructions.png;
membership writes DIR/membership.json and DIR/roc.png. Progress goes to stdout.

A bad option is refused before any work starts: one line on stderr, exit status 2.
"""
from absl import app

from launch.cli import check_common, config_flag, parse_flags, refuse, workdir_flag

_CONFIG = config_flag("Attack config file (launch/configs/attack.py[:preset]).")
_WORKDIR = workdir_flag("Where the attack's results and images go.")


def main(argv):
  check_common(argv, _CONFIG, "launch/configs/attack.py:inversion", _WORKDIR)
  # pylint: disable=import-outside-toplevel
  from fedpriv import attacks
  from fedpriv.attacks.config import AttackConfig
  from fedpriv.config import ConfigError
  try:
    cfg = AttackConfig.from_dict(_CONFIG.value.to_dict())
  except ConfigError as e:
    refuse(str(e))
  try:
    attacks.run(cfg, _WORKDIR.value, log=lambda line: print(line, flush=True))
  except ConfigError as e:
    refuse(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
