"""vla-client: talk to a ``vla serve`` policy server from a robot computer.

Needs numpy, msgpack and websockets only (no torch, no simulator): ``pip install ./client`` from a
clone of vla. The main ``vla`` package uses this very code for ``vla deploy server=...`` and its
server speaks the same wire format (:mod:`vla_client.protocol`).

- :class:`PolicyClient`: one connection, synchronous ``health()`` and ``infer(observation)``;
- :class:`RemoteInference`: the control loop's requester (``submit`` / ``poll`` in the background,
  reconnecting with backoff to a server that goes away, :class:`Reconnect`).
"""

from vla_client.client import PolicyClient, ServerError
from vla_client.protocol import ProtocolError, pack, unpack
from vla_client.remote import Reconnect, RemoteInference
from vla_client.requester import ChunkResult, InferenceLost, ThreadedInference

__version__ = "0.1.0"

__all__ = [
    "ChunkResult",
    "InferenceLost",
    "PolicyClient",
    "ProtocolError",
    "Reconnect",
    "RemoteInference",
    "ServerError",
    "ThreadedInference",
    "__version__",
    "pack",
    "unpack",
]
