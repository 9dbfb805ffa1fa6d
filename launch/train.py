"""Trains one federated experiment.

    python -m launch.train --config=launch/configs/fashion_mnist.py --workdir=DIR \
        [--config.rounds=3 --config.seed=1 ...]

A bad option is refused before any work starts: one line on stderr, exit status 2.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file "
                                          "(launch/configs/*.py[:preset]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where metrics.jsonl and summary.json go.")


def refuse(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  """absl's parser, but a bad flag exits with status 2 and one line, no usage dump."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    refuse(str(e).splitlines()[0])
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections' override parser raises these for unknown keys and bad types.
    refuse(f"bad flag: {str(e).strip(chr(34)).splitlines()[0]}")


def main(argv):
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep library INFO chatter off the console
  if len(argv) > 1:
    refuse(f"unexpected arguments: {' '.join(argv[1:])}")
  if _CONFIG.value is None:
    refuse("--config is required (e.g. --config=launch/configs/fashion_mnist.py)")
  if not _WORKDIR.value:
    refuse("--workdir is required")
  # Import after flag parsing: JAX reads XLA_FLAGS when it starts.
  from fedpriv.config import Config, ConfigError  # pylint: disable=import-outside-toplevel
  from fedpriv import train  # pylint: disable=import-outside-toplevel
  try:
    cfg = Config.from_dict(_CONFIG.value.to_dict())
    experiment = train.build(cfg)
  except ConfigError as e:
    refuse(str(e))
  train.run(experiment, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
