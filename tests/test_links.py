"""The declared link interfaces (fedpriv/links.py): every link class in the library
declares and satisfies its protocol, and FedAvg refuses a link that does not."""
from __future__ import annotations

import ast
import importlib
import pathlib

import jax
import optax
import pytest
from jax.flatten_util import ravel_pytree

from conftest import tiny_task
from fedpriv import keys as keylib
from fedpriv import links
from fedpriv.config import PrivacyConfig
from fedpriv.fedavg import FedAvg, PlainDownlink, PlainUplink
from fedpriv.fedqsn.aggregation import FedQSNUplink
from fedpriv.fedqsn.private_uplink import PrivateProxyUplink
from fedpriv.fedqsn.proxy import FedQSNDownlink
from fedpriv.fedqsn.units import dense_spec
from fedpriv.privacy.mechanism import make_mechanism
from fedpriv.privacy.uplink import PrivateUplink

ROOT = pathlib.Path(__file__).resolve().parents[1] / "fedpriv"


def _link_classes():
  """(module, class name, protocol) of every class in fedpriv that defines a link's
  methods (`encode` or `decode`, or `client_model`), found in the source."""
  found = []
  for path in sorted(ROOT.rglob("*.py")):
    if path.name == "links.py":
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ClassDef):
        methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        module = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        if {"encode", "decode"} & methods:
          found.append((module, node.name, links.Uplink))
        elif "client_model" in methods:
          found.append((module, node.name, links.Downlink))
  return found


def test_every_link_class_in_the_library_declares_its_protocol():
  found = _link_classes()
  names = {name for _, name, _ in found}
  assert {"PlainUplink", "PlainDownlink", "PrivateUplink", "PrivateProxyUplink",
          "FedQSNUplink", "FedQSNDownlink"} <= names, names
  for module, name, protocol in found:
    cls = getattr(importlib.import_module(module), name)
    # (issubclass does not work on protocols with data members; the MRO says it)
    assert protocol in cls.__mro__, f"{module}.{name} does not subclass {protocol}"


def _instances():
  task = tiny_task()
  shapes = jax.eval_shape(task.init, jax.random.key(0))
  flat, unravel = ravel_pytree(task.init(jax.random.key(0)))
  size = int(flat.shape[0])

  def private(**kw):
    mech = make_mechanism(PrivacyConfig(enabled=True, clip=1.0, **kw), num_clients=8,
                          cohort=4, rounds=2, size=size)
    return PrivateUplink(mech, unravel)

  down = FedQSNDownlink.make(dense_spec(shapes, head="head"), shapes, keylib.base_key(0),
                             p1=0.25, p2=0.25, bits=4, block_size=4)
  secagg = private(bits=8, secagg=True)
  return {
      "plain_down": PlainDownlink(), "fedqsn_down": down,
      "plain_up": PlainUplink(), "fedqsn_up": FedQSNUplink.make(down, "delta", 32),
      "private": private(), "adaptive": private(adaptive_clip=True, noise="central",
                                                noise_multiplier=1.0,
                                                adaptive_clip_count_stddev=1.0),
      "secagg": secagg, "proxy_secagg": PrivateProxyUplink.make(secagg, down),
  }


@pytest.mark.parametrize("name", ["plain_down", "fedqsn_down", "plain_up", "fedqsn_up",
                                  "private", "adaptive", "secagg", "proxy_secagg"])
def test_every_link_satisfies_its_protocol_and_fedavg_accepts_it(name):
  link = _instances()[name]
  protocol = links.Downlink if name.endswith("_down") else links.Uplink
  assert isinstance(link, protocol)
  links.check(link, protocol)  # members and call signatures
  kw = {"downlink" if protocol is links.Downlink else "uplink": link}
  FedAvg(task=tiny_task(), client_optimizer=optax.sgd(0.1), server_optimizer=optax.sgd(1.0),
         clients_per_round=4, local_epochs=1, batch_size=2, **kw)


def test_only_secure_aggregation_has_a_host_step_and_the_proxy_uplink_inherits_it():
  made = _instances()
  steps = {name: link.has_host_step for name, link in made.items()
           if not name.endswith("_down")}
  assert steps == {"plain_up": False, "fedqsn_up": False, "private": False,
                   "adaptive": False, "secagg": True, "proxy_secagg": True}
  # The no-op defaults: no round context, all coordinates, the cohort unchanged.
  plain = made["plain_up"]
  assert plain.round_context(None, None, plain.init_state()) is None
  assert plain.kept_coordinates(None) is None
  assert plain.prepare_round("cohort", 3) == ("cohort", None, {})
  assert plain.update_state((), None, None) == ((), {})


def _fedavg(**kw):
  return FedAvg(task=tiny_task(), client_optimizer=optax.sgd(0.1),
                server_optimizer=optax.sgd(1.0), clients_per_round=2, local_epochs=1,
                batch_size=2, **kw)


def test_fedavg_refuses_a_link_lacking_a_method_in_one_line():

  class NoDecode:  # structural, not a subclass: must have everything
    bits_per_param = 32.0
    has_host_step = False

    def encode(self, result, key, context):
      return result.delta

  assert not isinstance(NoDecode(), links.Uplink)
  with pytest.raises(TypeError, match=r"NoDecode is not a Uplink: it lacks decode, "
                                      r"init_state.*subclass fedpriv.links.Uplink"):
    _fedavg(uplink=NoDecode())

  class NoModel:
    bits_per_param = 32.0

  with pytest.raises(TypeError, match="NoModel is not a Downlink: it lacks client_model"):
    _fedavg(downlink=NoModel())


def test_fedavg_refuses_the_old_call_forms():

  class OldUplink(links.Uplink):  # decode without `context`
    bits_per_param = 32.0

    def encode(self, result, key, context):
      return result.delta

    def decode(self, total, params, key):
      return total

  with pytest.raises(TypeError, match=r"OldUplink.decode\(total, params, key\) must take "
                                      r"\(total, params, key, context\)"):
    _fedavg(uplink=OldUplink())

  class OldState(links.Uplink):  # round_context without the uplink's state
    bits_per_param = 32.0
    encode = OldUplink.encode

    def decode(self, total, params, key, context):
      return total

    def round_context(self, params, key):
      return None

  with pytest.raises(TypeError, match=r"OldState.round_context.*must take "
                                      r"\(params, key, state\)"):
    _fedavg(uplink=OldState())


def test_a_subclass_must_implement_encode_and_decode():

  class Half(links.Uplink):
    bits_per_param = 32.0

    def encode(self, result, key, context):
      return result.delta

  with pytest.raises(TypeError, match="abstract method.*decode"):
    Half()
