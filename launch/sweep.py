"""Runs a grid of experiments described by a small sweep file.

    python -m launch.sweep --sweep=launch/sweeps/privacy_epsilon.py --out=runs/eps
    python -m launch.sweep --sweep=... --out=... --dry_run          # list the runs
    python -m launch.sweep --sweep=... --out=... --set=rounds=2     # extra override
    python -m launch.report --workdirs=runs/eps/* --out=runs/eps/report

A sweep file defines `get_sweep()` returning a dict:

    module     the launcher each run is (default "launch.train"; also "launch.attack"
               or any module taking --config/--workdir)
    config     the config file and preset, e.g. "launch/configs/fashion_mnist.py:private"
    overrides  config keys set in every run, e.g. {"rounds": 30}
    grid       key -> list of values; every combination is a run, named from its values
    runs       name -> overrides: explicit runs (added to the grid's, or instead of it)

Each run is `python -m MODULE --config=CONFIG --workdir=OUT/NAME --config.KEY=VALUE...`
in its own process, its output kept in OUT/NAME/log.txt and echoed with an indent; a
run whose workdir already holds its result (summary.json, attack.json or
membership.json) is skipped and an unfinished one is rerun in place (it resumes from its
checkpoint; its log is appended to), so an interrupted sweep resumes. OUT/sweep.json
lists every run with its command and status (written after each run). One sweep holds
OUT at a time: a second is refused. SIGTERM/SIGINT are passed on to the running run,
which checkpoints, and the sweep exits with status 75; a sweep killed outright takes its
running run down with it (SIGTERM, Linux), so no orphan keeps writing. Every run's config is built and validated before the
first one starts: a bad sweep file, flag or run exits with status 2 and one line.
"""
import importlib.util
import itertools
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time

from absl import app, flags

from fedpriv.workdir import PREEMPTED_EXIT
from launch.cli import claim_folder, parse_flags, refuse, run_child

FLAGS = flags.FLAGS


def define_flags():
  """The command line's flags (defined only when run as a script, so the functions
  here can be imported next to other launchers)."""
  flags.DEFINE_string("sweep", None, "Sweep file (launch/sweeps/*.py).")
  flags.DEFINE_string("out", None, "Folder for the runs' workdirs.")
  flags.DEFINE_multi_string("set", [], "KEY=VALUE config override for every run "
                            "(repeatable).")
  flags.DEFINE_list("only", [], "Run only these runs (names).")
  flags.DEFINE_bool("dry_run", False, "Print the runs' commands, run nothing.")
  flags.DEFINE_bool("quiet", False, "Do not echo the runs' output.")

RESULT_FILES = ("summary.json", "attack.json", "membership.json")



def load_sweep(path: str) -> dict:
  """Reads and checks a sweep file; raises ValueError with a one-line reason."""
  if not os.path.isfile(path):
    raise ValueError(f"--sweep: no such file {path!r}")
  spec = importlib.util.spec_from_file_location("fedpriv_sweep", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise ValueError(f"{path} defines no get_sweep()")
  sweep = module.get_sweep()
  known = {"module", "config", "overrides", "grid", "runs"}
  unknown = sorted(set(sweep) - known)
  if unknown:
    raise ValueError(f"{path}: unknown sweep keys {unknown} (known: {sorted(known)})")
  if not sweep.get("config"):
    raise ValueError(f"{path}: 'config' (file[:preset]) is required")
  if not sweep.get("grid") and not sweep.get("runs"):
    raise ValueError(f"{path}: needs a 'grid' or 'runs'")
  for key, values in sweep.get("grid", {}).items():
    if not isinstance(values, (list, tuple)) or not values:
      raise ValueError(f"{path}: grid[{key!r}] must be a non-empty list")
  return sweep


def _name_part(key: str, value) -> str:
  text = f"{key.split('.')[-1]}{value}"
  return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text)


def expand(sweep: dict) -> dict[str, dict]:
  """Run name -> its overrides (the sweep's common overrides first)."""
  common = dict(sweep.get("overrides", {}))
  runs = {}
  grid = sweep.get("grid", {})
  if grid:
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
      name = "_".join(_name_part(k, v) for k, v in zip(keys, values))
      runs[name] = {**common, **dict(zip(keys, values))}
  for name, overrides in sweep.get("runs", {}).items():
    if name in runs:
      raise ValueError(f"run {name!r} is defined twice")
    runs[name] = {**common, **overrides}
  return runs


def load_config(config_arg: str):
  """The ConfigDict a `--config=FILE[:PRESET]` flag names."""
  path, _, preset = config_arg.partition(":")
  if not os.path.isfile(path):
    raise ValueError(f"config file {path!r} does not exist")
  spec = importlib.util.spec_from_file_location("fedpriv_sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset) if preset else module.get_config()


def _coerce(old, value):
  """A `--set`/override value as the type of the key it replaces (strings from flags)."""
  if isinstance(old, str):
    return str(value)
  if not isinstance(value, str) or old is None:
    return value
  if isinstance(old, bool):
    if value not in ("True", "False", "true", "false"):
      raise ValueError(f"{value!r} is not a bool")
    return value in ("True", "true")
  return type(old)(value)


def check_run(sweep: dict, name: str, overrides: dict) -> dict:
  """Builds the run's config as its launcher would and validates it (no data loaded);
  returns it as a dict (as its summary.json will hold it).

  Raises:
    ValueError: with a one-line reason naming the run.
  """
  # pylint: disable=import-outside-toplevel
  from fedpriv.config import Config, ConfigError
  cfg = load_config(sweep["config"])
  try:
    for key, value in overrides.items():
      parent, leaf = cfg, key
      if "." in key:
        head, leaf = key.rsplit(".", 1)
        for part in head.split("."):
          parent = parent[part]
      if leaf not in parent:
        raise ValueError(f"unknown config key {key!r}")
      parent[leaf] = _coerce(parent[leaf], value)
    if sweep.get("module", "launch.train") == "launch.attack":
      from fedpriv.attacks.config import AttackConfig
      return AttackConfig.from_dict(cfg.to_dict()).to_dict()
    return Config.from_dict(cfg.to_dict()).to_dict()
  except (ConfigError, ValueError, KeyError, TypeError, AttributeError) as e:
    raise ValueError(f"run {name!r}: {str(e).strip(chr(34)).splitlines()[0]}") from None


def command(sweep: dict, name: str, overrides: dict, out: pathlib.Path) -> list[str]:
  module = sweep.get("module", "launch.train")
  return ([sys.executable, "-m", module, f"--config={sweep['config']}",
           f"--workdir={out / name}"] +
          [f"--config.{k}={v}" for k, v in overrides.items()])


def finished(workdir: pathlib.Path, wanted: dict | None = None) -> bool:
  """The run's result is there. A training run whose summary holds another config (more
  rounds: `--set=rounds=...`) is not finished: rerun, it continues in place (or its
  launcher refuses a config that cannot continue it)."""
  summary = workdir / "summary.json"
  if wanted is not None and summary.exists():
    done = json.loads(summary.read_text()).get("config")
    if done is not None and done != json.loads(json.dumps(wanted)):
      return False
  return any((workdir / f).exists() for f in RESULT_FILES)


def headline(workdir: pathlib.Path) -> str:
  """A short result line from what the run wrote."""
  path = workdir / "summary.json"
  if path.exists():
    s = json.loads(path.read_text())
    keys = ("test_accuracy", "epsilon", "uplink_bits_per_param", "protection_gap")
    return "  ".join(f"{k} {s[k]:.4g}" for k in keys
                     if isinstance(s.get(k), (int, float)))
  for name in ("attack.json", "membership.json"):
    if (workdir / name).exists():
      rows = json.loads((workdir / name).read_text())
      key = "psnr" if name == "attack.json" else "auc"
      return "  ".join(f"{r['defense']}: {key} {r[key]:.3g}" for r in rows)
  return ""


def _run(cmd: list[str], workdir: pathlib.Path, echo: bool) -> int:
  workdir.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH",
                                                                              ""))
  return run_child(cmd, workdir / "log.txt", echo, env)


def _write_record(out: pathlib.Path, record: list) -> None:
  tmp = out / "sweep.json.tmp"
  tmp.write_text(json.dumps(record, indent=1) + "\n")
  os.replace(tmp, out / "sweep.json")


def main(argv):
  if len(argv) > 1:
    refuse(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.sweep:
    refuse("--sweep is required (e.g. --sweep=launch/sweeps/privacy_epsilon.py)")
  if not FLAGS.out:
    refuse("--out is required")
  try:
    sweep = load_sweep(FLAGS.sweep)
    extra = {}
    for item in FLAGS.set:
      key, sep, value = item.partition("=")
      if not sep or not key:
        raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
      extra[key] = value
    runs = {name: {**o, **extra} for name, o in expand(sweep).items()}
    unknown = sorted(set(FLAGS.only) - set(runs))
    if unknown:
      raise ValueError(f"--only: unknown runs {unknown}; known: {sorted(runs)}")
    names = [n for n in runs if not FLAGS.only or n in FLAGS.only]
    configs = {}
    for name in names:  # refuse a bad run before any run starts
      configs[name] = check_run(sweep, name, runs[name])
  except (ValueError, SyntaxError, ImportError) as e:
    refuse(str(e).splitlines()[0])
  out = pathlib.Path(FLAGS.out)
  if not FLAGS.dry_run:
    claim_folder(out)  # one sweep per output folder
  record, failed = [], []
  t_sweep = time.perf_counter()
  for i, name in enumerate(names, 1):
    workdir = out / name
    cmd = command(sweep, name, runs[name], out)
    shown = " ".join(shlex.quote(c) for c in ["python"] + cmd[1:])
    entry = {"name": name, "overrides": runs[name], "workdir": str(workdir),
             "command": shown}
    if FLAGS.dry_run:
      print(shown)
      continue
    if finished(workdir, configs[name]):
      print(f"[{i}/{len(names)}] {name}: done before, skipped  {headline(workdir)}",
            flush=True)
      record.append({**entry, "status": "skipped"})
      continue
    print(f"[{i}/{len(names)}] {name}: {shown}", flush=True)
    t0 = time.perf_counter()
    rc = _run(cmd, workdir, echo=not FLAGS.quiet)
    seconds = time.perf_counter() - t0
    status = {0: "ok", PREEMPTED_EXIT: "preempted"}.get(rc, f"exit {rc}")
    print(f"[{i}/{len(names)}] {name}: {status} after {seconds:.0f}s  "
          f"{headline(workdir) if rc == 0 else 'see ' + str(workdir / 'log.txt')}",
          flush=True)
    record.append({**entry, "status": status, "seconds": seconds})
    _write_record(out, record)  # after every run: a killed sweep still has its record
    if rc == PREEMPTED_EXIT:
      print(f"sweep: stopped by a signal during {name} (checkpointed); rerun the same "
            "command to continue", flush=True)
      sys.exit(PREEMPTED_EXIT)
    if rc:
      failed.append(name)
  if FLAGS.dry_run:
    return
  _write_record(out, record)
  print(f"sweep: {len(names)} runs, {len(failed)} failed, "
        f"{time.perf_counter() - t_sweep:.0f}s; report: python -m launch.report "
        f"--workdirs={out}/* --out={out}/report")
  if failed:
    sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=parse_flags)
