"""Batched damped-least-squares IK: :class:`vla.envs.tabletop.ik.DlsIk`'s iteration for N worlds.

Same damping, rotation weight and iteration count as the classic solver (read from it), the same
step ``dq = J^T (J J^T + lambda^2 I)^-1 e`` and the same joint clipping; the forward kinematics of
each iteration run on the simulator's scratch worlds, the linear algebra in torch on the device.
The Jacobian of a hinge joint's column is ``(axis x (p - anchor), axis)``, what ``mj_jac`` gives.
"""

from __future__ import annotations

import torch

from vla.envs.tabletop import scene
from vla.envs.tabletop.batched.sim import WarpSim
from vla.envs.tabletop.ik import DlsIk


def rotation_error(rot: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3) small-angle rotation vectors taking ``rot`` (N, 3, 3) to ``target`` (3, 3) (as ik.rotation_error)."""
    m = target @ rot.transpose(-1, -2)
    return 0.5 * torch.stack([m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1)


class BatchedDlsIk:
    """Arm joint positions putting the end-effector site at a target pose, for every world at once."""

    def __init__(self, sim: WarpSim) -> None:
        ids = sim.ids
        self.sim = sim
        device = sim.device.torch
        self.site = ids.ee_site
        self.qpos_adr = torch.as_tensor(ids.arm_qpos, device=device)
        joints = [sim.host_model.joint(name).id for name in scene.ARM_JOINTS]
        self.joints = torch.as_tensor(joints, device=device)
        self.low = torch.as_tensor(ids.arm_range[:, 0], dtype=torch.float32, device=device)
        self.high = torch.as_tensor(ids.arm_range[:, 1], dtype=torch.float32, device=device)
        self.damping, self.rotation_weight, self.iterations = (
            DlsIk.damping,
            DlsIk.rotation_weight,
            DlsIk.iterations,
        )

    def solve(self, qpos: torch.Tensor, target_pos: torch.Tensor, target_rot: torch.Tensor) -> torch.Tensor:
        """(N, 6) arm joints reaching ``target_pos`` (N, 3) with orientation ``target_rot`` (3, 3),
        starting from the full ``qpos`` (N, nq)."""
        full = qpos.clone()
        q = full[:, self.qpos_adr]
        eye = torch.eye(6, dtype=q.dtype, device=q.device)
        for _ in range(self.iterations):
            full[:, self.qpos_adr] = q
            self.sim.kinematics(full)
            pos = self.sim.field("site_xpos", scratch=True)[:, self.site]
            rot = self.sim.field("site_xmat", scratch=True)[:, self.site]
            error = torch.cat([target_pos - pos, self.rotation_weight * rotation_error(rot, target_rot)], -1)
            axis = self.sim.field("xaxis", scratch=True)[:, self.joints]  # (N, 6, 3)
            anchor = self.sim.field("xanchor", scratch=True)[:, self.joints]
            jacp = torch.linalg.cross(axis, pos[:, None, :] - anchor, dim=-1).transpose(1, 2)  # (N, 3, 6)
            jac = torch.cat([jacp, self.rotation_weight * axis.transpose(1, 2)], 1)  # (N, 6, 6)
            system = jac @ jac.transpose(1, 2) + self.damping**2 * eye
            dq = (jac.transpose(1, 2) @ torch.linalg.solve(system, error[..., None]))[..., 0]
            q = torch.clamp(q + dq, self.low, self.high)
        return q
