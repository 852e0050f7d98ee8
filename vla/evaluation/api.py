"""``evaluate`` and ``evaluate_checkpoint``: the public entry points of the evaluation harness."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vla.code_version import code_version
from vla.evaluation import protocol as P
from vla.evaluation.loaders import POLICY_LOADERS
from vla.evaluation.plots import plot_success
from vla.evaluation.report import write_json, write_markdown
from vla.evaluation.results import EpisodeResult, EvalReport, summarize
from vla.evaluation.rollouts import roll_out
from vla.evaluation.run import RolloutSettings, check_env_fit
from vla.evaluation.videos import VideoSampler
from vla.policy_spec import replan_interval
from vla.progress import progress_bar

DEFAULT_VIDEO_FPS = 20  # for envs that declare no metadata["render_fps"]


def plain_env_config(env_cfg: Mapping[str, Any] | str) -> dict[str, Any]:
    """An env config as a plain dict; a string names a file of the ``envs/`` config group."""
    from omegaconf import OmegaConf

    from vla.config import load_group

    if isinstance(env_cfg, str):
        cfg = load_group("env", env_cfg)
        cfg.name = cfg.get("name", env_cfg)
        env_cfg = cfg
    if OmegaConf.is_config(env_cfg):
        env_cfg = OmegaConf.to_container(env_cfg, resolve=True)  # type: ignore[assignment]
    plain = dict(env_cfg)  # type: ignore[arg-type]
    if "suite" not in plain:
        raise ValueError(
            f"env config {plain.get('name', '?')!r} has no 'suite' key (one of tabletop, metaworld)"
        )
    return plain


def resolve_tasks(
    env_cfg: Mapping[str, Any], tasks: str | Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """``(selected tasks, the suite's full task list)``; None selects the config's own ``tasks``.

    Evaluation seeds are numbered by a task's index in the suite's full list, so every suite must
    list all its tasks (``task_names(None)``); one that cannot is an error naming the suite, never a
    silent renumbering of the seeds.
    """
    from vla.envs import registry

    name = env_cfg["suite"]
    suite = registry.suite_module(name)
    selection = env_cfg.get("tasks") if tasks is None else tasks
    selected = list(suite.task_names(selection))
    if not selected:
        raise ValueError(f"the task selection {selection!r} of suite {name!r} is empty")
    return selected, registry.all_task_names(name)


def evaluate(
    policy: Any,
    env_cfg: Mapping[str, Any] | str,
    tasks: str | Sequence[str] | None = None,
    episodes_per_task: int = 10,
    phrasings: str | Sequence[str] = "both",
    replan_every: int | None = None,
    temporal_ensemble: float | None = None,
    num_envs: int = 2,
    video_count: int = 4,
    out_dir: str | Path | None = None,
    *,
    max_steps: int | None = None,
    progress: bool = True,
    policy_name: str | None = None,
    checkpoint: str | Path | None = None,
    argv: Sequence[str] | None = None,
) -> EvalReport:
    """Roll ``policy`` out on every task x eval seed x phrasing set and report success rates.

    ``policy`` is anything with ``spec`` (``n_obs_steps``) and stateless ``predict_chunks``. Seeds come
    from :func:`vla.seeds.eval_seeds`; each seed is run under every phrasing set of ``phrasings``
    (``train``, ``heldout`` or ``both``). Actions are executed by one ChunkExecutor per env slot
    (``replan_every`` steps per chunk, by default the policy's own: :func:`vla.policy_spec.replan_interval`;
    or ACT temporal ensembling with weight ``temporal_ensemble``).
    With ``out_dir`` the report is also written there: report.json, report.md, success.png and up to
    ``video_count`` MP4s under videos/.
    """
    spec_record = _spec_dict(policy)  # also refuses a non-policy before any worker starts
    resolved = P.resolve_checkpoint(checkpoint) if checkpoint is not None else None
    weights_hash = P.checkpoint_hash(resolved) if resolved is not None else None  # the weights loaded now
    env = plain_env_config(env_cfg)
    selected, all_tasks = resolve_tasks(env, tasks)
    check_env_fit(policy, env, selected[0])  # a policy for other features fails here, not per episode
    phrasing_list = P.phrasings_of(phrasings)
    replan = replan_interval(getattr(policy, "spec", None)) if replan_every is None else int(replan_every)
    seeds = P.seeds_per_task(selected, episodes_per_task, all_tasks)
    plan = P.episode_plan(seeds, phrasing_list)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    sampler = VideoSampler(out, video_count, fps=DEFAULT_VIDEO_FPS) if out else None

    decode_errors_before = getattr(policy, "decode_errors", 0)
    code = code_version()  # at the start: an editable checkout can change while the episodes run
    bar = progress_bar(total=len(plan), unit="ep", desc="vla eval", disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    with bar:
        done: list[bool] = []

        def on_episode(result: EpisodeResult, frames: list, fps: float | None) -> str | None:
            done.append(result.success)
            bar.set_postfix(success=f"{sum(done) / len(done):.0%}", refresh=False)
            bar.update(1)
            return sampler(result, frames, fps) if sampler is not None else None

        settings = RolloutSettings(num_envs, replan, temporal_ensemble, max_steps,
                                   keep_frames=bool(sampler and sampler.wants_frames), on_episode=on_episode)  # fmt: skip
        rollout = roll_out(policy, env, plan, settings)
    episodes, rollout_s = rollout.episodes, rollout.rollout_s
    if sampler is not None:
        sampler.finish()
    wall = time.perf_counter() - started

    from vla.envs import registry

    difficulty = getattr(registry.suite_module(env["suite"]), "difficulty", None)
    per_task, overall, per_difficulty = summarize(episodes, difficulty)
    kind = policy_name or ("checkpoint" if checkpoint is not None else type(policy).__name__)
    protocol = {
        "policy": kind,
        "policy_spec": spec_record,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "checkpoint_resolved": str(resolved) if resolved is not None else None,
        "checkpoint_hash": weights_hash,
        "device": str(getattr(policy, "device", "cpu")),
        "precision": getattr(policy, "precision", None),  # inference weights (vla checkpoints)
        "flow_noise": getattr(policy, "flow_noise", None),  # the flow sampler's starting noise
        "flow_noise_scale": getattr(policy, "flow_noise_scale", None),  # ... and its scale
        "flow_steps": getattr(policy, "flow_steps", None),  # ... and its Euler steps per chunk
        "suite": env["suite"],
        "backend": rollout.backend,  # classic (rasterized cameras) or warp (ray-traced): images differ
        "sim_device": rollout.sim_device,
        "env": env,
        "tasks": selected,
        "episodes_per_task": episodes_per_task,
        "phrasings": phrasing_list,
        "seeds": seeds,
        "seed_source": "vla.seeds.eval_seeds(episodes_per_task, task_index=<index in the suite's task list>)",
        "replan_every": replan,
        "temporal_ensemble": temporal_ensemble,
        "max_steps": max_steps,
        "num_envs": num_envs,
        "video_count": video_count,
        "command": _command(
            kind,
            checkpoint,
            env,
            selected,
            episodes_per_task,
            phrasings,
            replan,
            temporal_ensemble,
            num_envs,
            video_count,
            out,
            getattr(policy, "precision", None),
            getattr(policy, "flow_noise", None),
            getattr(policy, "flow_noise_scale", None),
            getattr(policy, "flow_steps", None),
        ),
        "argv": list(argv) if argv is not None else None,
        "code": code,  # the commit (+dirty) of the checkout the evaluation started on
        **P.environment_facts(),
    }
    env_steps = sum(e.length for e in episodes)
    # Steps/s over the rollouts alone (worker start-up, env construction included, is timed apart).
    timing = {"episodes": float(len(episodes)), "env_steps": float(env_steps), "wall_s": wall,
              "startup_s": wall - rollout_s, "rollout_s": rollout_s,
              "env_steps_per_s": env_steps / rollout_s if rollout_s > 0 else 0.0, **rollout.timing}  # fmt: skip
    # The runtime counts chunks its action tokenizer had to repair or reject, over its lifetime.
    decode_errors = getattr(policy, "decode_errors", None)
    diagnostics: dict[str, Any] = {
        "decode_errors": None if decode_errors is None else decode_errors - decode_errors_before
    }
    reads = getattr(policy, "instruction_as_read", None)
    if reads is not None:  # what a held-out phrasing became: its known words, or a grounded instruction
        diagnostics["instructions_read"] = {
            text: reads(text) for text in sorted({e.instruction for e in episodes})
        }
    report = EvalReport(protocol, episodes, per_task, overall, per_difficulty, timing, diagnostics)
    if out is not None:
        write_outputs(report, out)
    return report


def evaluate_checkpoint(
    checkpoint_dir: str | Path,
    env_cfg: Mapping[str, Any] | str,
    *,
    device: str = "auto",
    precision: str = "auto",
    flow_noise: str = "fresh",
    flow_noise_scale: float = 1.0,
    flow_steps: int | None = None,
    **kwargs: Any,
) -> EvalReport:
    """Load ``checkpoint_dir`` with :func:`vla.policies.load_policy` (on ``device``, at
    ``precision``, with ``flow_noise``, ``flow_noise_scale`` and ``flow_steps``) and :func:`evaluate` it."""
    from vla.policies import load_policy

    policy = load_policy(
        checkpoint_dir,
        device=device,
        precision=precision,
        flow_noise=flow_noise,
        flow_noise_scale=flow_noise_scale,
        flow_steps=flow_steps,
    )
    kwargs.setdefault("policy_name", "checkpoint")
    return evaluate(policy, env_cfg, checkpoint=checkpoint_dir, **kwargs)


def write_outputs(report: EvalReport, out_dir: str | Path) -> None:
    """report.json, report.md and success.png in ``out_dir``."""
    out = Path(out_dir)
    write_json(report, out / "report.json")
    write_markdown(report, out / "report.md")
    plot_success(report, out / "success.png")


def _spec_dict(policy: Any) -> dict[str, Any]:
    spec = getattr(policy, "spec", None)
    if spec is None:
        raise TypeError(f"{type(policy).__name__} has no 'spec'; a policy needs spec and predict_chunks")
    if not callable(getattr(policy, "predict_chunks", None)):
        raise TypeError(f"{type(policy).__name__} has no predict_chunks(batch) method")
    fields = getattr(spec, "__dataclass_fields__", None)
    items = {k: getattr(spec, k) for k in fields} if fields else dict(vars(spec))
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in items.items() if _jsonable(v)}


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str | list | tuple | dict)


def _command(kind: str, checkpoint: Any, env: Mapping[str, Any], tasks: list[str], episodes: int,
             phrasings: Any, replan: int, ensemble: float | None, num_envs: int, videos: int, out: Path | None,
             precision: str | None = None, flow_noise: str | None = None,
             flow_noise_scale: float | None = None, flow_steps: int | None = None) -> str:  # fmt: skip
    """The ``vla eval`` line that reruns this protocol (env options that differ from its file included)."""
    args: dict[str, Any] = {"policy": kind if kind in POLICY_LOADERS else None,
                            "checkpoint": checkpoint, "env": env.get("name")}  # fmt: skip
    base: dict[str, Any] = {}
    if env.get("name"):
        try:
            base = plain_env_config(str(env["name"]))
        except ValueError:  # ConfigError: an env config built in memory, every option goes on the line
            base = {}
    for key, value in env.items():
        if key not in ("name", "tasks", "description") and base.get(key) != value:
            args[f"env.{key}"] = value
    args["env.tasks"] = tasks
    if not isinstance(phrasings, str):
        phrasings = "both" if len(set(phrasings)) == 2 else next(iter(phrasings))
    args |= {"episodes_per_task": episodes, "phrasing": phrasings,
             "replan_every": replan, "temporal_ensemble": ensemble, "num_envs": num_envs, "videos": videos,
             "out": str(out) if out is not None else None}  # fmt: skip
    if precision not in (None, "fp32"):  # fp32 is what precision=auto gives
        args["precision"] = precision
    if flow_noise not in (None, "fresh"):  # fresh is the default
        args["flow_noise"] = flow_noise
    if flow_noise_scale not in (None, 1.0):  # 1 is the default
        args["flow_noise_scale"] = flow_noise_scale
    if flow_steps is not None:  # the steps sampled with, stated: a checkpoint's own default may differ
        args["flow_steps"] = flow_steps
    return P.reproduce_command(args)
