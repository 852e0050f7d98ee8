"""Compare vla tiny/small with lerobot's ACT and Diffusion Policy on the same demonstrations.

Every policy trains on the same trajectory store (lerobot's on its LeRobot copy, made by
``vla convert to-lerobot``) for the same number of optimizer steps on the CPU, and is evaluated by
``vla.evaluation.evaluate`` on the same tasks and evaluation seeds (lerobot checkpoints through
:mod:`vla.interop.lerobot_policy`). The Markdown table gives success per task, parameter count,
training wall time (the whole training command, start-up and data loading included) and inference
latency (median ``predict_chunks`` time for one observation).

    python scripts/compare_baselines.py --store data/tabletop_demo.zarr --env tabletop_demo --steps 1500
    # the same wall-clock budget instead (the README's table): steps per policy chosen so that each
    # trains for about as long as vla-tiny's 3,000 steps on the 2-core CPU (~6 minutes)
    python scripts/compare_baselines.py --store data/tabletop_demo.zarr --env tabletop_demo \
        --steps 3000 --policy-steps act=285,diffusion=360,vla-small=33 --episodes-per-task 20

A rerun into the same ``--out`` reuses the rows whose steps, batch, episodes, store and env did not change.

lerobot trains through its own entry point (``python -m lerobot.scripts.lerobot_train``), offline.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vla.machine import describe_machine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


REPO_ID = "local/compare_baselines"
ALL_POLICIES = ("vla-tiny", "vla-small", "act", "diffusion")


@dataclass
class Result:
    """One row of the comparison."""

    policy: str
    parameters: int
    train_steps: int
    batch_size: int
    train_seconds: float
    latency_ms: float
    episodes_per_task: int = 0
    success: dict[str, str] = field(default_factory=dict)  # task -> "rate% (k/n)"
    overall: str = ""
    checkpoint: str = ""
    store: str = ""  # the data and the evaluation env the row was measured on
    env: str = ""


# ---------------------------------------------------------------- training
def train_vla(size: str, args: argparse.Namespace) -> Path:
    """``vla train store=<store> policy=<size>`` for ``--steps`` steps; returns the run directory."""
    from vla.cli import main as vla_main

    run_dir = args.out / f"vla-{size}"
    if run_dir.exists():
        shutil.rmtree(run_dir)  # same budget every time: never resume an older run
    argv = [
        "train",
        f"store={args.store}",
        f"policy={size}",
        f"out={run_dir}",
        f"train.steps={args.steps_for[f'vla-{size}']}",
        f"train.batch_size={args.batch_size}",
        "device=cpu",
    ]
    if vla_main(argv) != 0:
        raise RuntimeError(f"vla {' '.join(argv)} failed")
    return run_dir


def _diffusion_args(lerobot_root: Path) -> list[str]:
    """Diffusion Policy crops its images (default 84x84): crop to ~90% of ours instead."""
    info = json.loads((lerobot_root / "meta" / "info.json").read_text())
    sizes = [ft["shape"][:2] for ft in info["features"].values() if ft["dtype"] == "video"]
    crop = int(0.9 * min(min(s) for s in sizes))
    return ["--policy.type=diffusion", f"--policy.crop_shape=[{crop},{crop}]"]


# lerobot policy -> its arguments to lerobot_train (offline: no pretrained ImageNet backbone).
LEROBOT_POLICY_ARGS: dict[str, Callable[[Path], list[str]]] = {
    "act": lambda root: ["--policy.type=act", "--policy.pretrained_backbone_weights=null"],
    "diffusion": _diffusion_args,
}
# Presets on top: "default" is lerobot's own configuration (Diffusion Policy: 267M parameters and
# 100 denoising steps, over a minute per training step and per action chunk on a 2-core CPU);
# "cpu" shrinks the networks so the comparison runs on a CPU. The table names the preset.
LEROBOT_PRESETS: dict[str, dict[str, list[str]]] = {
    "default": {"act": [], "diffusion": []},
    "cpu": {
        "act": ["--policy.dim_model=256", "--policy.dim_feedforward=1024", "--policy.n_encoder_layers=2"],
        "diffusion": [
            "--policy.down_dims=[128,256,512]",
            "--policy.noise_scheduler_type=DDIM",
            "--policy.num_inference_steps=10",
            # lerobot warms up for 500 steps: longer than a CPU budget's whole run, so shorten it.
            "--policy.scheduler_warmup_steps=50",
        ],
    },
}


def train_lerobot(kind: str, args: argparse.Namespace, lerobot_root: Path) -> Path:
    """lerobot's own training script on the converted dataset; returns its pretrained_model folder."""
    out_dir = args.out / kind
    if out_dir.exists():
        shutil.rmtree(out_dir)  # lerobot refuses an existing output_dir unless resuming
    command = [
        sys.executable, "-m", "lerobot.scripts.lerobot_train",
        f"--dataset.repo_id={REPO_ID}", f"--dataset.root={lerobot_root}", "--dataset.video_backend=pyav",
        *LEROBOT_POLICY_ARGS[kind](lerobot_root), *LEROBOT_PRESETS[args.lerobot_preset][kind],
        "--policy.device=cpu", "--policy.push_to_hub=false",
        f"--steps={args.steps_for[kind]}", f"--batch_size={args.batch_size}", f"--num_workers={args.num_workers}",
        f"--save_freq={args.steps_for[kind]}", f"--log_freq={max(1, args.steps_for[kind] // 10)}", "--eval_freq=0",
        "--wandb.enable=false", f"--output_dir={out_dir}",
    ]  # fmt: skip
    subprocess.run(command, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    return out_dir / "checkpoints" / "last" / "pretrained_model"


def load_any(name: str, checkpoint: Path) -> Any:
    if name.startswith("vla-"):
        from vla.policies import load_policy

        return load_policy(checkpoint, device="cpu")
    from vla.interop.lerobot_policy import load_lerobot_policy

    return load_lerobot_policy(checkpoint, device="cpu")


# ---------------------------------------------------------------- measuring
def parameter_count(policy: Any) -> int:
    """Parameters of the network behind a policy (our Policy.model, or the adapter's lerobot policy)."""
    module = getattr(policy, "model", None) or getattr(policy, "policy", None)
    return int(sum(p.numel() for p in module.parameters())) if module is not None else -1


def latency_ms(policy: Any, store_path: Path, calls: int) -> float:
    """Median wall time of ``predict_chunks`` on one real observation history (batch of 1)."""
    from vla.data.store import TrajectoryStore

    store = TrajectoryStore.open(store_path)
    steps = int(policy.spec.n_obs_steps)
    episode = store.read_episode(0)
    batch: dict[str, Any] = {
        key: values[None, :steps] for key, values in episode.items() if key.startswith("observation.")
    }
    batch["instruction"] = [store.episode_meta(0).instruction]
    for _ in range(3):  # warm-up: allocator, lazy initialisation
        policy.predict_chunks(batch)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        policy.predict_chunks(batch)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def evaluate_policy(name: str, policy: Any, args: argparse.Namespace) -> tuple[dict[str, str], str]:
    from vla.evaluation.api import evaluate

    report = evaluate(
        policy,
        args.env,
        tasks=args.tasks,
        episodes_per_task=args.episodes_per_task,
        phrasings="train",
        num_envs=args.num_envs,
        video_count=0,
        out_dir=args.out / name / "eval",
        policy_name=name,
    )

    def cell(row: Any) -> str:
        return f"{100 * row.success_rate:.0f}% ({row.successes}/{row.episodes})"

    per_task = {row.group: cell(row) for row in report.per_task if row.phrasing == "train"}
    overall = next((cell(row) for row in report.overall if row.phrasing == "train"), "")
    return per_task, overall


# ---------------------------------------------------------------- report


def markdown(results: list[Result], args: argparse.Namespace) -> str:
    tasks = sorted({task for r in results for task in r.success})
    header = ["policy", "parameters", "train steps", "train time", "latency (B=1)", *tasks, "overall"]
    lines = [
        f"# Baselines on `{args.store}` (env `{args.env}`)",
        "",
        f"Same demonstrations, batch {args.batch_size}, "
        + (
            f"{args.steps_for[args.policies[0]]} optimizer steps each"
            if len({args.steps_for[p] for p in args.policies}) == 1
            else "optimizer steps per policy in the table (chosen to equalize training wall time)"
        )
        + "; CPU; "
        f"{args.episodes_per_task} evaluation episodes per task (vla.seeds.eval_seeds), training phrasings; "
        f"lerobot preset `{args.lerobot_preset}` (see LEROBOT_PRESETS in the script).",
        f"Machine: {describe_machine()}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in results:
        row = [r.policy, f"{r.parameters / 1e6:.2f}M", str(r.train_steps), f"{r.train_seconds:.0f} s",
               f"{r.latency_ms:.1f} ms", *[r.success.get(t, "-") for t in tasks], r.overall]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "Train time is the wall time of the whole training command (start-up, data loading and "
        "checkpointing included). Latency is the median of "
        f"{args.latency_calls} `predict_chunks` calls on one observation history, after warm-up.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="trajectory store of demonstrations")
    parser.add_argument("--env", required=True, help="env config to evaluate in (envs/<name>.yaml)")
    parser.add_argument("--tasks", nargs="*", default=None, help="tasks (default: the env config's)")
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps for every policy")
    parser.add_argument(
        "--policy-steps",
        default="",
        help="per-policy step counts overriding --steps, e.g. act=150,diffusion=200 (equal wall-clock budgets)",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--episodes-per-task", type=int, default=10)
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--num-workers", type=int, default=2, help="lerobot data loader workers")
    parser.add_argument("--latency-calls", type=int, default=20)
    parser.add_argument(
        "--lerobot-preset",
        choices=sorted(LEROBOT_PRESETS),
        default="cpu",
        help="lerobot network sizes: its defaults, or smaller ones that train on a CPU",
    )
    parser.add_argument("--policies", default=",".join(ALL_POLICIES), help=f"subset of {ALL_POLICIES}")
    parser.add_argument("--out", type=Path, default=Path("runs/compare_baselines"))
    args = parser.parse_args(argv)
    args.policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    unknown = [p for p in args.policies if p not in ALL_POLICIES]
    if unknown or args.steps < 1:
        parser.error(
            f"unknown policies {unknown} (choose from {ALL_POLICIES})" if unknown else "--steps must be >= 1"
        )
    args.steps_for = dict.fromkeys(ALL_POLICIES, args.steps)
    for item in filter(None, (p.strip() for p in args.policy_steps.split(","))):
        name, _, value = item.partition("=")
        if name not in ALL_POLICIES or not value.isdigit() or int(value) < 1:
            parser.error(
                f"bad --policy-steps entry {item!r}: expected <policy>=<steps >= 1>, policy in {ALL_POLICIES}"
            )
        args.steps_for[name] = int(value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    from vla.interop.to_lerobot import convert_to_lerobot

    lerobot_root = args.out / "lerobot_dataset"
    if any(not p.startswith("vla-") for p in args.policies):
        convert_to_lerobot(args.store, lerobot_root, REPO_ID)  # reused when already complete
    # A rerun keeps the rows whose budget did not change (same steps, batch, evaluation, data and
    # env), so adjusting one policy's steps retrains only that policy.
    results_path = args.out / "results.json"
    previous = {}
    if results_path.exists():
        for row in json.loads(results_path.read_text()):
            if set(row) == {f.name for f in fields(Result)}:
                previous[row["policy"]] = Result(**row)
    results = []
    for name in args.policies:
        old = previous.get(name)
        if old and (old.train_steps, old.batch_size, old.episodes_per_task, old.store, old.env) == (
            args.steps_for[name],
            args.batch_size,
            args.episodes_per_task,
            str(args.store),
            str(args.env),
        ):
            print(f"== {name}: reusing the result in {results_path} (same budget)", flush=True)
            results.append(old)
            continue
        print(f"== {name}: training {args.steps_for[name]} steps", flush=True)
        start = time.perf_counter()
        if name.startswith("vla-"):
            checkpoint = train_vla(name.removeprefix("vla-"), args)
        else:
            checkpoint = train_lerobot(name, args, lerobot_root)
        train_seconds = time.perf_counter() - start
        policy = load_any(name, checkpoint)
        result = Result(name, parameter_count(policy), args.steps_for[name], args.batch_size, train_seconds,
                        latency_ms(policy, args.store, args.latency_calls), episodes_per_task=args.episodes_per_task,
                        checkpoint=str(checkpoint), store=str(args.store), env=str(args.env))  # fmt: skip
        print(f"== {name}: evaluating", flush=True)
        result.success, result.overall = evaluate_policy(name, policy, args)
        results.append(result)
        done = {r.policy for r in results}
        kept = [r for r in previous.values() if r.policy not in done]  # rows of policies not rerun
        results_path.write_text(json.dumps([asdict(r) for r in results + kept], indent=2))
    table = markdown(results, args)
    (args.out / "comparison.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
