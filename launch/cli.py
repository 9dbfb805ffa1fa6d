"""What every launch script shares: one-line refusals with exit status 2."""
import sys

from absl import flags, logging


def refuse(message: str) -> None:
  """Prints `error: message` on stderr and exits with status 2 (no traceback)."""
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


def check_common(argv, config, example: str, workdir=None) -> None:
  """What every launch script checks first: library INFO logs off (unless --verbosity
  was given), no stray arguments, `--config` given (`example` shows one) and, when the
  script takes one, `--workdir` given."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # keep library INFO chatter off the console
  if len(argv) > 1:
    refuse(f"unexpected arguments: {' '.join(argv[1:])}")
  if config.value is None:
    refuse(f"--config is required (e.g. --config={example})")
  if workdir is not None and not workdir.value:
    refuse("--workdir is required")
