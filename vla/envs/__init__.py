"""Environments: the MuJoCo tabletop suite, the Meta-World adapter, and `vla record`.

Importing this package sets ``MUJOCO_GL=egl`` when unset (headless rendering) and registers every
tabletop task with gymnasium as ``vla/<task>-v0`` (e.g. ``gymnasium.make("vla/reach-red-v0")``).
It stays light: the simulator and Meta-World load only when an environment is built.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")


def _register_tabletop() -> None:
    import gymnasium as gym

    from vla.envs.tabletop.tasks import TASKS  # plain data: no MuJoCo import

    for name, spec in TASKS.items():
        if spec.gym_id not in gym.registry:
            gym.register(
                id=spec.gym_id,
                entry_point="vla.envs.tabletop:make",
                kwargs={"task": name},
                disable_env_checker=True,
            )


_register_tabletop()
