"""Which object does a tabletop policy go to? A diagnostic in the simulator.

For each evaluation seed it rolls the policy out (as ``vla eval`` does: the checkpoint's own
replanning, fresh flow noise) and prints whether it succeeded, the object the hand ended nearest to
(in the table plane: the three blocks and the three buttons) and how close the hand came to the
task's own target. A failure that ends on the target's same-coloured twin (the button when told to
reach the block, the block when told to press the button) read the colour word but not the family
word; one that ends on another colour did not read the colour.
What it showed (README, "What moved success", row 38): `tiny128` after 3,000 steps on the demo's
nine tasks went to the same-coloured object of the wrong kind; `tiny128_deep` (row 42) does not.

    .venv/bin/python scripts/tabletop_targets.py runs/benchmark/demo/train --tasks reach-green press-green

Seeds are each task's first ``--episodes`` published evaluation seeds (``vla eval``'s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from vla.envs.registry import make_env  # noqa: E402
from vla.envs.tabletop.scene import COLOURS  # noqa: E402
from vla.evaluation.api import plain_env_config, resolve_tasks  # noqa: E402
from vla.evaluation.protocol import seeds_per_task  # noqa: E402
from vla.evaluation.trace import trace_episode  # noqa: E402
from vla.policies import load_policy  # noqa: E402


def target_name(task: str) -> str:
    """The object a reach / press / pick task is about: ``button_<colour>`` or ``block_<colour>``."""
    family, colour = task.split("-")[:2]
    return f"{'button' if family == 'press' else 'block'}_{colour}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", help="a vla train run or checkpoint directory")
    parser.add_argument("--tasks", nargs="+", required=True, help="reach-, press- or pick- tasks")
    parser.add_argument("--episodes", type=int, default=8, help="published evaluation seeds per task")
    parser.add_argument("--env", default="tabletop_demo", help="a tabletop config of envs/")
    args = parser.parse_args()
    policy = load_policy(args.checkpoint, device="cpu")
    env_cfg = plain_env_config(args.env)
    tasks, all_tasks = resolve_tasks(env_cfg, args.tasks)
    seeds = seeds_per_task(tasks, args.episodes, all_tasks)
    height, width, _ = policy.spec.image_shape
    for task in tasks:
        env = make_env(env_cfg, task, image_size=[height, width])
        for seed in seeds[task]:
            hands, success = trace_episode(env, policy, seed, env.ee_pos, env.max_steps)
            objects = {f"block_{c}": env.initial_block_pos(c) for c in COLOURS}  # where they started
            objects |= {f"button_{c}": env.button_pos(c) for c in COLOURS}
            path = hands[:, :2]
            final = {name: float(np.linalg.norm(path[-1] - pos[:2])) for name, pos in objects.items()}
            nearest = min(final, key=final.get)
            closest = float(np.linalg.norm(path - objects[target_name(task)][:2], axis=1).min())
            print(f"{task} seed {seed}: {'success' if success else 'failure'} after {len(hands)} steps; "
                  f"ends nearest {nearest} ({100 * final[nearest]:.1f} cm); target {target_name(task)} "
                  f"closest {100 * closest:.1f} cm", flush=True)  # fmt: skip
        env.close()


if __name__ == "__main__":
    main()
