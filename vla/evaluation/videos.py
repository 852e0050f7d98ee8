"""MP4 videos of sampled episodes (front camera), named after what they show."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vla.evaluation.results import EpisodeResult


def video_name(result: EpisodeResult) -> str:
    """``<task>_seed<seed>_<phrasing>_<success|failure-cause>.mp4``, safe as a file name."""
    outcome = "success" if result.success else f"fail-{result.outcome}"
    raw = f"{result.task}_seed{result.seed}_{result.phrasing}_{outcome}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw) + ".mp4"


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float = 20) -> Path:
    """Encode uint8 (H, W, 3) frames as H.264 MP4 (imageio-ffmpeg); odd sizes are padded to even."""
    import imageio.v2 as imageio

    if not frames:
        raise ValueError(f"no frames to write to {path}")
    video = np.stack([np.asarray(f, dtype=np.uint8) for f in frames])
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video frames must be (H, W, 3) uint8, got {video.shape[1:]}")
    # yuv420p needs even sides.
    pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
    if pad_h or pad_w:
        video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # imageio-ffmpeg's bundled ffmpeg binary: no system ffmpeg or PyAV needed.
    imageio.mimwrite(
        path, video, format="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p", macro_block_size=1
    )
    return path


class VideoSampler:
    """Keeps up to ``count`` videos: half reserved for successes, half for failures, first come first kept.

    When one kind runs short (a policy that always succeeds), the first unpicked episodes of the other
    kind fill the remaining places at :meth:`finish`; at most ``count`` of them wait in memory.
    """

    def __init__(self, out_dir: str | Path, count: int, fps: float = 20) -> None:
        self.folder = Path(out_dir) / "videos"
        self.fps = fps
        self.left = count
        self.quota = {True: (count + 1) // 2, False: count // 2}
        self._spares: list[tuple[EpisodeResult, list[np.ndarray], float | None]] = []

    @property
    def wants_frames(self) -> bool:
        return self.left > 0

    def __call__(
        self, result: EpisodeResult, frames: list[np.ndarray], fps: float | None = None
    ) -> str | None:
        """Write ``result``'s video if its kind still has room; return its path relative to out_dir.

        ``fps`` is the env's control rate (real-time playback); the sampler's default otherwise.
        """
        if not frames or self.left <= 0:
            return None
        if self.quota[result.success] > 0:
            self.quota[result.success] -= 1
            return self._write(result, frames, fps)
        if len(self._spares) < self.left:
            self._spares.append((result, frames, fps))
        return None

    def finish(self) -> None:
        """Fill the places one kind left unused with kept spares (sets their ``video``)."""
        for result, frames, fps in self._spares:
            if self.left <= 0:
                break
            result.video = self._write(result, frames, fps)
        self._spares.clear()

    def _write(self, result: EpisodeResult, frames: list[np.ndarray], fps: float | None) -> str:
        self.left -= 1
        path = write_video(self.folder / video_name(result), frames, fps=fps or self.fps)
        return f"videos/{path.name}"
