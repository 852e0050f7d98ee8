"""``WarpSim``: N worlds of the tabletop scene in one MuJoCo Warp model and data, on one device.

The scene is the classic one (``scene.xml``) with one change, :data:`INERT_CONTACT_PAIRS`. Each world
has its own state and its own ``body_pos`` rows (resets move the buttons, the plate and the cabinet
by moving their bodies). Fields are read and written as torch tensors sharing the Warp arrays'
memory (``wp.to_torch``), so nothing leaves the device unless asked.

Integrator: the scene's ``implicitfast``, which MuJoCo Warp implements; it computes in float32, so
states drift from the float64 classic backend by ~1e-5 m in free motion, more in contact (tests
bound both).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
import torch

from vla.envs.tabletop import scene
from vla.envs.tabletop.batched.runtime import SimDevice, load_warp, on_device

# The base and the first link overlap by 5 cm around the yaw axis in every pose. Their contact has a
# zero Jacobian (turning about that axis moves no point of it), so classic MuJoCo's float64 solver
# gives it a near-infinite stiffness that never acts; in float32 the same row's rounding error times
# that stiffness stalls MuJoCo Warp's solver (the arm freezes). Excluding the pair changes the
# classic trajectories by < 1e-4 rad (tests/test_warp_sim.py checks it).
INERT_CONTACT_PAIRS: tuple[tuple[str, str], ...] = (("base", "link1"),)
# What a reset recomputes for the worlds it resets (observations, success tests and images read
# them before the next step would).
KINEMATIC_FIELDS = (
    "xpos", "xquat", "xmat", "xipos", "ximat", "xanchor", "xaxis", "geom_xpos", "geom_xmat",
    "site_xpos", "site_xmat", "cam_xpos", "cam_xmat", "light_xpos", "light_xdir",
)  # fmt: skip
# Overflows that mean dropped contacts or constraints (an iteration limit only means "not converged").
FATAL_OVERFLOWS = ("NEFC", "NJMAX_NNZ", "BROADPHASE", "NARROWPHASE", "CCD")


def warp_scene_model() -> mujoco.MjModel:
    """The tabletop scene as MuJoCo Warp simulates it (the classic scene with the inert pairs excluded)."""
    spec = mujoco.MjSpec.from_string(scene.scene_xml())
    for body1, body2 in INERT_CONTACT_PAIRS:
        spec.add_exclude(bodyname1=body1, bodyname2=body2)
    return spec.compile()


@dataclass(frozen=True)
class WorldRows:
    """The state a reset writes into its worlds, one row per world (host arrays from apply_layout)."""

    qpos: np.ndarray  # (k, nq)
    ctrl: np.ndarray  # (k, nu)
    body_pos: np.ndarray  # (k, nbody, 3)


class WarpSim:
    """N worlds stepped together; every state field is a (N, ...) torch tensor on the device."""

    def __init__(self, num_worlds: int, device: SimDevice, nconmax: int = 64, njmax: int = 256) -> None:
        if num_worlds < 1:
            raise ValueError(f"num_worlds must be >= 1, got {num_worlds}")
        self.wp, self.mjw = load_warp()
        self.num_worlds, self.device = num_worlds, device
        self.host_model = warp_scene_model()
        self.ids = scene.SceneIds.of(self.host_model)
        host_data = mujoco.MjData(self.host_model)
        mujoco.mj_forward(self.host_model, host_data)
        with on_device(device), warnings.catch_warnings():
            # The arm's capsules against the cylinders get one contact (not several): a warning
            # about the scene, printed at every build otherwise.
            warnings.filterwarnings("ignore", message="MULTICCD is enabled")
            self.model = self.mjw.put_model(self.host_model, batch_sizes={"body_pos": num_worlds})
            self.data = self.mjw.put_data(
                self.host_model, host_data, nworld=num_worlds, nconmax=nconmax, njmax=njmax
            )
            if device.is_cuda:  # load every kernel of a step now: none may load during graph capture
                self.mjw.step(self.model, self.data)
                self.mjw.reset_data(self.model, self.data)
            # Kinematics at other joint positions (IK, resets) run here, never on the live worlds.
            self.scratch = self.mjw.put_data(
                self.host_model, mujoco.MjData(self.host_model), nworld=num_worlds, nconmax=1, njmax=1
            )
        self.limits = (nconmax, njmax)
        self._static_geoms = _StaticGeoms.of(self.host_model, device.torch)
        # On a GPU the substeps replay as one captured graph (they are launch-bound otherwise).
        self.use_cuda_graph = True
        self._graph: Any = None
        self._graph_substeps = 0

    # ----------------------------------------------------------------- tensors
    def field(self, name: str, scratch: bool = False) -> torch.Tensor:
        """Data field ``name`` as a torch view (N, ...) of the live (or scratch) worlds."""
        return self.wp.to_torch(getattr(self.scratch if scratch else self.data, name))

    @property
    def body_pos(self) -> torch.Tensor:
        return self.wp.to_torch(self.model.body_pos)

    # ----------------------------------------------------------------- stepping
    def step(self, substeps: int) -> None:
        """``substeps`` physics steps of every world (a CUDA graph on a GPU, captured once)."""
        with on_device(self.device):
            if not (self.device.is_cuda and self.use_cuda_graph):
                for _ in range(substeps):
                    self.mjw.step(self.model, self.data)
                return
            if self._graph is None or self._graph_substeps != substeps:
                with self.wp.ScopedCapture() as capture:
                    for _ in range(substeps):
                        self.mjw.step(self.model, self.data)
                self._graph, self._graph_substeps = capture.graph, substeps
            self.wp.capture_launch(self._graph)

    def check_overflow(self) -> None:
        """Raise naming the overflow when a world dropped contacts or constraints (reads N ints)."""
        flags = self.field("overflow").cpu().numpy()
        overflow_type = self.mjw.OverflowType
        fatal = sum(int(getattr(overflow_type, name)) for name in FATAL_OVERFLOWS)
        bad = np.flatnonzero(flags & fatal)
        if bad.size:
            kinds = [name for name in FATAL_OVERFLOWS if flags[bad[0]] & int(getattr(overflow_type, name))]
            raise RuntimeError(
                f"MuJoCo Warp overflow {kinds} in worlds {bad[:8].tolist()}: more contacts or constraints "
                f"than allocated (nconmax, njmax = {self.limits}); raise them"
            )

    # ----------------------------------------------------------------- resets
    def reset(self, worlds: Sequence[int], rows: WorldRows) -> None:
        """Reset ``worlds`` (MuJoCo Warp's masked reset) to ``rows`` and compute their kinematics."""
        index = torch.as_tensor(list(worlds), dtype=torch.long, device=self.device.torch)
        mask = torch.zeros(self.num_worlds, dtype=torch.bool, device=self.device.torch)
        mask[index] = True
        with on_device(self.device):
            self.mjw.reset_data(self.model, self.data, reset=self.wp.from_torch(mask))
        self.field("qpos")[index] = self._rows(rows.qpos)
        self.field("ctrl")[index] = self._rows(rows.ctrl)
        self.body_pos[index] = self._rows(rows.body_pos)
        self.kinematics(self.field("qpos"), with_cameras=True)
        for name in KINEMATIC_FIELDS:
            self.field(name)[index] = self.field(name, scratch=True)[index]
        self._static_geoms.place(self, index)

    def kinematics(self, qpos: torch.Tensor, with_cameras: bool = False) -> None:
        """Forward kinematics of the scratch worlds at ``qpos`` (N, nq); cameras and lights too if asked."""
        self.field("qpos", scratch=True).copy_(qpos)
        with on_device(self.device):
            self.mjw.kinematics(self.model, self.scratch)
            if with_cameras:
                self.mjw.com_pos(self.model, self.scratch)  # camlight reads the subtree centres
                self.mjw.camlight(self.model, self.scratch)

    def _rows(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float32), device=self.device.torch)


@dataclass(frozen=True)
class _StaticGeoms:
    """The geoms of bodies welded to the world. MuJoCo Warp computes their poses once, when the data
    is made, and never again; a reset that moves such bodies (buttons, plate, cabinet) places their
    geoms itself, or the worlds would collide with and render them at the scene's nominal places."""

    geoms: torch.Tensor  # (G,) geom ids
    bodies: torch.Tensor  # (G,) their bodies
    local_pos: torch.Tensor  # (G, 3) geom_pos
    local_mat: torch.Tensor  # (G, 3, 3) geom_quat as a matrix

    @classmethod
    def of(cls, model: mujoco.MjModel, device: torch.device) -> _StaticGeoms:
        geoms = np.flatnonzero(model.body_weldid[model.geom_bodyid] == 0)
        mats = np.zeros((len(geoms), 9))
        for row, geom in enumerate(geoms):
            mujoco.mju_quat2Mat(mats[row], model.geom_quat[geom])

        def tensor(array: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(array, dtype=dtype, device=device)

        return cls(tensor(geoms, torch.long), tensor(model.geom_bodyid[geoms], torch.long),
                   tensor(model.geom_pos[geoms]), tensor(mats.reshape(-1, 3, 3)))  # fmt: skip

    def place(self, sim: WarpSim, worlds: torch.Tensor) -> None:
        """geom_xpos/geom_xmat of the static geoms of ``worlds`` from their bodies' poses."""
        rows, geoms = worlds[:, None], self.geoms[None, :]
        xpos = sim.field("xpos")[rows, self.bodies[None, :]]  # (k, G, 3)
        xmat = sim.field("xmat")[rows, self.bodies[None, :]]  # (k, G, 3, 3)
        sim.field("geom_xpos")[rows, geoms] = xpos + (xmat @ self.local_pos[..., None])[..., 0]
        sim.field("geom_xmat")[rows, geoms] = xmat @ self.local_mat
