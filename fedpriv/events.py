"""TensorBoard event files beside `metrics.jsonl` (through tensorboardX).

Every number in a round's metrics record (losses, accuracies, the privacy ledger's
epsilon and bits, FedQSN's protection metrics, seconds) becomes a scalar at step =
round. `metrics.jsonl` stays the record of truth: when a run starts or resumes, the
event files are rewritten from the lines it kept, so TensorBoard never shows a round
twice after a crash.

    tensorboard --logdir WORKDIR
"""
from __future__ import annotations

import math
import pathlib
import struct

from tensorboardX import SummaryWriter
from tensorboardX.proto import event_pb2

EVENTS_GLOB = "events.out.tfevents.*"


def scalars(record: dict) -> dict[str, float]:
  """The finite int/float entries of a metrics record, less its step ("round")."""
  out = {}
  for key, value in record.items():
    if key == "round" or isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    if math.isfinite(value):
      out[key] = float(value)
  return out


class EventLog:
  """Writes metrics records as TensorBoard scalars into one folder."""

  def __init__(self, path: pathlib.Path):
    self.path = pathlib.Path(path)
    self._writer = None

  def rebuild(self, records: list[dict]) -> None:
    """Replaces the folder's event files by ones holding exactly `records`."""
    self.close()
    for old in self.path.glob(EVENTS_GLOB):
      old.unlink()
    for record in records:
      self.write(record, flush=False)
    self.flush()

  def write(self, record: dict, flush: bool = True) -> None:
    if self._writer is None:
      self._writer = SummaryWriter(logdir=str(self.path), flush_secs=3600)
    step = int(record.get("round", 0))
    for key, value in scalars(record).items():
      self._writer.add_scalar(key, value, global_step=step)
    if flush:
      self.flush()

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def read_scalars(path: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """Every scalar in the folder's event files: `{tag: [(step, value), ...]}`.

  Reads the TFRecord framing (length, CRC, payload, CRC) directly, so reading needs
  neither TensorFlow nor TensorBoard.
  """
  out: dict[str, list[tuple[int, float]]] = {}
  for file in sorted(pathlib.Path(path).glob(EVENTS_GLOB)):
    data = file.read_bytes()
    pos = 0
    while pos + 12 <= len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      payload = data[pos + 12:pos + 12 + length]
      pos += 12 + length + 4
      event = event_pb2.Event.FromString(payload)
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out
