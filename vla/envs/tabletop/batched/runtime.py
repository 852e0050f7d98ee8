"""Warp and MuJoCo Warp, loaded on demand: the kernel cache, the device, and one stream with torch.

Nothing here is imported until a batched environment is built, so the tabletop suite (and the config
schema, which reads its options) never needs ``warp-lang`` or ``mujoco-warp``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

KERNEL_CACHE_ENV = "WARP_CACHE_PATH"
# Compiling the scene's kernels takes ~30 s on a CPU (~1 s from a warm cache): one persistent cache
# under the project's cache folder keeps tests and repeated runs fast.
DEFAULT_KERNEL_CACHE = Path.home() / ".cache" / "vla" / "warp"
MISSING_EXTRA = (
    "backend=warp needs MuJoCo Warp: install the project's 'warp' extra "
    "(pip install -c requirements.lock -e '.[warp]': mujoco-warp, warp-lang)"
)
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class SimDevice:
    """Where the worlds live: the Warp device name and the torch device sharing its memory."""

    warp: str
    torch: torch.device

    @property
    def is_cuda(self) -> bool:
        return self.torch.type == "cuda"


def load_warp() -> tuple[ModuleType, ModuleType]:
    """``(warp, mujoco_warp)``, initialized, with the kernel cache in :data:`DEFAULT_KERNEL_CACHE`
    unless ``WARP_CACHE_PATH`` names another; ImportError naming the extra when they are missing."""
    os.environ.setdefault(KERNEL_CACHE_ENV, str(DEFAULT_KERNEL_CACHE))
    try:
        import mujoco_warp
        import warp
    except ImportError as exc:
        raise ImportError(f"{MISSING_EXTRA} ({exc})") from exc
    # No start-up banner and no per-module load lines (a first build prints hundreds); warnings stay.
    warp.config.quiet = True
    warp.config.log_level = warp.LOG_WARNING
    warp.init()
    return warp, mujoco_warp


def resolve_sim_device(device: str) -> SimDevice:
    """``auto`` -> CUDA when torch and Warp both see a GPU, else the CPU; ``cuda`` without a GPU is
    an error that says so."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"device must be one of {DEVICES} (or cuda:<index>), got {device!r}")
    wp, _ = load_warp()
    has_cuda = torch.cuda.is_available() and wp.get_cuda_device_count() > 0
    if device == "auto":
        device = "cuda" if has_cuda else "cpu"
    if device == "cpu":
        return SimDevice("cpu", torch.device("cpu"))
    if not has_cuda:
        raise ValueError(f"device={device!r}, but neither torch nor Warp sees a CUDA device here")
    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    return SimDevice(f"cuda:{index}", torch.device("cuda", index))


@contextlib.contextmanager
def on_device(device: SimDevice) -> Iterator[None]:
    """Run the Warp launches of the block on ``device``, ordered with torch's work on it.

    On CUDA, Warp keeps its own stream (a CUDA graph cannot be captured on torch's default stream):
    it first waits for torch's current stream, and torch's stream waits for it afterwards, so kernels
    and torch operations on the same memory run in order without the host waiting for either.
    """
    wp, _ = load_warp()
    with wp.ScopedDevice(device.warp):
        if not device.is_cuda:
            yield
            return
        torch_stream = torch.cuda.current_stream(device.torch)
        warp_stream = wp.get_stream(device.warp)
        warp_stream.wait_stream(wp.stream_from_torch(torch_stream))
        try:
            yield
        finally:
            torch_stream.wait_stream(wp.stream_to_torch(warp_stream))
