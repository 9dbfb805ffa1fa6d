"""The movie-review sentiment data: parsing, labels, splits, and the federated dataset."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import requires_sentiment
from fedpriv.config import Config, ConfigError
from fedpriv.data import load_dataset, sentiment
from fedpriv.data.fashion_mnist import DataNotFoundError


def test_reads_ground_truth_lines(tmp_path):
  f = tmp_path / sentiment.MOVIES
  f.write_bytes("1\t2.5\tA fine film .\r\n2\t-0.4\tDull\tand long\r\n3\t0\tMeh\r\n".encode())
  texts, ratings = sentiment.read_snippets(f)
  assert texts == ["A fine film .", "Dull\tand long", "Meh"]
  np.testing.assert_array_equal(ratings, [2.5, -0.4, 0.0])
  texts, y = sentiment.load_movies(str(tmp_path))
  assert texts == ["A fine film .", "Dull\tand long"] and y.tolist() == [1, 0]
  _, y5 = sentiment.load_movies(str(tmp_path), labels="5bin")
  assert y5.tolist() == [4, 2, 2]
  (tmp_path / "bad").write_text("1 2.0 no tabs\n")
  with pytest.raises(ValueError, match="bad:1"):
    sentiment.read_snippets(tmp_path / "bad")


def test_five_bins_cover_the_rating_scale():
  keep, y = sentiment.labels_from_ratings(np.array([-4, -2.1, -1, 0, 0.4, 1.9, 2.01, 4]), "5bin")
  assert keep.all() and y.tolist() == [0, 0, 1, 2, 2, 3, 4, 4]


def test_missing_data_says_how_to_install(tmp_path):
  with pytest.raises(DataNotFoundError, match="vaderSentiment==3.3.2"):
    sentiment.load_movies(str(tmp_path))


def test_split_is_disjoint_complete_and_seeded():
  tr, va, te = sentiment.split(1000, 0.2, 0.1, seed=4)
  assert (len(tr), len(va), len(te)) == (700, 100, 200)
  assert np.array_equal(np.sort(np.concatenate([tr, va, te])), np.arange(1000))
  again = sentiment.split(1000, 0.2, 0.1, seed=4)
  other = sentiment.split(1000, 0.2, 0.1, seed=5)
  assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
  assert not np.array_equal(te, other[2])
  # A prefix is a random sample, not the start of the file (positives come first there).
  assert 0.3 < (te[:100] < 500).mean() < 0.7


@requires_sentiment
def test_federated_sentiment_dataset():
  cfg = Config(dataset="sentiment", model="minilm", num_clients=25, clients_per_round=5,
               seq_len=48)
  ds = load_dataset(cfg)
  # 10,605 sentences less the 37 rated exactly 0.
  total = ds.info["train_examples"] + ds.info["test_examples"] + ds.info["validation_examples"]
  assert total == 10568
  assert ds.train.x.shape[:1] == (25,) and ds.train.x.shape[2:] == (48,)
  assert ds.train.x.dtype == np.int32 and ds.num_classes == 2
  assert ds.info["validation_examples"] == round(0.1 * 10568)
  assert ds.info["test_examples"] == round(0.2 * 10568)
  # Every row starts with [CLS] (id 101 before pruning) and padding stays 0.
  vocab = np.asarray(ds.vocab)
  assert vocab[0] == 0 and (vocab[ds.test.x[:, 0]] == 101).all()
  # No sentence is in two of train / validation / test.
  rows = lambda x: {r.tobytes() for r in np.asarray(x)}
  train = rows(ds.train.x[ds.train.mask])
  assert not train & rows(ds.test.x) and not train & rows(ds.validation.x)
  assert not rows(ds.test.x) & rows(ds.validation.x)
  # Labels are balanced-ish (5,242 positive, 5,326 negative in the corpus).
  assert 0.45 < ds.train.y[ds.train.mask].mean() < 0.55


@requires_sentiment
def test_server_share_is_held_out_of_the_clients():
  cfg = Config.from_dict(dict(dataset="sentiment", model="minilm", num_clients=5,
                              clients_per_round=2, seq_len=16, train_limit=400, test_limit=50,
                              fedqsn={"enabled": True, "server_fraction": 0.25}))
  ds = load_dataset(cfg)
  assert ds.info["server_examples"] == 100 and ds.info["train_examples"] == 300
  # Limits take random samples: both labels are in every small split.
  for y in (ds.test.y, ds.validation.y, ds.server.y, ds.train.y[ds.train.mask]):
    assert 0.25 < np.mean(y) < 0.75
  assert len(ds.validation.mask) == 50 and len(ds.test.mask) == 50
  rows = lambda x: {r.tobytes() for r in np.asarray(x)}
  assert not rows(ds.server.x) & rows(ds.train.x[ds.train.mask])


def test_config_refuses_bad_sentiment_options():
  with pytest.raises(ConfigError, match="config.model: sentiment needs 'minilm'"):
    Config(dataset="sentiment", model="cnn")
  with pytest.raises(ConfigError, match="config.seq_len"):
    Config(dataset="sentiment", model="minilm", seq_len=600)
  with pytest.raises(ConfigError, match="config.sentiment_labels"):
    Config(dataset="sentiment", model="minilm", sentiment_labels="stars")
  with pytest.raises(ConfigError, match="config.validation_fraction"):
    Config(dataset="sentiment", model="minilm", test_fraction=0.6, validation_fraction=0.4)
  with pytest.raises(ConfigError, match="config.model: image datasets need 'cnn'"):
    Config(dataset="fashion_mnist", model="minilm")


def test_fedavg_preset_runs_end_to_end_on_a_tiny_encoder(tmp_path):
  """The launch path with a tiny random BERT in HF layout (FEDPRIV_MINILM_DIR): its own
  tokenizer, the corpus (skipped if missing), vocabulary pruning, the linear schedule."""
  preset = "fedavg"
  import json  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel

  from conftest import ROOT, sentiment_available, write_tiny_minilm  # pylint: disable=import-outside-toplevel
  if not sentiment_available():
    pytest.skip("the sentiment corpus is missing (make install)")
  folder, _ = write_tiny_minilm(tmp_path / "tiny")
  env = dict(os.environ, PYTHONPATH=ROOT, FEDPRIV_MINILM_DIR=str(folder))
  workdir = tmp_path / "run"
  r = subprocess.run(
      [sys.executable, "-m", "launch.train", f"--config=launch/configs/sentiment.py:{preset}",
       f"--workdir={workdir}", "--config.num_clients=4", "--config.clients_per_round=2",
       "--config.rounds=1", "--config.train_limit=120", "--config.test_limit=40",
       "--config.eval_batch_size=20", "--config.seq_len=12"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["model"] == "minilm" and summary["dataset"] == "sentiment"
  assert 0 <= summary["test_accuracy"] <= 1


def _tiny_fedqsn_values(tmp_path, monkeypatch) -> dict:
  """`sentiment.py:fedqsn` as a dict, shrunk, with a tiny random encoder installed."""
  from conftest import sentiment_available, write_tiny_minilm  # pylint: disable=import-outside-toplevel
  from launch.configs import sentiment as presets  # pylint: disable=import-outside-toplevel
  if not sentiment_available():
    pytest.skip("the sentiment corpus is missing (make install)")
  folder, _ = write_tiny_minilm(tmp_path / "tiny")
  monkeypatch.setenv("FEDPRIV_MINILM_DIR", str(folder))
  values = presets.get_config("fedqsn").to_dict()
  values.update(num_clients=4, clients_per_round=2, train_limit=80, test_limit=20, seq_len=12)
  return values


def test_fedqsn_preset_builds_with_the_minilm_spec(tmp_path, monkeypatch):
  from fedpriv import train  # pylint: disable=import-outside-toplevel
  exp = train.build(Config.from_dict(_tiny_fedqsn_values(tmp_path, monkeypatch)))
  downlink = exp.algorithm.downlink
  assert [n for _, n in downlink.spec.groups] == [16] * 5  # embedding + 2 x (attn, ffn)
  assert downlink.bits_per_param < 32


def test_quantized_embeddings_cut_the_downlink_and_take_few_values(tmp_path, monkeypatch):
  """`fedqsn.quantize_embeddings`: the token and position tables travel as NF-b blocks
  (each block of a received table holds at most 2^b + 1 distinct values: the NF
  levels), the proxy costs
  fewer bits than with full-precision tables, and a model without tables is refused."""
  from fedpriv import keys as keylib  # pylint: disable=import-outside-toplevel
  from fedpriv import train  # pylint: disable=import-outside-toplevel
  from fedpriv.config import ConfigError  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  values = _tiny_fedqsn_values(tmp_path, monkeypatch)
  values["fedqsn"].update(bits=2, block_size=8)
  plain = train.build(Config.from_dict(values)).algorithm.downlink
  values["fedqsn"]["quantize_embeddings"] = True
  exp = train.build(Config.from_dict(values))
  downlink = exp.algorithm.downlink
  tables = {"encoder/word_embed", "encoder/pos_embed", "encoder/type_embed"}
  assert tables <= downlink.spec.quantized and not tables & plain.spec.quantized
  assert downlink.bits_per_param < plain.bits_per_param
  params = exp.task.init(jax.random.key(1))
  keep = downlink.client_keep(keylib.stage_key(jax.random.key(2), keylib.PROXY))
  received = np.asarray(downlink.build(params, keep)["encoder"]["word_embed"])
  original = np.asarray(params["encoder"]["word_embed"])
  assert not np.allclose(received, original)  # changed by the quantizer
  rows = received.shape[0] // 8 * 8
  blocks = received[:rows].reshape(-1, 8, received.shape[1])
  distinct = max(len(np.unique(blocks[b, :, c]))
                 for b in range(blocks.shape[0]) for c in range(blocks.shape[2]))
  assert distinct <= 2 ** 2 + 1
  cnn = Config.from_dict(dict(
      dataset="fashion_mnist", model="cnn", num_clients=4, clients_per_round=2,
      train_limit=80, test_limit=20,
      fedqsn=dict(enabled=True, bits=4, quantize_embeddings=True)))
  with pytest.raises(ConfigError, match="fedqsn.quantize_embeddings: model 'cnn' has no"):
    train.build(cnn)
