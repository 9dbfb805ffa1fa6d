"""The two seams of a round: what a client receives (`Downlink`) and sends (`Uplink`).

Each is a `typing.Protocol` with one signature per method. A link may implement the
protocol structurally, or subclass it to inherit the no-op defaults and implement only
what it does (the plain uplink implements `encode` and `decode` alone):

    class MyUplink(links.Uplink):
      bits_per_param = 32.0
      def encode(self, result, key, context): ...
      def decode(self, total, params, key, context): ...

`FedAvg` checks its links with `check` when it is built, so a link that lacks a method
or takes other arguments is refused there, in one line, rather than deep in a trace.

How `FedAvg.apply` calls an uplink, once per round (`context` is never omitted):

    round_ctx = uplink.round_context(params, public_key, state.uplink)   # None: none
    message   = uplink.encode(result, key, (round_ctx, cohort.context row))  # per client
    mean      = uplink.decode(summed messages, params, key, (round_ctx, server_ctx))
    state, m  = uplink.update_state(state.uplink, summed messages, secret key)

and, on the host between sampling the cohort and the jitted round, when
`has_host_step` (secure aggregation's key agreement; `fedpriv.rounds` hides the split):

    cohort, server_ctx, info = uplink.prepare_round(cohort, rnd)
"""
from __future__ import annotations

import abc
import inspect
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # only for annotations: fedavg.py imports this module
  import jax

  from fedpriv.fedavg import ClientModel, ClientResult, Cohort


@runtime_checkable
class Downlink(Protocol):
  """Server -> client: the model a client trains from.

  Attributes:
    bits_per_param: bits a client receives per model parameter (for the ledger and
      summary.json).
  """
  bits_per_param: float

  @abc.abstractmethod
  def client_model(self, params, key: jax.Array) -> ClientModel:
    """What the client with PROXY stage key `key` receives of the global `params`."""


@runtime_checkable
class Uplink(Protocol):
  """Client -> server: encodes one client's result; decodes the sum over clients.

  Attributes:
    bits_per_param: bits a client sends per model parameter.
    has_host_step: True when `prepare_round` does host-side work that the jitted round
      needs (then `rounds.compile_round` runs it between sampling and the round).
  """
  bits_per_param: float
  has_host_step: bool = False

  @abc.abstractmethod
  def encode(self, result: ClientResult, key: jax.Array, context) -> Any:
    """One client's message (a pytree; messages are summed over clients).

    Args:
      result: the client's start and trained params, visibility and weight.
      key: the client's secret PRIVATIZE key.
      context: `(round_context(...), the client's row of cohort.context or None)`.
    """

  @abc.abstractmethod
  def decode(self, total, params, key: jax.Array, context) -> Any:
    """The mean update (pytree like `params`) from the summed messages.

    Args:
      total: the sum of the round's messages.
      params: the global model of the round.
      key: the server's secret SERVER_NOISE key.
      context: `(round_context(...), prepare_round's server context or None)`.
    """

  def init_state(self) -> Any:
    """The uplink's state before round 1 (`ServerState.uplink`); () when it has none."""
    return ()

  def round_context(self, params, key: jax.Array, state) -> Any:
    """Values shared by all clients of a round, from the public key `key`; None: none."""
    del params, key, state
    return None

  def update_state(self, state, total, key: jax.Array) -> tuple[Any, dict]:
    """The state after a round's summed messages (secret key `key`), and metrics."""
    del total, key
    return state, {}

  def kept_coordinates(self, round_context) -> Any:
    """Flat indices (into the raveled params) the clients send this round; None: all."""
    del round_context
    return None

  def prepare_round(self, cohort: Cohort, rnd: int) -> tuple[Cohort, Any, dict]:
    """The host step of round `rnd`: `(cohort with its per-client context, server
    context, info)`. The default has nothing to do."""
    del rnd
    return cohort, None, {}


# The positional arguments each method is called with (`self` aside).
_CALLS = {
    Downlink: {"client_model": ("params", "key")},
    Uplink: {"encode": ("result", "key", "context"),
             "decode": ("total", "params", "key", "context"),
             "init_state": (),
             "round_context": ("params", "key", "state"),
             "update_state": ("state", "total", "key"),
             "kept_coordinates": ("round_context",),
             "prepare_round": ("cohort", "rnd")},
}


def check(link, protocol: type) -> None:
  """Refuses `link` unless it has every member of `protocol` (`Downlink` or `Uplink`)
  and each method takes the protocol's arguments.

  Raises:
    TypeError: one line naming the link, what is missing or mismatched, and the fix.
  """
  name = type(link).__name__
  fix = f"subclass fedpriv.links.{protocol.__name__} for the no-op defaults"
  data = ("bits_per_param",) + (("has_host_step",) if protocol is Uplink else ())
  missing = [m for m in (*data, *_CALLS[protocol]) if not hasattr(link, m)]
  if missing:
    raise TypeError(f"{name} is not a {protocol.__name__}: it lacks {', '.join(missing)} "
                    f"({fix})")
  for method, args in _CALLS[protocol].items():
    fn = getattr(link, method)
    try:
      inspect.signature(fn).bind(*args)
    except TypeError:
      raise TypeError(f"{name}.{method}{inspect.signature(fn)} must take "
                      f"({', '.join(args)}) ({fix})") from None
    except ValueError:  # no signature to inspect (a builtin): trust it
      pass
