"""Meta-World (v3, 50 tasks) behind the observation dict of ``docs/ARCHITECTURE.md``.

``make(task, ...)`` returns a :class:`MetaWorldEnv` whose observations are

- ``observation.images.<name>``: uint8 (H, W, 3), one per entry of ``cameras`` (default ``front`` =
  Meta-World's ``corner2``, ``wrist`` = ``gripperPOV``), upright;
- ``observation.state``: float32, either ``proprio`` (default: hand xyz and gripper opening, 4 values;
  what a real robot reports) or ``full`` (Meta-World's 39-D state, which includes object poses and the
  goal, i.e. privileged information);
- ``instruction``: one phrasing of the task, drawn per episode from the ``train`` or ``heldout`` set.

Seeding: ``reset(seed=s)`` gives the same object/goal layout, instruction and images for the same
``s`` (Meta-World's reset ignores its seed; we seed its layout generator with ``seed(s)`` first).
Episodes end with ``terminated=True`` on success (``terminate_on_success``) and are truncated after
``max_episode_steps`` (at most Meta-World's 500). ``info["success"]`` is a bool on every step.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from vla.envs.metaworld_instructions import INSTRUCTION_CHARSET, PHRASINGS, choose_instruction
from vla.envs.metaworld_render import WORKSPACE_CAMERA, CameraRig
from vla.envs.metaworld_tasks import canonical_task, difficulty, task_names
from vla.features import INSTRUCTION_KEY, STATE_KEY, camera_key

__all__ = ["MetaWorldEnv", "difficulty", "make", "make_expert", "task_names"]

DEFAULT_CAMERAS: dict[str, str] = {"front": "corner2", "wrist": "gripperPOV"}
MAX_PATH_LENGTH = 500  # Meta-World refuses to step past this
CONTROL_FPS = 80
ACTION_NAMES = ["delta_x", "delta_y", "delta_z", "gripper"]
_PROPRIO_NAMES = ["hand_x", "hand_y", "hand_z", "gripper_opening"]


def _full_state_names() -> list[str]:
    """Names of Meta-World's 39-D state: current frame, previous frame, goal."""
    frame = list(_PROPRIO_NAMES)
    for obj in ("obj0", "obj1"):
        frame += [f"{obj}_{axis}" for axis in ("x", "y", "z", "qw", "qx", "qy", "qz")]
    return frame + [f"prev_{name}" for name in frame] + ["goal_x", "goal_y", "goal_z"]


STATE_NAMES: dict[str, list[str]] = {"proprio": _PROPRIO_NAMES, "full": _full_state_names()}


def _image_shape(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    size = tuple(int(v) for v in image_size)
    if len(size) != 2:
        raise ValueError(f"image_size must be an int or [height, width], got {image_size!r}")
    return size  # type: ignore[return-value]


def _camera_map(
    cameras: Mapping[str, str | Mapping[str, Any]] | Sequence[str] | None,
) -> dict[str, str | dict[str, Any]]:
    """``{feature camera name: Meta-World camera or free camera spec}``; a list keeps Meta-World's
    names; the name ``workspace`` stands for :data:`vla.envs.metaworld_render.WORKSPACE_CAMERA`."""
    if cameras is None:
        return dict(DEFAULT_CAMERAS)
    if isinstance(cameras, Mapping):
        return {str(k): _camera_spec(v) for k, v in cameras.items()}
    return {str(c): _camera_spec(c) for c in cameras}


def _camera_spec(value: str | Mapping[str, Any]) -> str | dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    return dict(WORKSPACE_CAMERA) if str(value) == "workspace" else str(value)


class MetaWorldEnv(gym.Env):
    """One Meta-World task with camera images, proprioception and a language instruction."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FPS}
    robot_type = "sawyer"

    def __init__(
        self,
        task: str,
        image_size: int | Sequence[int] = 128,
        cameras: Mapping[str, str | Mapping[str, Any]] | Sequence[str] | None = None,
        state: str = "proprio",
        phrasing: str = "train",
        max_episode_steps: int = MAX_PATH_LENGTH,
        terminate_on_success: bool = True,
        render_mode: str | None = "rgb_array",
    ) -> None:
        import metaworld  # imported here so task listing never pays for it
        from metaworld.types import Task

        self.task = canonical_task(task)
        if state not in STATE_NAMES:
            raise ValueError(f"state must be one of {sorted(STATE_NAMES)}, got {state!r}")
        if phrasing not in PHRASINGS:
            raise ValueError(f"phrasing must be one of {PHRASINGS}, got {phrasing!r}")
        if not 1 <= max_episode_steps <= MAX_PATH_LENGTH:
            raise ValueError(f"max_episode_steps must be in [1, {MAX_PATH_LENGTH}], got {max_episode_steps}")
        self.state_mode, self.phrasing = state, phrasing
        self.max_episode_steps, self.terminate_on_success = int(max_episode_steps), bool(terminate_on_success)
        self.render_mode = render_mode
        height, width = _image_shape(image_size)

        env_cls = metaworld.env_dict.ALL_V3_ENVIRONMENTS[self.task]
        self._mw = env_cls()
        # The public way to configure a Meta-World env is set_task with a pickled Task; we build the
        # one MT benchmarks use (goal visible to the expert), then unfreeze the layout sampler so
        # every reset draws a new layout from the seeded generator (set_task alone freezes the layout).
        kwargs = dict(metaworld.env_dict.ML1_args_kwargs[self.task]["kwargs"])
        kwargs.pop("task_id", None)
        kwargs.update(rand_vec=np.zeros(self._mw._random_reset_space.low.size), env_cls=env_cls,
                      partially_observable=False)  # fmt: skip
        self._mw.set_task(Task(env_name=self.task, data=pickle.dumps(kwargs)))
        self._mw._freeze_rand_vec = False
        self._mw.seeded_rand_vec = True
        self._mw.seed(0)

        self.cameras = _camera_map(cameras)
        self._rig = CameraRig(self._mw.model, self.cameras, height, width)
        self.state_names: list[str] = list(STATE_NAMES[state])
        self.action_names: list[str] = list(ACTION_NAMES)
        self.observation_space = spaces.Dict(
            {
                **{
                    camera_key(name): spaces.Box(0, 255, (height, width, 3), np.uint8)
                    for name in self.cameras
                },
                STATE_KEY: spaces.Box(-np.inf, np.inf, (len(self.state_names),), np.float32),
                INSTRUCTION_KEY: spaces.Text(max_length=256, charset=INSTRUCTION_CHARSET),
            }
        )
        self.action_space = spaces.Box(-1.0, 1.0, (len(ACTION_NAMES),), np.float32)

        self.privileged_state: np.ndarray = np.zeros(39)  # Meta-World's 39-D state; the expert's input
        self.instruction = ""
        self.clipped_steps = 0  # steps of this episode whose action had to be clipped into bounds
        self._steps = 0
        self._needs_reset = True

    # -- gymnasium API -------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
        """Start an episode; the same ``seed`` gives the same layout, instruction and images."""
        super().reset(seed=seed)  # seeds self.np_random (instruction choice) when seed is given
        if seed is not None:
            self._mw.seed(int(seed))  # seeds Meta-World's layout sampler
        raw_state, _ = self._mw.reset()
        self.instruction = choose_instruction(self.task, self.phrasing, self.np_random)
        self.clipped_steps, self._steps, self._needs_reset = 0, 0, False
        return self._observation(raw_state), {"success": False, "task": self.task, "phrasing": self.phrasing}

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Apply one 4-D action (xyz hand displacement, gripper); out-of-range values are clipped."""
        if self._needs_reset:
            raise RuntimeError(f"{self.task}: call reset() before step() (and again after an episode ends)")
        action = self._checked_action(action)
        clipped = np.clip(action, self.action_space.low, self.action_space.high)
        was_clipped = bool(np.any(clipped != action))
        self.clipped_steps += was_clipped
        raw_state, reward, _, _, raw_info = self._mw.step(clipped)
        self._steps += 1
        success = bool(raw_info.get("success", 0.0))
        terminated = success and self.terminate_on_success
        truncated = not terminated and self._steps >= self.max_episode_steps
        self._needs_reset = terminated or truncated
        info = {"success": success, "action_clipped": was_clipped, "clipped_steps": self.clipped_steps,
                "task": self.task, "phrasing": self.phrasing}  # fmt: skip
        return self._observation(raw_state), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """The first camera's image (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array":
            return None
        return self._rig.render(self._mw.data)[next(iter(self.cameras))]

    def close(self) -> None:
        self._rig.close()
        self._mw.close()

    # -- helpers -------------------------------------------------------------------------------------

    def _checked_action(self, action: Any) -> np.ndarray:
        try:
            array = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.task}: action must be numeric, got {action!r}") from exc
        if array.shape != self.action_space.shape:
            raise ValueError(
                f"{self.task}: action must have shape {self.action_space.shape} "
                f"({', '.join(self.action_names)}), got shape {array.shape}"
            )
        if not np.all(np.isfinite(array)):
            bad = [self.action_names[i] for i in np.flatnonzero(~np.isfinite(array))]
            raise ValueError(f"{self.task}: action has non-finite values in {bad}: {array.tolist()}")
        return array

    def _observation(self, raw_state: np.ndarray) -> dict[str, Any]:
        self.privileged_state = np.asarray(raw_state, dtype=np.float64).copy()
        state = raw_state if self.state_mode == "full" else raw_state[: len(_PROPRIO_NAMES)]
        images = self._rig.render(self._mw.data)
        observation: dict[str, Any] = {camera_key(name): images[name] for name in self.cameras}
        observation[STATE_KEY] = np.asarray(state, dtype=np.float32)
        observation[INSTRUCTION_KEY] = self.instruction
        return observation


def make(task: str, **options: Any) -> MetaWorldEnv:
    """One Meta-World environment; ``options`` are :class:`MetaWorldEnv`'s keyword arguments."""
    return MetaWorldEnv(task, **options)


def make_expert(env: gym.Env, noise_std: float = 0.0, seed: int | None = None
                ) -> Callable[[dict[str, Any]], np.ndarray]:  # fmt: skip
    """Meta-World's scripted expert for ``env``'s task, with optional Gaussian action noise.

    The expert reads the env's privileged 39-D state (not the observation dict), so it works with
    any ``state`` mode; call it with the observation just returned by ``env``.
    """
    from metaworld.policies import ENV_POLICY_MAP

    base = env.unwrapped
    if not isinstance(base, MetaWorldEnv):
        raise TypeError(f"make_expert needs a MetaWorldEnv, got {type(base).__name__}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    policy = ENV_POLICY_MAP[base.task]()
    # The experts warn on every step whose raw response exceeds [-1, 1]; we clip it, as the env does.
    warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)
    rng = np.random.default_rng(seed)

    def expert(observation: dict[str, Any]) -> np.ndarray:
        action = np.asarray(policy.get_action(base.privileged_state), dtype=np.float64)
        if noise_std > 0:
            action = action + rng.normal(0.0, noise_std, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    return expert
