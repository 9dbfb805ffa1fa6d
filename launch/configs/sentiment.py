"""Movie-review sentiment presets: fine-tuning pretrained all-MiniLM-L6-v2 (FedQSN's regime).

    --config=launch/configs/sentiment.py            (= :fedavg)
    --config=launch/configs/sentiment.py:fedavg     FedAvg fine-tuning of the whole model
    --config=launch/configs/sentiment.py:fedqsn     FedQSN proxies of it (p1 0.5, p2 0.2,
                                                    NF4 blocks of 64, delta aggregation),
                                                    evaluated every second round

The paper's recipe (its code's one traced configuration): an IID split over 25 clients,
5 per round, 10 rounds, 1 local epoch, full fine-tuning with AdamW (weight decay 0.01) and
a linear schedule (6% warm-up, decay to 0) that every client restarts with its fresh
optimizer each round. Sentences are cut at 48 word pieces; 20% of the corpus is the test
set and 10% the validation set.
"""
import ml_collections

from launch.configs import base
from launch.configs.shakespeare import fedqsn_group


def get_config(preset: str = "fedavg") -> ml_collections.ConfigDict:
  c = base.config()
  c.dataset = "sentiment"
  c.model = "minilm"
  c.num_clients = 25
  c.clients_per_round = 5
  c.rounds = 10
  c.batch_size = 16
  c.learning_rate = 5e-5
  c.client_optimizer = "adamw"
  c.weight_decay = 0.01
  c.lr_schedule = "linear"
  c.warmup_fraction = 0.06
  c.eval_batch_size = 256
  c.unroll = 1
  c.seq_len = 48
  if preset == "fedavg":
    pass
  elif preset == "fedqsn":
    c.fedqsn = fedqsn_group()
    c.fedqsn.server_fraction = 0.0  # the pretrained encoder is the server's asset
    c.fedqsn.pretrain_epochs = 0
    # The per-round proxy metrics replay the round's 5 clients and evaluate each proxy
    # before and after training on two sets of `eval_examples` sentences: on this 16M
    # parameter model that costs more than the round itself, so they run every second
    # round on 250 sentences.
    c.fedqsn.eval_examples = 250
    c.eval_every = 2
  else:
    raise ValueError(f"unknown sentiment preset {preset!r}; use fedavg or fedqsn")
  return c
