"""``TabletopEnv``: one language-conditioned task of the tabletop suite as a gymnasium environment.

Control runs at ``CONTROL_HZ`` (20 Hz): each step holds the command for 10 physics steps of 5 ms.

- ``control="ee_delta"`` (default): action ``[dx, dy, dz, gripper]`` in [-1, 1]; the end-effector
  target moves by ``dx * EE_STEP`` metres (the gripper keeps pointing down), inverse kinematics
  (damped least squares, see ``ik.py``) turns it into joint targets; ``gripper`` -1 opens fully,
  +1 closes fully.
- ``control="joint_pos"``: action ``[q1..q6, gripper]``: absolute arm joint targets (radians,
  bounded by the joint ranges) and the same gripper command.

Out-of-range actions are clipped and counted in ``info["clipped_actions"]`` (steps with at least one
clipped component); NaN/inf or a wrong shape raise ``ValueError``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from vla.envs.tabletop import scene
from vla.envs.tabletop.episode_start import sample_episode_start, task_phrasings
from vla.envs.tabletop.ik import DlsIk
from vla.envs.tabletop.tasks import FAMILIES, TaskSpec, task_spec
from vla.features import STATE_KEY, camera_key

CONTROL_HZ = 20
PHYSICS_STEPS = 10  # 10 x 5 ms = 50 ms per control step
EE_STEP = 0.02  # metres per step at |action| = 1 (0.4 m/s)
WORKSPACE_LO = np.array([0.15, -0.45, 0.01])
WORKSPACE_HI = np.array([0.7, 0.45, 0.45])
MAX_TARGET_LEAD = 0.06  # the target never runs further than this ahead of the gripper (anti wind-up)
DOWN = np.eye(3)  # the hand frame at home: gripper pointing down, fingers opening along y
CAMERAS = ("front", "wrist")
INSTRUCTION_CHARSET = string.ascii_letters + string.digits + " ,.'-"


class TabletopEnv(gym.Env):
    """One tabletop task. Build it with ``vla.envs.tabletop.make`` or ``gymnasium.make``.

    Options: ``image_size`` (int or (H, W)), ``cameras`` (subset of ``front``/``wrist``; an empty
    list skips rendering, e.g. for fast expert checks), ``control`` (``ee_delta``/``joint_pos``),
    ``phrasing`` (``train``/``heldout``: the instruction set sampled by the seed), ``max_steps``
    (time limit, default per task), ``render_mode`` (``rgb_array``: ``render()`` gives the front
    view), ``terminate_on_success`` (default True), ``fast_render`` (False: MuJoCo's default render
    quality, for the benchmark's baseline only), ``layout`` (``free``: every object anywhere on the
    table; ``slots``: the three blocks in three fixed places with their colours shuffled per seed, see
    ``scene.BLOCK_SLOTS``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}

    def __init__(
        self,
        task: str | TaskSpec,
        image_size: int | Sequence[int] = 128,
        cameras: Sequence[str] = CAMERAS,
        control: str = "ee_delta",
        phrasing: str = "train",
        max_steps: int | None = None,
        render_mode: str | None = None,
        terminate_on_success: bool = True,
        fast_render: bool = True,
        layout: str = "free",
    ) -> None:
        self.task = task if isinstance(task, TaskSpec) else task_spec(task)
        self._family = FAMILIES[self.task.family]
        if control not in ("ee_delta", "joint_pos"):
            raise ValueError(f"control must be 'ee_delta' or 'joint_pos', got {control!r}")
        unknown = sorted(set(cameras) - set(CAMERAS))
        if unknown:
            raise ValueError(f"unknown cameras {unknown}; this scene has {list(CAMERAS)}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.height, self.width = (
            (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        )
        self.cameras = tuple(cameras)
        self.control = control
        self.phrasing = phrasing
        self.phrasings = task_phrasings(self.task, phrasing)
        self.max_steps = int(max_steps or self.task.max_steps)
        self.render_mode = render_mode
        self.terminate_on_success = terminate_on_success
        if layout not in scene.LAYOUTS:
            raise ValueError(f"layout must be one of {scene.LAYOUTS}, got {layout!r}")
        self.layout = layout

        self.model = scene.load_model(fast_render)
        self.data = mujoco.MjData(self.model)
        self.ids = scene.SceneIds.of(self.model)
        self.ik = DlsIk(self.model, self.ids.ee_site, self.ids.arm_qpos, self.ids.arm_dof, self.ids.arm_range)
        self._renderer: mujoco.Renderer | None = None  # created on first render, reused after

        self.state_names = self._state_names()
        self.observation_space = gym.spaces.Dict(
            {
                **{
                    camera_key(c): gym.spaces.Box(0, 255, (self.height, self.width, 3), np.uint8)
                    for c in self.cameras
                },
                STATE_KEY: gym.spaces.Box(-np.inf, np.inf, (len(self.state_names),), np.float32),
                "instruction": gym.spaces.Text(max_length=256, min_length=1, charset=INSTRUCTION_CHARSET),
            }
        )
        if control == "ee_delta":
            self.action_names = ["ee.dx", "ee.dy", "ee.dz", "gripper"]
            low, high = -np.ones(4, np.float32), np.ones(4, np.float32)
        else:
            self.action_names = [f"{j}.pos" for j in scene.ARM_JOINTS] + ["gripper"]
            low = np.append(self.ids.arm_range[:, 0], -1).astype(np.float32)
            high = np.append(self.ids.arm_range[:, 1], 1).astype(np.float32)
        self.action_space = gym.spaces.Box(low, high, dtype=np.float32)

        self.instruction = ""
        self.episode_id = 0  # bumped by every reset: lets the expert notice a new episode
        self._steps = 0
        self._clipped = 0
        self._target = np.zeros(3)
        self._initial_blocks: dict[str, np.ndarray] = {}

    # ----------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        start = sample_episode_start(self.task, self.np_random, self.phrasings, self.layout)
        scene.apply_layout(self.model, self.data, self.ids, start.layout)
        self.instruction = start.instruction
        self._initial_blocks = {c: self.block_pos(c) for c in scene.COLOURS}
        self._target = self.ee_pos()
        self._steps = 0
        self._clipped = 0
        self.episode_id += 1
        return self._observation(), self._info(self._success())

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        action = self._checked_action(action)
        if self.control == "ee_delta":
            arm_targets = self.ee_delta_to_joint_targets(action[:3])
        else:
            arm_targets = action[:6].astype(np.float64)
        self.data.ctrl[self.ids.arm_ctrl] = arm_targets
        self.data.ctrl[self.ids.finger_ctrl] = scene.FINGER_MAX * (1.0 - action[-1]) / 2.0
        mujoco.mj_step(self.model, self.data, nstep=PHYSICS_STEPS)
        self._steps += 1
        success = self._success()
        terminated = success and self.terminate_on_success
        truncated = self._steps >= self.max_steps and not terminated
        return self._observation(), float(success), terminated, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self._render_camera("front")
        return None

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ----------------------------------------------------------------- control
    def ee_delta_to_joint_targets(self, delta: np.ndarray) -> np.ndarray:
        """Move the end-effector target by ``delta`` (in [-1, 1] units) and solve joint targets."""
        ee = self.ee_pos()
        target = np.clip(self._target + np.asarray(delta, np.float64) * EE_STEP, WORKSPACE_LO, WORKSPACE_HI)
        lead = target - ee
        if np.linalg.norm(lead) > MAX_TARGET_LEAD:
            target = ee + lead * (MAX_TARGET_LEAD / np.linalg.norm(lead))
        self._target = target
        return self.ik.solve(self.data.qpos, target, DOWN)

    def _checked_action(self, action: Any) -> np.ndarray:
        array = np.asarray(action, dtype=np.float64)
        if array.shape != self.action_space.shape:
            raise ValueError(
                f"action must have shape {self.action_space.shape} ({self.action_names}), got {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            bad = [self.action_names[i] for i in np.flatnonzero(~np.isfinite(array))]
            raise ValueError(f"action has non-finite values in {bad}: {array.tolist()}")
        clipped = np.clip(array, self.action_space.low, self.action_space.high)
        if np.any(clipped != array):
            self._clipped += 1
        return clipped

    # ----------------------------------------------------------------- privileged state (experts, success tests)
    def ee_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.ids.ee_site].copy()

    def block_pos(self, colour: str) -> np.ndarray:
        return self.data.xpos[self.ids.block_body[colour]].copy()

    def initial_block_pos(self, colour: str) -> np.ndarray:
        return self._initial_blocks[colour].copy()

    def button_pos(self, colour: str) -> np.ndarray:
        return self.data.xpos[self.ids.button_body[colour]].copy()

    def button_depth(self, colour: str) -> float:
        return float(self.data.qpos[self.ids.button_qpos[colour]])

    def plate_pos(self) -> np.ndarray:
        return self.data.xpos[self.ids.plate_body].copy()

    def handle_pos(self) -> np.ndarray:
        return self.data.site_xpos[self.ids.handle_site].copy()

    def drawer_opening(self) -> float:
        return float(self.data.qpos[self.ids.drawer_qpos])

    def gripper_opening(self) -> float:
        return float(self.data.qpos[self.ids.finger_qpos].sum())

    # ----------------------------------------------------------------- observations
    def _success(self) -> bool:
        return bool(self._family.success(self, self.task))

    def _info(self, success: bool) -> dict[str, Any]:
        return {
            "success": success,
            "clipped_actions": self._clipped,
            "task": self.task.name,
            "steps": self._steps,
        }

    def _state_names(self) -> list[str]:
        joints = list(scene.ARM_JOINTS)
        return (
            [f"{j}.pos" for j in joints]
            + [f"{j}.vel" for j in joints]
            + ["gripper.opening"]
            + ["ee.x", "ee.y", "ee.z", "ee.qw", "ee.qx", "ee.qy", "ee.qz"]
        )

    def _state(self) -> np.ndarray:
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self.ids.ee_site])
        return np.concatenate(
            [
                self.data.qpos[self.ids.arm_qpos],
                self.data.qvel[self.ids.arm_dof],
                [self.gripper_opening()],
                self.ee_pos(),
                quat,
            ]
        ).astype(np.float32)

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {camera_key(c): self._render_camera(c) for c in self.cameras}
        obs[STATE_KEY] = self._state()
        obs["instruction"] = self.instruction
        return obs

    def _render_camera(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render()
