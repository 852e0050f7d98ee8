"""Decode the frames of one episode from a LeRobot video file with PyAV.

LeRobot v3.0 concatenates many episodes into one MP4 per camera; an episode is the time range
``[from_timestamp, to_timestamp)`` of that file. Decoding the range once, sequentially, is far cheaper
than LeRobotDataset's per-sample seek (which decodes from the previous key frame for every frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np


class VideoDecodeError(ValueError):
    """A video that cannot provide the frames asked for; the message names the file and timestamps."""


def decode_frames(path: str | Path, timestamps: Sequence[float], tolerance_s: float) -> np.ndarray:
    """Frames of ``path`` at ``timestamps`` (seconds, ascending) as uint8 (N, H, W, 3) RGB.

    Each timestamp takes the decoded frame nearest to it, which must lie within ``tolerance_s``;
    otherwise a :class:`VideoDecodeError` names the first timestamp that has no frame.
    """
    path = Path(path)
    if not timestamps:
        raise VideoDecodeError(f"{path}: no timestamps requested")
    wanted = np.asarray(timestamps, dtype=np.float64)
    first, last = float(wanted.min()), float(wanted.max())
    frames: list[np.ndarray] = []
    times: list[float] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            # Seek lands on the key frame at or before `first`; decode forward from there.
            container.seek(
                max(0, int((first - tolerance_s) / stream.time_base)), stream=stream, backward=True
            )
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                if frame.time >= first - tolerance_s:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    times.append(float(frame.time))
                if frame.time > last + tolerance_s:
                    break
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoDecodeError(f"{path}: cannot decode ({exc})") from exc
    if not frames:
        raise VideoDecodeError(f"{path}: no frame between {first:.4f}s and {last:.4f}s")
    decoded_times = np.asarray(times)
    nearest = np.abs(wanted[:, None] - decoded_times[None, :]).argmin(axis=1)
    error = np.abs(decoded_times[nearest] - wanted)
    if (error > tolerance_s).any():
        bad = int(np.argmax(error > tolerance_s))
        raise VideoDecodeError(
            f"{path}: no frame within {tolerance_s}s of timestamp {wanted[bad]:.4f}s "
            f"(nearest decoded frame at {decoded_times[nearest[bad]]:.4f}s)"
        )
    return np.stack([frames[i] for i in nearest])
