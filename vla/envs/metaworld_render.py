"""Fast, upright camera images of a Meta-World scene on the CPU.

Two facts from the field notes drive this module:

- MuJoCo's defaults (a 4096^2 shadow map, reflections, multisampling) make llvmpipe rendering of a
  Meta-World scene take 200-350 ms per frame; switching shadows, reflections and offscreen
  multisampling off before the first render brings it to about 20 ms.
- Meta-World's ``corner*`` cameras are mounted upside down, so their raw images are rotated by
  180 degrees. Rather than keeping a list of such cameras we rotate every image whose camera's
  "up" axis points below the horizon, which also covers cameras added later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must be set before mujoco creates a context

import mujoco  # noqa: E402


def apply_fast_render_settings(model: mujoco.MjModel) -> None:
    """Switch off shadows, reflections and offscreen multisampling (must precede the first render)."""
    model.light_castshadow[:] = 0
    model.mat_reflectance[:] = 0
    model.vis.quality.offsamples = 0


def camera_is_upside_down(data: mujoco.MjData, camera_id: int) -> bool:
    """Whether ``camera_id``'s image-up axis (the camera frame's y axis) points below the horizon."""
    up_axis_world = data.cam_xmat[camera_id].reshape(3, 3)[:, 1]
    return bool(up_axis_world[2] < 0.0)


class CameraRig:
    """Renders a fixed set of named cameras of one model at one image size.

    ``cameras`` maps the name a feature uses (``front``) to the MuJoCo camera (``corner2``). The
    renderer, and with it the GL context, is created on the first :meth:`render` call, so building
    an environment (e.g. to read its spaces) never touches GL.
    """

    def __init__(self, model: mujoco.MjModel, cameras: Mapping[str, str], height: int, width: int) -> None:
        self.model = model
        self.height, self.width = height, width
        self.camera_ids: dict[str, int] = {}
        for name, mj_camera in cameras.items():
            camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, mj_camera)
            if camera_id < 0:
                known = [model.camera(i).name for i in range(model.ncam)]
                raise ValueError(f"camera {name!r}: the scene has no camera {mj_camera!r}; known: {known}")
            self.camera_ids[name] = camera_id
        apply_fast_render_settings(model)
        # The offscreen buffer must be at least as large as the images we ask for.
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
        self._renderer: mujoco.Renderer | None = None

    def render(self, data: mujoco.MjData) -> dict[str, np.ndarray]:
        """One uint8 (H, W, 3) upright image per camera name."""
        if not self.camera_ids:
            return {}  # a state-only env never needs a GL context
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
        images = {}
        for name, camera_id in self.camera_ids.items():
            self._renderer.update_scene(data, camera=camera_id)
            image = self._renderer.render()
            if camera_is_upside_down(data, camera_id):
                image = image[::-1, ::-1]
            images[name] = np.ascontiguousarray(image)
        return images

    def close(self) -> None:
        """Release the GL context (safe to call twice)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
