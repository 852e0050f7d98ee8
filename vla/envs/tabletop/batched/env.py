"""``BatchedTabletopEnv``: N tabletop worlds on MuJoCo Warp, each running its own episode.

Every world runs any task of the suite (they share the scene): :meth:`reset_worlds` starts episodes
``(task, seed, phrasing)`` in chosen worlds (MuJoCo Warp's masked reset; the others go on), and
:meth:`step` advances all worlds by one control step. On the device: physics (10 substeps), the
end-effector controller and its IK, success tests, time limits, observations (images and state as
torch tensors). On the host: drawing each episode's start (the classic env's seeded sampler, so a
seed gives the same initial state and instruction in both backends) and the per-world bookkeeping.

Semantics follow ``TabletopEnv`` (the classic env with the same options, kept as :attr:`spec_env`,
declares the spaces, validates the options and lists state and action names): the same action
clipping and counting, end-effector target clipping, lead limit and gripper mapping, and
``terminated`` on success (``terminate_on_success``) or ``truncated`` at the time limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import mujoco
import numpy as np
import torch

from vla.envs.tabletop import scene
from vla.envs.tabletop.batched import state as S
from vla.envs.tabletop.batched.ik import BatchedDlsIk
from vla.envs.tabletop.batched.render import BatchRenderer
from vla.envs.tabletop.batched.runtime import resolve_sim_device
from vla.envs.tabletop.batched.sim import WarpSim, WorldRows
from vla.envs.tabletop.batched.success import TaskCodes, success
from vla.envs.tabletop.batched.views import HostSnapshot, WorldExperts, WorldView
from vla.envs.tabletop.env import (
    DOWN,
    EE_STEP,
    MAX_TARGET_LEAD,
    PHYSICS_STEPS,
    WORKSPACE_HI,
    WORKSPACE_LO,
    TabletopEnv,
)
from vla.envs.tabletop.episode_start import EpisodeStart, episode_rng, sample_episode_start, task_phrasings
from vla.envs.tabletop.ik import DlsIk
from vla.envs.tabletop.tasks import TASKS, TaskSpec, task_spec
from vla.features import STATE_KEY, camera_key


class EpisodeToStart(Protocol):
    """What :meth:`BatchedTabletopEnv.reset_worlds` reads of an episode (an evaluation's
    ``EpisodeRequest`` is one)."""

    task: str
    seed: int
    phrasing: str


@dataclass(frozen=True)
class WorldEpisode:
    """An episode to start in a world."""

    task: str
    seed: int
    phrasing: str = "train"


@dataclass(frozen=True)
class BatchStep:
    """(N,) bool tensors after a control step (only worlds with an episode mean anything)."""

    success: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor


class BatchedTabletopEnv:
    """``num_worlds`` worlds on ``device`` (``auto``: CUDA when available); the other options are
    ``TabletopEnv``'s (``fast_render`` and ``render_mode`` concern the classic rasterizer only)."""

    metadata = TabletopEnv.metadata

    def __init__(
        self, num_worlds: int, device: str = "auto", nconmax: int = 64, njmax: int = 256, **options: Any
    ) -> None:
        self.spec_env = TabletopEnv(next(iter(TASKS)), **options)  # options checked, spaces declared
        spec = self.spec_env
        self.options = dict(options)
        self.sim = WarpSim(num_worlds, resolve_sim_device(device), nconmax, njmax)
        self.device = self.sim.device.torch
        self.num_worlds = num_worlds
        # What each world observes and takes: the classic env's spaces and names.
        self.observation_space, self.action_space = spec.observation_space, spec.action_space
        self.state_names, self.action_names = spec.state_names, spec.action_names
        self.cameras, self.control, self.layout = spec.cameras, spec.control, spec.layout
        self.renderer = BatchRenderer(self.sim, spec.cameras, spec.height, spec.width)
        self.ik = BatchedDlsIk(self.sim)
        ids = self.sim.ids
        self._host_data = mujoco.MjData(self.sim.host_model)  # where apply_layout composes resets
        host_ik = DlsIk(self.sim.host_model, ids.ee_site, ids.arm_qpos, ids.arm_dof, ids.arm_range)
        self.views = [WorldView(w, ids, host_ik, self.control) for w in range(num_worlds)]
        self.experts = WorldExperts(self.views, spec.action_space.shape[0])

        def tensor(value: Any, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.asarray(value), dtype=dtype, device=self.device)

        self._low, self._high = tensor(spec.action_space.low), tensor(spec.action_space.high)
        self._workspace = (tensor(WORKSPACE_LO), tensor(WORKSPACE_HI))
        self._down = tensor(DOWN)
        self.episodes: list[WorldEpisode | None] = [None] * num_worlds
        self.tasks: list[TaskSpec] = [spec.task] * num_worlds
        self.instructions = [""] * num_worlds
        self.codes = TaskCodes.of(self.tasks, self.device)
        self.max_steps = torch.zeros(num_worlds, dtype=torch.long, device=self.device)
        self.steps = torch.zeros_like(self.max_steps)
        self.clipped = torch.zeros_like(self.max_steps)  # steps with a clipped action, per episode
        self.target = torch.zeros(num_worlds, 3, device=self.device)
        self.initial_blocks = torch.zeros(num_worlds, 3, 3, device=self.device)

    # ----------------------------------------------------------------- episodes
    def reset_worlds(self, worlds: Sequence[int], episodes: Sequence[EpisodeToStart]) -> None:
        """Start ``episodes[i]`` in ``worlds[i]``; the initial state and the instruction are drawn as
        ``TabletopEnv(task, phrasing=...).reset(seed=seed)`` draws them."""
        if len(worlds) != len(episodes):
            raise ValueError(f"{len(worlds)} worlds for {len(episodes)} episodes")
        specs = [task_spec(e.task) for e in episodes]
        starts = [
            sample_episode_start(spec, episode_rng(e.seed), task_phrasings(spec, e.phrasing), self.layout)
            for spec, e in zip(specs, episodes, strict=True)
        ]
        self.start_worlds(worlds, specs, starts)
        for world, episode in zip(worlds, episodes, strict=True):
            self.episodes[world] = episode

    def start_worlds(
        self, worlds: Sequence[int], tasks: Sequence[TaskSpec], starts: Sequence[EpisodeStart]
    ) -> None:
        """Put ``worlds`` in the initial states ``starts`` of ``tasks`` (drawn by the caller)."""
        if not worlds:
            return
        qpos, ctrl, body_pos = [], [], []
        model, data, ids = self.sim.host_model, self._host_data, self.sim.ids
        for world, task, start in zip(worlds, tasks, starts, strict=True):
            scene.apply_layout(model, data, ids, start.layout)
            qpos.append(data.qpos.copy())
            ctrl.append(data.ctrl.copy())
            body_pos.append(model.body_pos.copy())
            self.tasks[world], self.instructions[world] = task, start.instruction
            self.views[world].task = task
            self.views[world].episode_id += 1
        self.sim.reset(worlds, WorldRows(np.stack(qpos), np.stack(ctrl), np.stack(body_pos)))
        index = torch.as_tensor(list(worlds), dtype=torch.long, device=self.device)
        self.target[index] = self.sim.field("site_xpos")[index, ids.ee_site]
        self.initial_blocks[index] = S.block_positions(self.sim)[index]
        limit = self.options.get("max_steps")
        self.max_steps[index] = torch.as_tensor(
            [int(limit or self.tasks[w].max_steps) for w in worlds], device=self.device
        )
        self.steps[index] = 0
        self.clipped[index] = 0
        self.codes = TaskCodes.of(self.tasks, self.device)

    # ----------------------------------------------------------------- stepping
    def step(self, actions: Any) -> BatchStep:
        """Apply ``actions`` (N, A) (clipped to the action space, counted per world) for one control
        step of every world."""
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        expected = (self.num_worlds, *self.action_space.shape)
        if tuple(actions.shape) != expected:
            raise ValueError(
                f"actions must have shape {expected} ({self.action_names}), got {tuple(actions.shape)}"
            )
        finite = torch.isfinite(actions).all(-1)
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten()[:8].tolist()
            raise ValueError(f"actions of worlds {bad} have non-finite values")
        clipped = torch.clamp(actions, self._low, self._high)
        self.clipped += (clipped != actions).any(-1)
        ids = self.sim.ids
        arm = self._joint_targets(clipped[:, :3]) if self.control == "ee_delta" else clipped[:, :6]
        ctrl = self.sim.field("ctrl")
        ctrl[:, ids.arm_ctrl] = arm
        ctrl[:, ids.finger_ctrl] = (scene.FINGER_MAX * (1.0 - clipped[:, -1:]) / 2.0).expand(
            -1, len(ids.finger_ctrl)
        )
        self.sim.step(PHYSICS_STEPS)
        self.steps += 1
        succeeded = self.success()
        terminated = succeeded & bool(self.spec_env.terminate_on_success)
        truncated = (self.steps >= self.max_steps) & ~terminated
        return BatchStep(succeeded, terminated, truncated)

    def _joint_targets(self, delta: torch.Tensor) -> torch.Tensor:
        """``TabletopEnv.ee_delta_to_joint_targets`` for every world: move, clip and lead-limit the
        end-effector target, then solve the arm joints by IK."""
        ee = self.sim.field("site_xpos")[:, self.sim.ids.ee_site]
        target = torch.clamp(self.target + delta * EE_STEP, *self._workspace)
        lead = target - ee
        distance = torch.linalg.norm(lead, dim=-1, keepdim=True)
        target = torch.where(distance > MAX_TARGET_LEAD, ee + lead * (MAX_TARGET_LEAD / distance), target)
        self.target = target
        return self.ik.solve(self.sim.field("qpos"), target, self._down)

    def success(self) -> torch.Tensor:
        """(N,) bool: each world's success test on its current state."""
        return success(S.world_state(self.sim, self.initial_blocks), self.codes)

    # ----------------------------------------------------------------- observations
    def observation(self) -> dict[str, torch.Tensor]:
        """Camera images uint8 (N, H, W, 3) and ``observation.state`` float32 (N, D), on the device
        (instructions: :attr:`instructions`)."""
        images = self.renderer.render()
        observation = {camera_key(c): images[c] for c in self.cameras}
        observation[STATE_KEY] = S.proprioception(self.sim)
        return observation

    def snapshot(self) -> HostSnapshot:
        """Host copies of the state the experts and :class:`WorldView` read (a few KB per world)."""
        return HostSnapshot(
            qpos=self.sim.field("qpos").cpu().numpy(),
            xpos=self.sim.field("xpos").cpu().numpy(),
            site_xpos=self.sim.field("site_xpos").cpu().numpy(),
            initial_blocks=self.initial_blocks.cpu().numpy(),
        )

    def expert_actions(self) -> np.ndarray:
        """(N, A): the scripted expert's action in every world with one (:attr:`experts`)."""
        return self.experts.actions(self.snapshot())

    def close(self) -> None:
        """Nothing to release by hand: the device arrays go with the object."""
