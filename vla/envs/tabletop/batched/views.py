"""One world of a batched env seen through ``TabletopEnv``'s privileged accessors, on the host.

The scripted experts (``experts.py``) and the classic success tests (``tasks.py``) read an env
through ``ee_pos()``, ``block_pos(colour)``, ``drawer_opening()``... A :class:`WorldView` answers
those for one world from a :class:`HostSnapshot` (a few small arrays copied off the device once per
step), so the batched backend runs the very same expert logic per world, and tests compare the
batched success tests against the classic ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from vla.envs.tabletop import scene
from vla.envs.tabletop.experts import TabletopExpert
from vla.envs.tabletop.ik import DlsIk
from vla.envs.tabletop.tasks import TaskSpec


@dataclass(frozen=True)
class HostSnapshot:
    """Host copies of what the accessors read, for all worlds."""

    qpos: np.ndarray  # (N, nq)
    xpos: np.ndarray  # (N, nbody, 3)
    site_xpos: np.ndarray  # (N, nsite, 3)
    initial_blocks: np.ndarray  # (N, 3, 3), colours in scene.COLOURS order


@dataclass
class WorldView:
    """World ``world`` of a batched env, duck-typing the accessors of ``TabletopEnv``."""

    world: int
    ids: scene.SceneIds
    ik: DlsIk  # the classic solver on the host model: the expert's joint_pos mode calls it
    control: str
    task: TaskSpec | None = None
    episode_id: int = 0  # bumped by every reset of this world: the expert plans again
    snapshot: HostSnapshot | None = field(default=None, repr=False)

    def _snap(self) -> HostSnapshot:
        if self.snapshot is None:
            raise RuntimeError(f"world {self.world} has no state yet: reset it first")
        return self.snapshot

    @property
    def data(self) -> Any:
        """What the expert reads of ``env.data``: the joint positions."""
        return SimpleNamespace(qpos=self._snap().qpos[self.world].astype(np.float64))

    def ee_pos(self) -> np.ndarray:
        return self._snap().site_xpos[self.world, self.ids.ee_site].astype(np.float64)

    def block_pos(self, colour: str) -> np.ndarray:
        return self._snap().xpos[self.world, self.ids.block_body[colour]].astype(np.float64)

    def initial_block_pos(self, colour: str) -> np.ndarray:
        return self._snap().initial_blocks[self.world, scene.COLOURS.index(colour)].astype(np.float64)

    def button_pos(self, colour: str) -> np.ndarray:
        return self._snap().xpos[self.world, self.ids.button_body[colour]].astype(np.float64)

    def button_depth(self, colour: str) -> float:
        return float(self._snap().qpos[self.world, self.ids.button_qpos[colour]])

    def plate_pos(self) -> np.ndarray:
        return self._snap().xpos[self.world, self.ids.plate_body].astype(np.float64)

    def handle_pos(self) -> np.ndarray:
        return self._snap().site_xpos[self.world, self.ids.handle_site].astype(np.float64)

    def drawer_opening(self) -> float:
        return float(self._snap().qpos[self.world, self.ids.drawer_qpos])

    def gripper_opening(self) -> float:
        return float(self._snap().qpos[self.world, self.ids.finger_qpos].sum())


class WorldExperts:
    """The scripted expert of every world (``TabletopExpert`` on its :class:`WorldView`)."""

    def __init__(self, views: list[WorldView], action_dim: int) -> None:
        self.views, self.action_dim = views, action_dim
        self.experts: dict[int, TabletopExpert] = {}

    def begin(self, world: int, noise_std: float = 0.0, seed: int | None = None) -> None:
        """A new expert for ``world``'s new episode (call after resetting it); seeded like
        ``make_expert(env, noise_std, seed)``."""
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.experts[world] = TabletopExpert(self.views[world], noise_std=noise_std, seed=seed)  # type: ignore[arg-type]

    def end(self, world: int) -> None:
        self.experts.pop(world, None)

    def actions(self, snapshot: HostSnapshot) -> np.ndarray:
        """(N, A) float32: each expert's action for the current state (zeros for worlds without one)."""
        out = np.zeros((len(self.views), self.action_dim), dtype=np.float32)
        for world, expert in self.experts.items():
            self.views[world].snapshot = snapshot
            out[world] = expert(None)
        return out
