"""What every launch script shares: the `--config` and `--workdir` flags, one-line
refusals with exit status 2, the exits of a training run, and running one run of a sweep
as a child process.

Importing this module defines no flag: a script calls `config_flag()` / `workdir_flag()`
at its top level, and a second call in the same process (two launch modules imported
together, as tests do) returns the flag the first defined instead of redefining it
(absl's DuplicateFlagError)."""
import signal
import subprocess
import sys
import threading

from absl import flags, logging
from ml_collections import config_flags


def _existing(name: str):
  """The holder of flag `name` if some module already defined it, else None."""
  if name in flags.FLAGS:
    return flags.FlagHolder(flags.FLAGS, flags.FLAGS[name])
  return None


def config_flag(help_text: str = "Experiment config file (launch/configs/*.py[:preset]).",
                ) -> flags.FlagHolder:
  """`--config=launch/configs/X.py[:preset]` (an ml_collections config file whose keys
  `--config.KEY=VALUE` overrides), defined once per process."""
  existing = _existing("config")
  if existing is not None:
    return existing
  return config_flags.DEFINE_config_file("config", None, help_text)


def workdir_flag(help_text: str = "Where metrics.jsonl and summary.json go.",
                 ) -> flags.FlagHolder:
  """`--workdir=DIR` (no default), defined once per process."""
  existing = _existing("workdir")
  if existing is not None:
    return existing
  return flags.DEFINE_string("workdir", None, help_text)


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


def claim_existing_workdir(workdir: str) -> None:
  """Refuses at once (exit 2) when a live process holds an existing workdir, before any
  data is loaded; the lock is then held until this process ends. (A new workdir is
  claimed when training starts: a bad config never creates it.)"""
  import os  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from fedpriv import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  if jax.process_index() == 0 and os.path.isdir(workdir):
    try:
      workdir_lib.claim(workdir)
    except workdir_lib.WorkdirError as e:
      refuse(str(e))


def _print(*args) -> None:
  """print, except that a closed stdout (the terminal or the sweep that read it has
  gone) does not stop the run: its lines go to the workdir's files anyway."""
  try:
    print(*args, flush=True)
  except BrokenPipeError:
    import os  # pylint: disable=import-outside-toplevel
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # also what is buffered


def run_experiment(experiment, workdir: str) -> dict:
  """`fedpriv.train.run` with the launch scripts' exits: a workdir or config that cannot
  be used exits 2 with one line; a run stopped by SIGTERM/SIGINT (after finishing its
  round and checkpointing) exits with `PREEMPTED_EXIT` (75), so that a scheduler or a
  script can tell "rerun me" from a failure."""
  # pylint: disable=import-outside-toplevel
  from fedpriv import train
  from fedpriv.config import ConfigError
  try:
    return train.run(experiment, workdir, log=_print)
  except (train.WorkdirError, ConfigError) as e:
    refuse(str(e))
  except train.Preempted as e:
    print(f"fedpriv: {e}; rerun the same command to continue", file=sys.stderr)
    sys.exit(train.PREEMPTED_EXIT)


def claim_folder(path: str) -> None:
  """Holds `path`'s lock for as long as this process runs (a sweep's output folder):
  a second sweep on the same folder is refused (exit 2, naming the first)."""
  from fedpriv import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  try:
    workdir_lib.claim(path)
  except workdir_lib.WorkdirError as e:
    refuse(str(e))


def _die_with_parent() -> None:
  """In the child, before exec: SIGTERM when the sweep dies (Linux's PR_SET_PDEATHSIG),
  so that a killed sweep leaves no run writing (and locking) its workdir behind."""
  try:
    import ctypes  # pylint: disable=import-outside-toplevel
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))
  except (OSError, AttributeError):
    pass


def run_child(cmd: list[str], log_path, echo: bool, env: dict) -> int:
  """Runs one run of a sweep: its output appended to `log_path` (a resumed run keeps the
  log of its earlier attempts) and echoed with an indent. SIGTERM/SIGINT to the sweep
  are passed on to the run once per signal (it finishes its round, checkpoints and
  exits with status 75); the run is in its own session, so a terminal's Ctrl-C reaches
  it only through the sweep. Returns the run's exit status."""
  with open(log_path, "a") as log:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True, preexec_fn=_die_with_parent)
    previous = {}
    if threading.current_thread() is threading.main_thread():
      for s in (signal.SIGTERM, signal.SIGINT):
        previous[s] = signal.signal(s, lambda signum, _: proc.send_signal(signum))
    try:
      for line in proc.stdout:
        log.write(line)
        log.flush()
        if echo:
          print("    " + line.rstrip(), flush=True)
      return proc.wait()
    finally:
      for s, handler in previous.items():
        signal.signal(s, signal.SIG_DFL if handler is None else handler)


def run_rows(commands: dict, workdir) -> None:
  """Runs each row's command (`name -> argv`) into `workdir/NAME` unless its summary.json
  exists; a preempted row stops the sweep with exit 75, a failed one is reported."""
  import os  # pylint: disable=import-outside-toplevel
  import pathlib  # pylint: disable=import-outside-toplevel
  from fedpriv.workdir import PREEMPTED_EXIT  # pylint: disable=import-outside-toplevel
  workdir = pathlib.Path(workdir)
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).resolve().parents[1]))
  for name, cmd in commands.items():
    if (workdir / name / "summary.json").exists():
      continue
    print("running", name, flush=True)
    rc = run_child(cmd, workdir / f"{name}.log", echo=False, env=env)
    if rc == PREEMPTED_EXIT:
      print(f"{name} stopped by a signal (checkpointed); rerun the same command", flush=True)
      sys.exit(PREEMPTED_EXIT)
    if rc:
      print(f"{name} failed ({rc}); see {workdir / (name + '.log')}", flush=True)


def commands_block(names, commands: dict) -> list[str]:
  """The rows' commands as a markdown bash block, from the repository root."""
  import shlex  # pylint: disable=import-outside-toplevel
  return (["", "Commands (from the repository root):", "", "```bash"] +
          [" ".join(shlex.quote(c) for c in ["python"] + commands[n][1:]) for n in names] +
          ["```"])
