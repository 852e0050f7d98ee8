"""Where does a policy's hand go on Meta-World reach? A diagnostic in the simulator.

For each evaluation seed it rolls the policy out on ``reach-v3`` (as ``vla eval`` does: the
checkpoint's own replanning, fresh flow noise) and prints whether it succeeded, the hand's closest
distance to the goal and to the puck, its final distance to the goal, and the hand-minus-goal offset
(x sideways, y depth, z height, metres) at the closest point. Meta-World counts success within 5 cm.
What it showed for the MT10 recipe (README, MT10): on failed seeds the hand stops below the goal, the
height error the largest of the three axes.

    .venv/bin/python scripts/reach_errors.py runs/benchmark/metaworld_mt10/train --seeds 1040000-1040004

Without ``--seeds`` it runs reach-v3's first five published evaluation seeds (``vla eval``'s).

The env is an ``envs/`` config (``--env``, default ``metaworld_mt10``) at the checkpoint's image size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from vla.envs.registry import make_env  # noqa: E402
from vla.evaluation.api import plain_env_config, resolve_tasks  # noqa: E402
from vla.evaluation.protocol import seeds_per_task  # noqa: E402
from vla.evaluation.trace import trace_episode  # noqa: E402
from vla.policies import load_policy  # noqa: E402


def seed_range(text: str) -> list[int]:
    """``a-b`` (inclusive) or ``a,b,c``."""
    if "-" in text:
        first, last = (int(part) for part in text.split("-"))
        return list(range(first, last + 1))
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a vla train run or checkpoint directory")
    parser.add_argument("--seeds", type=seed_range, help="a-b or a,b,c (default: the first five published)")
    parser.add_argument("--env", default="metaworld_mt10", help="a Meta-World config of envs/ (its cameras)")
    args = parser.parse_args()
    policy = load_policy(args.checkpoint, device="cpu")
    height, width, _ = policy.spec.image_shape
    env_cfg = plain_env_config(args.env)
    # The published seeds are numbered by the task's place in the suite's list, as vla eval numbers them.
    seeds = args.seeds or seeds_per_task(["reach-v3"], 5, resolve_tasks(env_cfg, ["reach-v3"])[1])["reach-v3"]
    env = make_env(env_cfg, "reach-v3", image_size=[height, width])
    sim = env._mw  # the Meta-World env inside: the goal and hand positions the policy never sees
    for seed in seeds:
        hands, success = trace_episode(env, policy, seed, lambda: sim.tcp_center, env.max_episode_steps)
        # Read after the episode: the goal is fixed, and reach-v3 never asks the hand to move the puck.
        goal, puck = np.array(sim._target_pos), np.array(sim._get_pos_objects()[:3])
        to_goal = np.linalg.norm(hands - goal, axis=1)
        closest = int(np.argmin(to_goal))
        to_puck = np.linalg.norm(hands - puck, axis=1).min()
        offset = ", ".join(
            f"{axis} {100 * v:+.1f}" for axis, v in zip("xyz", hands[closest] - goal, strict=True)
        )
        print(f"seed {seed}: {'success' if success else 'failure'} after {len(hands)} steps; goal closest "
              f"{100 * to_goal[closest]:.1f} cm (hand - goal: {offset} cm), final {100 * to_goal[-1]:.1f} cm; "
              f"puck closest {100 * to_puck:.1f} cm", flush=True)  # fmt: skip
    env.close()


if __name__ == "__main__":
    main()
