"""On-disk layout of a trajectory store (Zarr v3) and the chunking that fits training reads.

::

    <store>/zarr.json            attributes["vla"]: format version, schema, fps, robot type,
                                 the commit record {num_episodes, num_frames} and the statistics
    <store>/data/<feature>       every episode concatenated along time (axis 0)
    <store>/meta/episode_ends    int64, exclusive end frame of each episode
    <store>/meta/length|success|seed
    <store>/meta/<text>/bytes+ends  instruction, env_id, extra (JSON of user fields): UTF-8 bytes
                                 concatenated, with the end offset of each episode's text

Images are compressed (Blosc LZ4 by default, zstd on request, with a CRC32C per chunk so corruption is detected, not read as
pixels) and chunked along time in blocks of about 1 MB, grouped into shards of 16 chunks: a
million 96x96 frames are a few hundred files, and a training read decodes one block. Small
blocks keep the part of a block read only for a window's history (the previous block of a
sampling group, see vla.data.sampler) small. Low-dimensional
arrays use long time chunks (about 1 MB). The root ``zarr.json`` is the commit point: zarr's local
store replaces it atomically, so arrays may run past the committed end (a crash mid-episode) and
readers never look there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec

from vla.data.schema import FeatureSpec

FORMAT_VERSION = 1
ATTRS_KEY = "vla"
TEXT_COLUMNS = ("instruction", "env_id", "extra")
NUMERIC_META: dict[str, str] = {
    "episode_ends": "int64",
    "length": "int64",
    "success": "bool",
    "seed": "int64",
}
NO_SEED = -1  # stored seed of an episode recorded without one
IMAGE_CHUNK_BYTES = 1 << 20
LOWDIM_CHUNK_BYTES = 1 << 20
CHUNKS_PER_SHARD = 16
# Image codecs by name. LZ4 decodes at memory speed, which keeps training reads cheap; zstd with
# bit-shuffling packs noisy camera images about 25% smaller but decodes several times slower.
IMAGE_CODECS: dict[str, dict[str, Any]] = {
    "lz4": {"cname": "lz4", "clevel": 5, "shuffle": "noshuffle"},
    "zstd": {"cname": "zstd", "clevel": 3, "shuffle": "bitshuffle"},
}


def _pow2_floor(x: float) -> int:
    return 1 << max(0, int(np.floor(np.log2(max(x, 1.0)))))


def time_chunk_frames(spec: FeatureSpec) -> int:
    """Frames per chunk of a feature: about 1 MB of images or of low-dimensional rows."""
    frame_bytes = spec.frame_bytes
    if spec.kind == "image":
        return min(256, _pow2_floor(IMAGE_CHUNK_BYTES / frame_bytes))
    return int(np.clip(_pow2_floor(LOWDIM_CHUNK_BYTES / frame_bytes), 1024, 65536))


def shard_frames(spec: FeatureSpec) -> int:
    """Frames per stored file of a feature (a shard of images, a chunk otherwise)."""
    return time_chunk_frames(spec) * (CHUNKS_PER_SHARD if spec.kind == "image" else 1)


def _compressor(spec: FeatureSpec, image_codec: str) -> BloscCodec:
    if spec.kind == "image":
        if image_codec not in IMAGE_CODECS:
            raise ValueError(f"image codec {image_codec!r} is not one of {sorted(IMAGE_CODECS)}")
        return BloscCodec(typesize=1, **IMAGE_CODECS[image_codec])
    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=np.dtype(spec.dtype).itemsize)


def create_feature_array(
    group: zarr.Group, name: str, spec: FeatureSpec, image_codec: str = "lz4"
) -> zarr.Array:
    """Create the empty, time-chunked array of feature ``name`` under ``group``."""
    frames = time_chunk_frames(spec)
    common: dict[str, Any] = {
        "name": name,
        "shape": (0, *spec.shape),
        "dtype": spec.dtype,
        "fill_value": 0,
        "serializer": BytesCodec(),
        "compressors": (_compressor(spec, image_codec), Crc32cCodec()),
    }
    if spec.kind == "image":
        return group.create_array(
            chunks=(frames, *spec.shape), shards=(shard_frames(spec), *spec.shape), **common
        )
    return group.create_array(chunks=(frames, *spec.shape), **common)


def create_meta_arrays(meta: zarr.Group) -> None:
    """Create the empty per-episode metadata arrays."""
    for name, dtype in NUMERIC_META.items():
        meta.create_array(name=name, shape=(0,), dtype=dtype, chunks=(65536,), fill_value=0)
    for name in TEXT_COLUMNS:
        column = meta.create_group(name)
        column.create_array(name="bytes", shape=(0,), dtype="uint8", chunks=(1 << 20,), fill_value=0)
        column.create_array(name="ends", shape=(0,), dtype="int64", chunks=(65536,), fill_value=0)


def append_rows(array: zarr.Array, start: int, rows: np.ndarray) -> None:
    """Write ``rows`` at ``start`` (at or past the committed end), growing the array to fit."""
    stop = start + len(rows)
    if array.shape[0] != stop:
        array.resize((stop, *array.shape[1:]))
    if len(rows):
        array[start:stop] = rows


def read_chunk_frames(array: zarr.Array) -> int:
    """The time length of one read unit (an inner chunk when the array is sharded)."""
    return int(array.chunks[0])


def stored_file_frames(array: zarr.Array) -> int:
    """The time length of one stored file (a shard when the array is sharded, else a chunk)."""
    return int(array.shards[0]) if array.shards is not None else int(array.chunks[0])
