"""What the batched env reads off the simulator, as (N, ...) tensors: proprioception and task state.

``proprioception`` is ``TabletopEnv._state`` for every world (same layout as its ``state_names``);
``world_state`` gathers what the success tests read. Like the classic env, both read the kinematics
MuJoCo computed at the start of the last physics step (``site_xpos``, ``xpos``) and the joint state
after it (``qpos``, ``qvel``).
"""

from __future__ import annotations

import torch

from vla.envs.tabletop import scene
from vla.envs.tabletop.batched.sim import WarpSim
from vla.envs.tabletop.batched.success import WorldState


def mat_to_quat(mat: torch.Tensor) -> torch.Tensor:
    """(N, 4) unit quaternions (w, x, y, z) of rotation matrices (N, 3, 3): ``mju_mat2Quat``'s
    branches (the largest component computed first), so signs agree with the classic env's."""
    m = mat.reshape(-1, 9)
    m0, m1, m2, m3, m4, m5, m6, m7, m8 = m.unbind(-1)

    def from_largest(largest: torch.Tensor, order: tuple[int, int, int, int], others: tuple) -> torch.Tensor:
        big = 0.5 * torch.sqrt(torch.clamp(largest, min=1e-12))
        parts = [big, *(0.25 * o / big for o in others)]
        return torch.stack([parts[order.index(i)] for i in range(4)], -1)

    w = from_largest(1 + m0 + m4 + m8, (0, 1, 2, 3), (m7 - m5, m2 - m6, m3 - m1))
    x = from_largest(1 + m0 - m4 - m8, (1, 0, 2, 3), (m7 - m5, m1 + m3, m2 + m6))
    y = from_largest(1 - m0 + m4 - m8, (2, 0, 1, 3), (m2 - m6, m1 + m3, m5 + m7))
    z = from_largest(1 - m0 - m4 + m8, (3, 0, 1, 2), (m3 - m1, m2 + m6, m5 + m7))
    quat = torch.where(
        (m0 + m4 + m8 > 0)[:, None],
        w,
        torch.where(((m0 > m4) & (m0 > m8))[:, None], x, torch.where((m4 > m8)[:, None], y, z)),
    )
    return quat / torch.linalg.norm(quat, dim=-1, keepdim=True)


def proprioception(sim: WarpSim) -> torch.Tensor:
    """(N, 20) float32: arm joints, their velocities, gripper opening, end-effector position and
    orientation (``TabletopEnv.state_names``)."""
    ids = sim.ids
    qpos, qvel = sim.field("qpos"), sim.field("qvel")
    ee = sim.field("site_xpos")[:, ids.ee_site]
    quat = mat_to_quat(sim.field("site_xmat")[:, ids.ee_site])
    opening = qpos[:, ids.finger_qpos].sum(-1, keepdim=True)
    return torch.cat([qpos[:, ids.arm_qpos], qvel[:, ids.arm_dof], opening, ee, quat], -1).float()


def block_positions(sim: WarpSim) -> torch.Tensor:
    """(N, 3, 3) block centres, colours in ``scene.COLOURS`` order."""
    return sim.field("xpos")[:, [sim.ids.block_body[c] for c in scene.COLOURS]]


def world_state(sim: WarpSim, initial_blocks: torch.Tensor) -> WorldState:
    """What the success tests read, for every world."""
    ids = sim.ids
    qpos, xpos = sim.field("qpos"), sim.field("xpos")
    return WorldState(
        ee=sim.field("site_xpos")[:, ids.ee_site],
        blocks=block_positions(sim),
        initial_blocks=initial_blocks,
        button_depth=qpos[:, [ids.button_qpos[c] for c in scene.COLOURS]],
        plate=xpos[:, ids.plate_body],
        drawer=qpos[:, ids.drawer_qpos],
        gripper=qpos[:, ids.finger_qpos].sum(-1),
    )
