"""Does a policy read its instruction? A diagnostic on recorded episodes, no simulation.

For episodes of a store it compares, per task family and at two moments (the first frame and the
middle frame), three mean absolute differences over the first 4 actions of the chunk (position
dimensions, normalized action units):

- ``error``: the policy's chunk against the expert's actions (what it gets wrong);
- ``colour swap``: the chunk for the true instruction against the chunk for the same instruction with
  its colour word replaced (red -> green -> blue -> red): near 0 means the colour is ignored;
- ``target``: the size of the expert's actions, for scale.

A policy that grounds the colour changes its chunk by about the size of the action when the colour
changes (a reach-only tiny128 policy: 0.70 against a target of 0.91 at the first frame); one that
does not (the same policy trained on reach, press and pick: 0.003) can only average the blocks.
Started on reach (``train.curriculum_tasks``), the reach + press + pick policy reaches 0.35-0.42.

    .venv/bin/python scripts/instruction_sensitivity.py runs/benchmark/demo/train runs/benchmark/demo/data.zarr
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from vla.data import TrajectoryStore  # noqa: E402
from vla.features import STATE_KEY  # noqa: E402
from vla.policies import load_policy  # noqa: E402

COLOURS = ("red", "green", "blue")


def swap_colour(instruction: str) -> str | None:
    """``instruction`` with its first colour word replaced by the next colour, or None without one."""
    words = instruction.split()
    for i, word in enumerate(words):
        if word in COLOURS:
            words[i] = COLOURS[(COLOURS.index(word) + 1) % len(COLOURS)]
            return " ".join(words)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("store")
    parser.add_argument("--episodes", type=int, default=90, help="episodes drawn from the store")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    policy = load_policy(args.checkpoint, device="cpu")
    rows: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    with TrajectoryStore.open(args.store, mode="r") as store:
        rng = np.random.default_rng(args.seed)
        chosen = rng.choice(store.num_episodes, min(args.episodes, store.num_episodes), replace=False)
        for index in chosen:
            meta = store.episode_meta(int(index))
            swapped = swap_colour(meta.instruction)
            if swapped is None:
                continue
            episode = store.read_episode(int(index))
            length = len(episode["action"])
            family = str(meta.extra.get("task", meta.env_id or "?")).split("-")[0]
            for moment, t in (("first frame", 0), ("middle frame", length // 2)):
                batch = {key: np.stack([episode[key][t][None]] * 2) for key in policy.spec.camera_keys}
                batch[STATE_KEY] = np.stack([episode[STATE_KEY][t][None]] * 2)
                batch["instruction"] = [meta.instruction, swapped]
                chunks = policy.predict_chunks(batch)[:, :4, :3]
                target = episode["action"][np.minimum(np.arange(t, t + 4), length - 1), :3]
                cell = rows[(family, moment)]
                cell["error"].append(float(np.abs(chunks[0] - target).mean()))
                cell["colour swap"].append(float(np.abs(chunks[0] - chunks[1]).mean()))
                cell["target"].append(float(np.abs(target).mean()))
    print(f"{'family':10s} {'moment':13s} {'error':>7s} {'colour swap':>12s} {'target':>7s}  episodes")
    for (family, moment), cell in sorted(rows.items()):
        print(f"{family:10s} {moment:13s} {np.mean(cell['error']):7.3f} {np.mean(cell['colour swap']):12.3f} "
              f"{np.mean(cell['target']):7.3f}  {len(cell['error'])}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
