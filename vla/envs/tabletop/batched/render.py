"""``BatchRenderer``: every camera of every world, ray traced by MuJoCo Warp, as uint8 torch tensors.

The renderer writes one packed 32-bit pixel per ray (blue in the low byte, then green, red, alpha);
unpacking is a reinterpretation of those bytes on the device, so images never visit the host.
Ray-traced images differ from the classic backend's rasterized ones (lighting, specular highlights,
edges): a policy should be evaluated on the renderer it was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vla.envs.tabletop.batched.runtime import on_device
from vla.envs.tabletop.batched.sim import WarpSim

RGB_BYTES = [2, 1, 0]  # red, green, blue within a little-endian packed pixel


class BatchRenderer:
    """Render ``cameras`` at ``height`` x ``width`` for all worlds of ``sim``."""

    def __init__(self, sim: WarpSim, cameras: Sequence[str], height: int, width: int) -> None:
        self.sim, self.cameras, self.height, self.width = sim, tuple(cameras), height, width
        self.context: Any = None
        if not self.cameras:
            return  # nothing to render (expert checks, benchmarks of physics alone)
        with on_device(sim.device):
            self.context = sim.mjw.create_render_context(
                sim.host_model,
                nworld=sim.num_worlds,
                cam_res=(width, height),
                render_rgb=True,
                render_depth=False,
                cam_active=list(self.cameras),
                use_textures=False,  # the scene has none
                use_shadows=False,  # as the classic renderer (shadowsize=0)
            )
        # The context lays the active cameras out in model order, whatever order they were named in.
        in_model_order = sorted(self.cameras, key=lambda name: sim.host_model.camera(name).id)
        offsets = dict(zip(in_model_order, (int(a) for a in self.context.rgb_adr.numpy()), strict=True))
        self._offsets = [offsets[camera] for camera in self.cameras]

    def render(self) -> dict[str, torch.Tensor]:
        """``{camera: uint8 (N, H, W, 3)}`` of the worlds' current state (bodies moved since the last
        call included: the scene's bounding volumes are refitted first)."""
        if self.context is None:
            return {}
        sim = self.sim
        with on_device(sim.device):
            sim.mjw.refit_bvh(sim.model, sim.data, self.context)
            sim.mjw.render(sim.model, sim.data, self.context)
        packed = sim.wp.to_torch(self.context.rgb_data)  # (N, total pixels) uint32
        pixels = packed.view(torch.uint8).reshape(sim.num_worlds, -1, 4)
        size = self.height * self.width
        return {
            camera: pixels[:, start : start + size, RGB_BYTES].reshape(-1, self.height, self.width, 3)
            for camera, start in zip(self.cameras, self._offsets, strict=True)
        }
