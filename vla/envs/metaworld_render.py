"""Fast, upright camera images of a Meta-World scene on the CPU.

Two measured facts drive this module:

- MuJoCo's defaults (a 4096^2 shadow map, reflections, multisampling) make llvmpipe rendering of a
  Meta-World scene take 200-350 ms per frame; switching shadows, reflections and offscreen
  multisampling off before the first render brings it to about 20 ms.
- Meta-World's ``corner*`` cameras are mounted upside down, so their raw images are rotated by
  180 degrees. Rather than keeping a list of such cameras we rotate every image whose camera's
  "up" axis points below the horizon, which also covers cameras added later.

A camera is either one of the scene's named cameras (``"corner2"``) or a free camera placed by the
config: ``{lookat: [x, y, z], distance: d, azimuth: deg, elevation: deg}`` (MuJoCo's ``mjvCamera``),
e.g. one that frames only the workspace, so that a small image spends its pixels on the objects
rather than on the room (:data:`WORKSPACE_CAMERA`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")  # headless; must be set before mujoco creates a context

import mujoco  # noqa: E402

# A free camera above and in front of Meta-World's table, framing the reachable workspace (objects,
# goals and the gripper) from the robot's left-front: at 64x64 a puck or a goal marker covers a few
# pixels here instead of one in ``corner2``.
WORKSPACE_CAMERA: dict[str, Any] = {
    "lookat": [0.0, 0.7, 0.1],
    "distance": 1.0,
    "azimuth": -60.0,
    "elevation": -40.0,
}
_FREE_CAMERA_KEYS = ("lookat", "distance", "azimuth", "elevation")


def free_camera(spec: Mapping[str, Any]) -> mujoco.MjvCamera:
    """An ``mjvCamera`` placed by ``{lookat: [x, y, z], distance, azimuth, elevation}`` (all required)."""
    missing = [k for k in _FREE_CAMERA_KEYS if k not in spec]
    unknown = sorted(set(spec) - set(_FREE_CAMERA_KEYS))
    if missing or unknown:
        raise ValueError(
            f"a free camera needs exactly {list(_FREE_CAMERA_KEYS)}; missing {missing}, unknown {unknown}"
        )
    lookat = [float(v) for v in spec["lookat"]]
    if len(lookat) != 3 or not float(spec["distance"]) > 0:
        raise ValueError(f"a free camera needs lookat [x, y, z] and distance > 0, got {dict(spec)}")
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = lookat
    camera.distance = float(spec["distance"])
    camera.azimuth = float(spec["azimuth"])
    camera.elevation = float(spec["elevation"])
    return camera


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
    """Renders a fixed set of cameras of one model at one image size.

    ``cameras`` maps the name a feature uses (``front``) to a MuJoCo camera (``corner2``) or a free
    camera spec (see the module docstring). The renderer, and with it the GL context, is created on
    the first :meth:`render` call, so building an environment (e.g. to read its spaces) never
    touches GL.
    """

    def __init__(
        self, model: mujoco.MjModel, cameras: Mapping[str, str | Mapping[str, Any]], height: int, width: int
    ) -> None:
        self.model = model
        self.height, self.width = height, width
        self.camera_ids: dict[str, int | mujoco.MjvCamera] = {}
        for name, mj_camera in cameras.items():
            if isinstance(mj_camera, Mapping):
                try:
                    self.camera_ids[name] = free_camera(mj_camera)
                except ValueError as exc:
                    raise ValueError(f"camera {name!r}: {exc}") from None
                continue
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
            if isinstance(camera_id, int) and camera_is_upside_down(data, camera_id):
                image = image[::-1, ::-1]
            images[name] = np.ascontiguousarray(image)
        return images

    def close(self) -> None:
        """Release the GL context (safe to call twice)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
