"""Inverse kinematics by damped least squares on the site Jacobian (``mujoco.mj_jac``).

The solver runs on a scratch ``MjData`` so it never disturbs the simulation: each iteration sets the
arm joints, recomputes forward kinematics and takes one step
``dq = J^T (J J^T + lambda^2 I)^-1 e`` toward the target position and orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np


@dataclass
class DlsIk:
    """Solve arm joint positions that put a site at a target pose."""

    model: mujoco.MjModel
    site: int
    qpos_adr: np.ndarray
    dof_adr: np.ndarray
    joint_range: np.ndarray  # (n, 2)
    damping: float = 0.03
    rotation_weight: float = 0.5  # radians count half as much as metres: position matters most
    iterations: int = 3  # warm-started from the current joints: targets move <= 2 cm per step

    def __post_init__(self) -> None:
        self._data = mujoco.MjData(self.model)
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))

    def solve(self, qpos: np.ndarray, target_pos: np.ndarray, target_rot: np.ndarray) -> np.ndarray:
        """Arm joint positions (n,) reaching ``target_pos``/``target_rot``, starting from full ``qpos``."""
        d, m = self._data, self.model
        d.qpos[:] = qpos
        q = qpos[self.qpos_adr].copy()
        lam2 = self.damping**2
        for _ in range(self.iterations):
            d.qpos[self.qpos_adr] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)  # mj_jac needs the com-based frames
            pos = d.site_xpos[self.site]
            rot = d.site_xmat[self.site].reshape(3, 3)
            error = np.concatenate([target_pos - pos, self.rotation_weight * rotation_error(rot, target_rot)])
            mujoco.mj_jac(m, d, self._jacp, self._jacr, pos, m.site_bodyid[self.site])
            jac = np.vstack([self._jacp[:, self.dof_adr], self.rotation_weight * self._jacr[:, self.dof_adr]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + lam2 * np.eye(6), error)
            q = np.clip(q + dq, self.joint_range[:, 0], self.joint_range[:, 1])
        return q


def rotation_error(rot: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Small-angle rotation vector taking ``rot`` to ``target`` (both 3x3, world frame).

    Equals ``0.5 * sum_i cross(rot[:, i], target[:, i])``, written as the skew part of
    ``target @ rot.T`` because ``np.cross`` costs ~70 us a call, more than the whole kinematics.
    """
    m = target @ rot.T
    return 0.5 * np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1]])
