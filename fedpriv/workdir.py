"""What a run keeps on disk, and the rules that let it survive how runs really end.

- **One writer.** `claim(path)` takes an exclusive `flock` on `path/lock` for as long as
  the process lives (or until released); a second process is refused at once with the
  holder's pid and host. The kernel drops the lock when its holder dies, however it
  dies, so a lock left by a killed run is simply taken over.
- **Crash-safe files.** `config.json` identifies the run; `metrics.jsonl` gets one
  fsync-ed line per evaluated round; `checkpoints/` holds orbax checkpoints (written to a
  temporary folder and renamed into place) of the state and the driver's bookkeeping;
  `summary.json` is replaced atomically at the end.
- **Damaged checkpoints.** The newest checkpoint that restores is used; one that does
  not (truncated, missing an item, shapes of another version) is reported in one line and
  moved to `checkpoints.damaged/`; if none restores, the run is refused.
- **Continuing.** A config that differs only in `CONTINUABLE` keys (more rounds, another
  evaluation or checkpoint cadence) continues the run; the change is appended to
  `config_history.json`. Any other difference is refused.
- **Preemption.** `StopRequests` turns SIGTERM and SIGINT into a request to stop after
  the current round; the driver checkpoints and raises `Preempted`.
"""
from __future__ import annotations

import datetime
import fcntl
import json
import os
import pathlib
import shutil
import signal
import socket
import threading

import jax
import numpy as np

from fedpriv.events import EventLog

# Keys a run may change and still be continued in its workdir: none of them changes
# what any round computes.
CONTINUABLE = frozenset({"rounds", "eval_every", "checkpoint_every"})
# Exit status of a run stopped by SIGTERM/SIGINT after checkpointing (EX_TEMPFAIL:
# "try again"): distinct from success (0), failure (1) and refusal (2).
PREEMPTED_EXIT = 75


class WorkdirError(ValueError):
  """The workdir holds a run that this one cannot continue (another config, another
  live process, no restorable checkpoint)."""


class Preempted(Exception):
  """The run stopped after round `round` on a signal, with a checkpoint of that round."""

  def __init__(self, rnd: int, signame: str):
    super().__init__(f"stopped by {signame} after round {rnd}")
    self.round, self.signame = rnd, signame


# realpath -> [fd, holders]: a process may claim a workdir several times (the launch
# script early, the driver later); flock would refuse the second open of the same file.
_HELD: dict[str, list] = {}


def claim(path) -> "callable":
  """Takes the workdir's lock (creating the folder); returns the function that releases it.

  Raises:
    WorkdirError: another live process holds it (the message names it).
  """
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  key = os.path.realpath(path)
  if key in _HELD:
    _HELD[key][1] += 1
    return lambda: _release(key)
  fd = os.open(os.path.join(key, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
    os.close(fd)
    raise WorkdirError(f"{path} is in use by {holder}; one process writes a workdir: "
                       "wait for it, stop it, or use another workdir") from None
  since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} (since {since})\n".encode(), 0)
  _HELD[key] = [fd, 1]
  return lambda: _release(key)


def _release(key: str) -> None:
  held = _HELD.get(key)
  if held is None:
    return
  held[1] -= 1
  if held[1] == 0:
    del _HELD[key]
    os.close(held[0])  # closing the descriptor drops the flock


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def config_changes(old: dict, new: dict, defaults: dict | None = None) -> dict:
  """`key -> [old, new]` for every (dotted) key whose value differs. A key the old
  config lacks and the new one sets to its value in `defaults` is no change: an option
  added by a later fedpriv, whose default keeps the old behaviour."""
  a, b = _flat(old), _flat(new)
  d = _flat(defaults or {})
  return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
          if a.get(k) != b.get(k) and not (k not in a and k in d and b.get(k) == d[k])}


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


class Workdir:
  """A run's folder (see the module docstring). Only the writing process (process 0)
  has `write`; with several processes all of them share the checkpoint manager."""

  def __init__(self, path, cfg_dict: dict, write: bool, log=print,
               defaults: dict | None = None):
    self.path, self.write, self.log = pathlib.Path(path), write, log
    self.metrics_path = self.path / "metrics.jsonl"
    self.config_path = self.path / "config.json"
    self.history_path = self.path / "config_history.json"
    self.events = EventLog(self.path) if write else None  # TensorBoard, from metrics.jsonl
    self._release = claim(self.path) if write else (lambda: None)
    try:
      self._cfg = cfg_dict = json.loads(json.dumps(cfg_dict))  # tuples as JSON has them
      self.changes = {}
      if self.config_path.exists():
        old = json.loads(self.config_path.read_text())
        self.changes = config_changes(old, cfg_dict, json.loads(json.dumps(defaults or {})))
        fixed = [k for k in self.changes if k not in CONTINUABLE]
        if fixed:
          shown = ", ".join(f"{k}={self.changes[k][0]!r}" for k in fixed[:3])
          more = f" and {len(fixed) - 3} more" if len(fixed) > 3 else ""
          raise WorkdirError(
              f"{self.path} holds a run with another config ({shown}{more}); only "
              f"{', '.join(sorted(CONTINUABLE))} may change to continue it; use a new "
              "workdir (or delete it) to start a different run")
      self.manager = None
      if write or jax.process_count() > 1:
        import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(
            self.path.resolve() / "checkpoints",
            options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
    except BaseException:
      self._release()
      raise

  def close(self) -> None:
    if self.events is not None:
      self.events.close()
    if self.manager is not None:
      self.manager.close()
      self.manager = None
    self._release()

  @property
  def history(self) -> list:
    return json.loads(self.history_path.read_text()) if self.history_path.exists() else []

  def accept_config(self, after_round: int) -> list:
    """Writes the run's config once it is about to train (a run refused before its first
    round leaves no config behind) and records a continuing config's changes; returns
    the config history. A changed run's old summary is removed: the workdir no longer
    holds a finished run of this config."""
    if self.write:
      if self.changes:
        when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        history = self.history + [{"after_round": after_round, "changed": self.changes,
                                   "time": when}]
        _atomic_write(self.history_path, json.dumps(history, indent=1) + "\n")
        (self.path / "summary.json").unlink(missing_ok=True)
      if self.changes or not self.config_path.exists():
        _atomic_write(self.config_path, json.dumps(self._cfg, sort_keys=True) + "\n")
    self.changes = {}
    return self.history

  def restore_newest(self, state_template, check=None):
    """`(step, state, meta)` from the newest checkpoint that restores, or None if there
    is none. `check(step, state, meta)` may raise to reject a restored one.

    Raises:
      WorkdirError: checkpoints exist but none can be restored.
    """
    if self.manager is None:
      return None
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      try:
        state, meta = self._restore(step, state_template)
        if check is not None:
          check(step, state, meta)
        return step, state, meta
      except Exception as e:  # pylint: disable=broad-except
        # orbax and tensorstore raise many types (ValueError, OSError, KeyError, ...)
        # for truncated files, missing items and shapes of another version alike.
        self.log(f"fedpriv: checkpoint {step} in {self.path} cannot be restored "
                 f"({_one_line(e)}); moved to checkpoints.damaged/, trying an older one")
        self._set_aside(step)
    if steps:
      raise WorkdirError(f"no checkpoint in {self.path / 'checkpoints'} can be restored "
                         f"(tried rounds {', '.join(map(str, steps))}); not starting over "
                         "from round 1 over its metrics: use a new workdir")
    return None

  def _restore(self, step: int, state_template):
    ocp = self._ocp
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
    got = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
    leaves = jax.tree.leaves(got.state)
    treedef = jax.tree.structure(state_template)
    if len(leaves) != treedef.num_leaves:
      raise ValueError(f"{len(leaves)} arrays, the run's state has {treedef.num_leaves}")
    for got_leaf, want in zip(leaves, jax.tree.leaves(abstract)):
      if tuple(got_leaf.shape) != tuple(want.shape) or got_leaf.dtype != want.dtype:
        raise ValueError(f"an array of shape {tuple(got_leaf.shape)} {got_leaf.dtype}, the "
                         f"run's is {tuple(want.shape)} {want.dtype}")
    return jax.tree.unflatten(treedef, leaves), got.meta

  def _set_aside(self, step: int) -> None:
    if self.write:
      src = self.path / "checkpoints" / str(step)
      dst = self.path / "checkpoints.damaged" / str(step)
      if src.exists():
        dst.parent.mkdir(exist_ok=True)
        if dst.exists():
          shutil.rmtree(dst)
        os.replace(src, dst)
    self.manager.reload()

  def save(self, step: int, state, meta: dict) -> None:
    ocp = self._ocp
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    self.manager.wait_until_finished()

  def keep_metrics_through(self, rnd: int) -> None:
    """Drops metric lines of rounds after `rnd` (and any torn last line)."""
    if not self.write:
      return
    if not self.metrics_path.exists():
      self.events.rebuild([])
      return
    kept = []
    for line in self.metrics_path.read_text().splitlines():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        break
      if record.get("round", 0) <= rnd:
        kept.append(line)
    _atomic_write(self.metrics_path, "".join(l + "\n" for l in kept))
    self.events.rebuild([json.loads(l) for l in kept])

  def metrics(self, record: dict) -> None:
    if not self.write:
      return
    with open(self.metrics_path, "a") as f:
      f.write(json.dumps(record) + "\n")
      f.flush()
      os.fsync(f.fileno())
    self.events.write(record)

  def summary(self, record: dict) -> None:
    if self.write:
      self.events.flush()
      _atomic_write(self.path / "summary.json", json.dumps(record, indent=1) + "\n")


def _atomic_write(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class StopRequests:
  """While active, SIGTERM and SIGINT ask the run to stop after the current round
  instead of killing it; a second signal acts as it would have (kill, KeyboardInterrupt).

  With several processes every one must stop after the same round (the checkpoint is
  collective), so `requested()` agrees across processes (one small all-gather a round).
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.signum, self._previous = None, {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    self._restore_handlers()

  def _restore_handlers(self):
    for s, handler in self._previous.items():
      signal.signal(s, signal.SIG_DFL if handler is None else handler)
    self._previous = {}

  def __exit__(self, *exc):
    self._restore_handlers()

  def requested(self) -> str | None:
    """The name of the signal that asked to stop (any process's), or None."""
    signum = self.signum or 0
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      signum = int(np.max(multihost_utils.process_allgather(np.int32(signum))))
    return signal.Signals(signum).name if signum else None
