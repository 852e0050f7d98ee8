"""The tabletop suite on MuJoCo Warp: thousands of worlds of the same scene stepped at once.

``env.backend=warp`` in an env config runs ``vla eval`` and ``vla record`` here
(:class:`BatchedTabletopEnv`); ``tabletop.make(task, backend="warp")`` gives one world as a gym env
(:class:`WarpTabletopEnv`). Warp and MuJoCo Warp are imported when a batched env is built, never
before (:mod:`.runtime`).
"""

from vla.envs.tabletop.batched.env import BatchedTabletopEnv, BatchStep, WorldEpisode

__all__ = ["BatchStep", "BatchedTabletopEnv", "WorldEpisode"]
