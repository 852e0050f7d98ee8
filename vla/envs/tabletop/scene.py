"""The tabletop scene: load the MJCF shipped with the package, name its parts, randomize layouts.

Frame: x forward from the robot base, y to the robot's left, z up, table top at z = 0. Every task
shares this one scene (three coloured blocks, three coloured buttons, a plate, a drawer cabinet and
a yellow distractor cylinder); tasks differ by their instruction, their success test and, for the
drawer tasks, the drawer's initial opening.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

import mujoco
import numpy as np

COLOURS: tuple[str, ...] = ("red", "green", "blue")
ARM_JOINTS: tuple[str, ...] = tuple(f"joint{i}" for i in range(1, 7))
FINGER_JOINTS: tuple[str, ...] = ("finger_left", "finger_right")
FINGER_MAX = 0.05  # metres each finger travels; the full opening is twice this
HOME_QPOS = np.array([0.0, 0.15, 0.1, 0.0, -0.25, 0.0])  # gripper pointing down, above the table
BLOCK_HALF = 0.025
BUTTON_TRAVEL = 0.012

# Where objects may be placed: a box in front of the robot, cut to the arm's comfortable reach.
OBJECT_X = (0.28, 0.58)
OBJECT_Y = (-0.17, 0.3)
MAX_RADIUS = 0.6
# Clearance radius of each placed item (footprint plus room for the fingers).
ITEM_RADIUS: dict[str, float] = {
    **{f"block_{c}": 0.05 for c in COLOURS},
    **{f"button_{c}": 0.055 for c in COLOURS},
    "plate": 0.075,
    "distractor_cylinder": 0.04,
}
CABINET_X = (0.44, 0.54)  # the cabinet slides a little along x; its y is fixed at the right edge
CABINET_Y = -0.42


@cache
def scene_xml() -> str:
    """The scene's MJCF text (read once from the package)."""
    return resources.files("vla.envs.tabletop").joinpath("assets/scene.xml").read_text()


def load_model(fast_render: bool = True) -> mujoco.MjModel:
    """Compile a fresh model (each env owns its own, since resets move fixed bodies).

    ``fast_render=False`` restores MuJoCo's default render quality (4096 shadow map, 4x
    multisampling, shadow-casting light): only the benchmark's baseline uses it.
    """
    model = mujoco.MjModel.from_xml_string(scene_xml())
    if not fast_render:
        model.vis.quality.shadowsize = 4096
        model.vis.quality.offsamples = 4
        model.light_castshadow[:] = 1
    return model


@dataclass(frozen=True)
class SceneIds:
    """Indices into qpos/qvel/ctrl and object ids, resolved once per model."""

    arm_qpos: np.ndarray
    arm_dof: np.ndarray
    arm_ctrl: np.ndarray
    finger_qpos: np.ndarray
    finger_ctrl: np.ndarray
    arm_range: np.ndarray  # (6, 2)
    ee_site: int
    handle_site: int
    block_qpos: dict[str, int]  # colour -> qpos address of its free joint
    block_body: dict[str, int]
    button_body: dict[str, int]
    button_qpos: dict[str, int]
    plate_body: int
    cabinet_body: int
    drawer_qpos: int
    distractor_qpos: int

    @classmethod
    def of(cls, model: mujoco.MjModel) -> SceneIds:
        def jnt(name: str) -> int:
            return model.joint(name).id

        arm = [jnt(n) for n in ARM_JOINTS]
        return cls(
            arm_qpos=np.array([model.jnt_qposadr[j] for j in arm]),
            arm_dof=np.array([model.jnt_dofadr[j] for j in arm]),
            arm_ctrl=np.array([model.actuator(n).id for n in ARM_JOINTS]),
            finger_qpos=np.array([model.jnt_qposadr[jnt(n)] for n in FINGER_JOINTS]),
            finger_ctrl=np.array([model.actuator(n).id for n in FINGER_JOINTS]),
            arm_range=np.array([model.jnt_range[j] for j in arm]),
            ee_site=model.site("ee").id,
            handle_site=model.site("handle").id,
            block_qpos={c: int(model.jnt_qposadr[jnt(f"block_{c}")]) for c in COLOURS},
            block_body={c: model.body(f"block_{c}").id for c in COLOURS},
            button_body={c: model.body(f"button_{c}").id for c in COLOURS},
            button_qpos={c: int(model.jnt_qposadr[jnt(f"button_{c}")]) for c in COLOURS},
            plate_body=model.body("plate").id,
            cabinet_body=model.body("cabinet").id,
            drawer_qpos=int(model.jnt_qposadr[jnt("drawer")]),
            distractor_qpos=int(model.jnt_qposadr[jnt("distractor_cylinder")]),
        )


@dataclass(frozen=True)
class Layout:
    """One randomized arrangement: xy of every placed item, the cabinet's x, the drawer opening."""

    positions: dict[str, np.ndarray]
    cabinet_x: float
    drawer_opening: float


# A task may refuse a layout (e.g. a push needs a clear corridor): (positions, cabinet_x) -> ok.
LayoutCheck = Callable[[dict[str, np.ndarray], float], bool]


# The "slots" layout: the three blocks sit in three fixed places (a random colour in each, jittered by
# up to SLOT_JITTER metres); everything else is placed freely around them. Which block an instruction
# means still changes with every seed, so language decides the target, but locating it is a three-way
# choice instead of a regression over the whole table: a policy learns it in minutes on a CPU.
BLOCK_SLOTS = np.array([[0.42, -0.12], [0.42, 0.05], [0.42, 0.22]])
SLOT_JITTER = 0.03
LAYOUTS = ("free", "slots")


def sample_layout(
    rng: np.random.Generator,
    drawer_opening: float = 0.0,
    check: LayoutCheck | None = None,
    min_y: float = OBJECT_Y[0],
    max_tries: int = 1000,
    layout: str = "free",
) -> Layout:
    """Place every item without overlaps (rejection sampling), accepted by ``check`` if given.

    ``layout="slots"`` puts the blocks in :data:`BLOCK_SLOTS` (colours shuffled, positions jittered).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    for _ in range(max_tries):
        cabinet_x = float(rng.uniform(*CABINET_X))
        positions: dict[str, np.ndarray] = {}
        if layout == "slots":
            slots = BLOCK_SLOTS[rng.permutation(len(COLOURS))]
            for colour, slot in zip(COLOURS, slots, strict=True):
                positions[f"block_{colour}"] = slot + rng.uniform(-SLOT_JITTER, SLOT_JITTER, 2)
        for name, radius in ITEM_RADIUS.items():
            if name in positions:
                continue
            for _ in range(200):
                xy = np.array([rng.uniform(*OBJECT_X), rng.uniform(min_y, OBJECT_Y[1])])
                if np.linalg.norm(xy) > MAX_RADIUS:
                    continue
                if all(np.linalg.norm(xy - p) > radius + ITEM_RADIUS[o] for o, p in positions.items()):
                    positions[name] = xy
                    break
            else:
                break  # this item found no room: start the whole layout again
        if len(positions) == len(ITEM_RADIUS) and (check is None or check(positions, cabinet_x)):
            return Layout(positions, cabinet_x, drawer_opening)
    raise RuntimeError(f"no valid layout found in {max_tries} tries; the task's layout check is too strict")


def apply_layout(model: mujoco.MjModel, data: mujoco.MjData, ids: SceneIds, layout: Layout) -> None:
    """Reset ``data`` to the home pose with the objects of ``layout`` (then mj_forward)."""
    mujoco.mj_resetData(model, data)
    data.qpos[ids.arm_qpos] = HOME_QPOS
    data.ctrl[ids.arm_ctrl] = HOME_QPOS
    data.qpos[ids.finger_qpos] = FINGER_MAX
    data.ctrl[ids.finger_ctrl] = FINGER_MAX
    for colour in COLOURS:
        adr = ids.block_qpos[colour]
        data.qpos[adr : adr + 3] = [*layout.positions[f"block_{colour}"], BLOCK_HALF]
        data.qpos[adr + 3 : adr + 7] = [1, 0, 0, 0]
        model.body_pos[ids.button_body[colour]][:2] = layout.positions[f"button_{colour}"]
    adr = ids.distractor_qpos
    data.qpos[adr : adr + 3] = [*layout.positions["distractor_cylinder"], 0.03]
    data.qpos[adr + 3 : adr + 7] = [1, 0, 0, 0]
    model.body_pos[ids.plate_body][:2] = layout.positions["plate"]
    model.body_pos[ids.cabinet_body][:2] = [layout.cabinet_x, CABINET_Y]
    data.qpos[ids.drawer_qpos] = layout.drawer_opening
    mujoco.mj_forward(model, data)
