"""The wire format shared by the policy server and its client: msgpack maps, numpy arrays as plain data.

An array travels as ``{"__ndarray__": True, "dtype": "<f4", "shape": [H, A], "bytes": b"..."}`` (never
pickle: decoding a message can only ever produce numbers, strings, lists, maps and arrays of the plain
numeric dtypes in :data:`ALLOWED_DTYPES`). Messages are maps with a ``type``:

client -> server
  ``{"type": "infer", "id": int, "observation": {key: array | str}}``
  ``{"type": "health"}``  (answered with the server's status and the policy's spec)

server -> client
  ``{"type": "chunk", "id": int, "actions": array (H, A) float32, "timing": {"decode_ms", "queue_ms",
  "infer_ms", "encode_ms", "batch_size"}}`` (``infer_ms``: the forward alone, timed in the server's
  inference thread; ``queue_ms``: decoded request to forward start, the hand-off to that thread included)
  ``{"type": "health", "status": "ok", "spec": {...}, "server": {...}}``
  ``{"type": "error", "id": int | None, "error": "what was wrong"}``

Decoding is bounded whatever the sender does: a message is at most ``max_bytes``; a list or map at
most :data:`MAX_CONTAINER_ITEMS` entries and a message at most :data:`MAX_CONTAINERS` lists and maps
(msgpack packs an empty map in one byte, which Python holds in about 64: unbounded, a 16 MiB message
would decode into a gigabyte); an array's size is computed exactly, never overflowing.

This module imports numpy and msgpack only. It is the one definition of the wire format: the robot-side
client (this package) and the server (``vla.deploy.server``) both use it.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

# Little-endian numeric dtypes only: no objects, strings or structured types can come off the wire.
ALLOWED_DTYPES = frozenset(
    {"|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8"}
)
ARRAY_MARKER = "__ndarray__"
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_CONTAINER_ITEMS = 1024  # entries of one list or map (observations have a handful of keys)
MAX_CONTAINERS = 256  # lists and maps in one message
_MAX_NDIM = 32  # numpy's own limit


class ProtocolError(ValueError):
    """A message that cannot be decoded; the text names the problem."""


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """The wire form of one array (what :func:`pack` does to every array it meets)."""
    return _encode(array)


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        array = np.ascontiguousarray(obj)
        if array.dtype.str not in ALLOWED_DTYPES:
            array = array.astype(array.dtype.newbyteorder("<")) if array.dtype.kind in "biuf" else array
        if array.dtype.str not in ALLOWED_DTYPES:
            raise TypeError(
                f"arrays of dtype {obj.dtype} cannot be sent; use one of {sorted(ALLOWED_DTYPES)}"
            )
        return {
            ARRAY_MARKER: True,
            "dtype": array.dtype.str,
            "shape": list(array.shape),
            "bytes": array.tobytes(),
        }
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode an object of type {type(obj).__name__}")


def _decode(obj: dict[Any, Any]) -> Any:
    if obj.get(ARRAY_MARKER) is not True:
        return obj
    dtype, shape, data = obj.get("dtype"), obj.get("shape"), obj.get("bytes")
    if dtype not in ALLOWED_DTYPES:
        raise ProtocolError(f"array dtype {dtype!r} is not allowed; use one of {sorted(ALLOWED_DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ProtocolError(f"array shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) > _MAX_NDIM:
        raise ProtocolError(f"array shape {shape!r:.80} has {len(shape)} dimensions, more than {_MAX_NDIM}")
    if not isinstance(data, bytes):
        raise ProtocolError(f"array bytes must be binary, got {type(data).__name__}")
    # Python integers: numpy's int64 product of an absurd shape wraps around ("needs -2 bytes").
    expected = math.prod(shape) * np.dtype(dtype).itemsize
    if len(data) != expected:
        raise ProtocolError(
            f"array of dtype {dtype} and shape {shape} needs {expected} bytes, got {len(data)}"
        )
    # A copy: frombuffer views are read-only, which torch.from_numpy warns about.
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


def pack(message: dict[str, Any]) -> bytes:
    """Encode a message (numpy arrays included)."""
    return msgpack.packb(message, default=_encode, use_bin_type=True)


def unpack(data: bytes | str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """Decode a message, or raise :class:`ProtocolError` naming what is wrong with it."""
    if isinstance(data, str):
        raise ProtocolError("text frames are not accepted: send msgpack as a binary frame")
    if len(data) > max_bytes:
        raise ProtocolError(f"message of {len(data)} bytes exceeds max_size of {max_bytes} bytes")
    containers = 0

    def counted(container: Any) -> Any:
        nonlocal containers
        containers += 1
        if containers > MAX_CONTAINERS:
            raise ProtocolError(f"a message holds at most {MAX_CONTAINERS} lists and maps")
        return _decode(container) if isinstance(container, dict) else container

    try:
        message = msgpack.unpackb(
            data, object_hook=counted, list_hook=counted, raw=False, strict_map_key=False,
            max_array_len=MAX_CONTAINER_ITEMS, max_map_len=MAX_CONTAINER_ITEMS, max_ext_len=0,
            max_str_len=max_bytes, max_bin_len=max_bytes,
        )  # fmt: skip
    except ProtocolError:
        raise
    except Exception as exc:  # msgpack raises several types for corrupt input
        raise ProtocolError(f"malformed msgpack: {type(exc).__name__}: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"a message must be a map, got {type(message).__name__}")
    if not isinstance(message.get("type"), str):
        raise ProtocolError("a message needs a string field 'type'")
    return message


def error_message(error: str, request_id: Any = None) -> bytes:
    """An encoded error reply."""
    return pack({"type": "error", "id": request_id if isinstance(request_id, int) else None, "error": error})
