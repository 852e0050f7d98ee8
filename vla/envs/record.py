"""``vla record``: scripted-expert demonstrations -> a trajectory store.

    vla record env=<env config> episodes=N out=<store.zarr> [tasks=...] [noise=0.1] [task_episodes={task:N}]
               [keep_failed=false] [workers=2] [image_size=96] [seed_start=0] [env.<option>=...]
    vla record dataset=<recipe> [any of the keys above]

Arguments follow Hydra's override grammar (:mod:`vla.config`); the keys are the fields of
:class:`RecordOptions` (the command line wins over the recipe, the recipe over the defaults) and
``env.<option>`` any option of the env's suite. An unknown key, a wrong type or a negative count is
refused in one line before anything is recorded.

``episodes`` is the number of episodes the store should hold for the selected tasks, dealt out
round-robin (task i of T gets ``N // T`` plus one if ``i < N % T``); a recipe may instead give
``episodes_per_task``, and ``task_episodes={task: N, ...}`` other counts for the tasks it names.
Each task's episodes use its own training seeds, ``seed_start, seed_start+1, ...`` within the
task's block (:func:`vla.seeds.train_seeds`: task number ``k`` in the suite's task list starts at
``k * 10_000``; disjoint from evaluation seeds, and from the other tasks', so every episode shows a
new layout); with ``keep_failed=false`` a failed episode is dropped and the next seed is tried, up
to ``3 * needed + 5`` attempts per task.

Workers (``spawn`` processes) build their own environments and stream finished episodes back to
this process, the store's single writer (with a batched backend, ``env.backend=warp``, the workers
are ``workers`` worlds of one simulator in this process: :mod:`vla.envs.record_batched`), which
commits them in the order they were handed out, not the order they finish (training reads episodes in store order, so a store whose order followed
worker timing trained a different policy each time). Workers never outlive the writer, however it
ends (:mod:`vla.envs.record_workers`); SIGTERM ends a run like Ctrl-C, with exit status 143.

Reproducible: the same command (same env, tasks, N, noise, keep_failed, workers, seed_start) writes
the same store, episode for episode, in the same order, whether it ran once or was interrupted and
rerun any number of times: an interrupted run loses only the episodes in flight (episodes are
committed one by one), and a rerun replays the hand-out sequence from the start, counting what the
store already holds at its place, skipping seeds the store shows were dropped as failed, and
recording the rest in the order the uninterrupted run would have (:mod:`vla.envs.record_plan`).
Recording relies on the environments and experts being deterministic for a seed on one machine.
Not reproduced: a rerun with other settings (a larger N appends the new episodes after the stored
ones; the order then is not that of a fresh run with that N), and a store that a run with another
``seed_start`` started (its episodes below the first seed count toward the quota, in place).
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from vla.cli_errors import cli_main
from vla.config import ConfigError, compose_command
from vla.config_schema import at_least, config_group, unset_schema
from vla.envs import registry
from vla.envs.record_plan import STORED, Resume, TaskProgress, committed_pairs, plan, settled
from vla.envs.record_rollout import EpisodeRecording, InlineExecutor, worker_episode
from vla.envs.record_workers import sigterm_exits, start_workers, stop_workers
from vla.features import ACTION_KEY, INSTRUCTION_KEY, STATE_KEY, is_image_key
from vla.progress import progress_bar
from vla.seeds import check_training_seed, task_numbers

if TYPE_CHECKING:  # vla.data loads lazily: workers import this module and never write
    from vla.data import Schema, TrajectoryStore


@dataclass
class RecordOptions:
    """The recording options, with their defaults; each may come from the command line or the
    dataset recipe (``datasets/*.yaml``), the command line winning."""

    episodes: int | None = at_least(None, 0)  # in total over the tasks (or episodes_per_task)
    episodes_per_task: int | None = at_least(None, 0)
    # Quotas for the tasks named, replacing the count above for them ({reach-v3: 200}): more
    # demonstrations where a policy generalizes worst, without recording more of every task.
    task_episodes: dict[str, int] | None = None
    out: str | None = None  # the store to create or append to
    tasks: Any = None  # replaces the env config's tasks (a set name or a list)
    image_size: Any = None  # replaces the env config's image_size (int or [height, width])
    noise: float = at_least(0.0, 0.0)
    keep_failed: bool = False
    workers: int = at_least(2, 0)  # 0: record in this process; env.backend=warp: worlds at once
    seed_start: int = at_least(0, 0)
    progress: bool = True


# What the command line and a recipe hold: the same keys, each unset unless given.
RecordOverrides = unset_schema(RecordOptions, "RecordOverrides")


@dataclass
class RecordCommand(RecordOverrides):  # type: ignore[misc,valid-type]
    """``vla record``'s keys: the recording options and the env and dataset config groups."""

    env: Any = config_group()
    dataset: Any = config_group()


DEFAULTS: dict[str, Any] = dataclasses.asdict(RecordOptions())
# Settings that change the env config rather than the recording.
_ENV_KEYS = ("tasks", "image_size")


@dataclass(frozen=True)
class RecordSettings:
    """How many episodes to record, where, and how; refused (ConfigError naming the key) if invalid."""

    out: Path
    episodes_per_task: dict[str, int]  # quota of committed episodes per task (in the store, in total)
    noise: float = 0.0
    keep_failed: bool = False
    workers: int = 2  # 0: record in this process (tests, debugging)
    seed_start: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for key, least in (("workers", 0), ("seed_start", 0), ("noise", 0.0)):
            value = getattr(self, key)
            if not value >= least:
                raise ConfigError(f"{key}={value}: must be >= {least}")
        bad = {task: n for task, n in self.episodes_per_task.items() if n < 0}
        if bad:
            raise ConfigError(f"episodes_per_task={bad}: counts must be >= 0")


@dataclass
class RecordSummary:
    """What a run did."""

    committed: int = 0
    dropped: int = 0
    successes: int = 0
    frames: int = 0
    seconds: float = 0.0
    already: int = 0  # episodes of the selected tasks found in the store before the run
    exhausted: list[str] = field(default_factory=list)  # tasks that ran out of attempts

    @property
    def attempts(self) -> int:
        return self.committed + self.dropped

    def line(self) -> str:
        if not self.attempts:  # a resumed store that was already complete: no rates to give
            return f"recorded nothing: the {self.already} episodes asked for were already stored"
        rate = self.successes / self.attempts
        eps, sps = self.attempts / max(self.seconds, 1e-9), self.frames / max(self.seconds, 1e-9)
        return (
            f"recorded {self.attempts} episodes ({self.frames} steps) in {self.seconds:.1f} s: "
            f"{eps:.2f} episodes/s, {sps:.0f} steps/s; expert success {rate:.1%}; "
            f"committed {self.committed}, dropped {self.dropped} failed; {self.already} were already stored"
        )


# -- schema ----------------------------------------------------------------------------------------


def schema_for_env(env: Any) -> Schema:
    """The store schema of ``env``'s observations and actions (names from the env when it lists them)."""
    from vla.data import FeatureSpec, Schema

    base = env.unwrapped
    features: dict[str, FeatureSpec] = {}
    for key, space in env.observation_space.spaces.items():
        if key == INSTRUCTION_KEY:
            continue  # per-episode text, stored with the episode
        if is_image_key(key):
            features[key] = FeatureSpec("uint8", space.shape, "image")
        elif key == STATE_KEY:
            features[key] = FeatureSpec(
                space.dtype.name, space.shape, "state", getattr(base, "state_names", None)
            )
        else:
            features[key] = FeatureSpec(space.dtype.name, space.shape, "other")
    space = env.action_space
    features[ACTION_KEY] = FeatureSpec(
        space.dtype.name, space.shape, "action", getattr(base, "action_names", None)
    )
    return Schema(features)


# -- scheduling ------------------------------------------------------------------------------------


def _open_store(out: Path, env: Any, fps: float) -> TrajectoryStore:
    """Open ``out`` for appending (its schema must match the env's) or create it."""
    from vla.data import TrajectoryStore

    schema = schema_for_env(env)
    if out.exists():
        # Read-only first: a path that is no store is refused before the writer lock file is made.
        TrajectoryStore.open(out).close()
        store = TrajectoryStore.open(out, mode="a")
        if store.schema != schema:
            store.close()
            raise ConfigError(
                f"{out} holds features {store.schema.to_json()} but this env produces {schema.to_json()}; "
                "record into a new store (out=...) or use the env options it was recorded with"
            )
        return store
    robot_type = str(getattr(env.unwrapped, "robot_type", "unknown"))
    return TrajectoryStore.create(out, schema, fps=fps, robot_type=robot_type)


def record(env_cfg: Mapping[str, Any], settings: RecordSettings) -> RecordSummary:
    """Record until every task of ``settings`` holds its quota of committed episodes in the store."""
    first_task = next(iter(settings.episodes_per_task))
    probe = registry.make_env(env_cfg, first_task)  # for the schema; renderers start lazily, no GL here
    try:
        fps = float(probe.metadata.get("render_fps") or 10)
        store = _open_store(settings.out, probe, fps)
    finally:
        probe.close()
    stored = committed_pairs(store)
    numbers = task_numbers(list(settings.episodes_per_task), registry.all_task_names(env_cfg["suite"]))
    progress = plan(settings.episodes_per_task, settings.seed_start, stored, numbers)
    resume = Resume(frozenset(stored), settings.seed_start, settings.keep_failed, numbers)
    summary = RecordSummary(already=resume.already(settings.episodes_per_task))
    executor = _start_executor(env_cfg, settings)
    total = sum(p.quota for p in progress.values())
    bar = progress_bar(
        total=total, initial=summary.already, unit="ep", disable=not settings.progress, file=sys.stderr
    )
    env_id = str(env_cfg.get("name", env_cfg.get("suite")))
    start = time.perf_counter()
    pending: dict[Future, tuple[int, str]] = {}  # running job -> (its place in the hand-out order, task)
    finished_early: dict[int, tuple[str, EpisodeRecording | str]] = {}  # done, waiting for earlier jobs
    handed_out = 0
    next_to_commit = 0
    task_cycle = itertools.cycle(list(progress))

    def fill() -> None:
        """Hand out jobs round-robin over tasks, up to ``limit`` beyond the last commit.

        Every decision here depends only on what was committed so far, in order, never on which
        worker finished first, so the jobs handed out (and so the store) are the same every run.
        Jobs done early wait in ``finished_early``; the limit bounds them too.
        """
        nonlocal handed_out
        limit, idle_rounds = max(2 * settings.workers, 1), 0
        while handed_out < next_to_commit + limit and idle_rounds < len(progress):
            task = next(task_cycle)
            state = progress[task]
            if not state.wants_more():
                idle_rounds += 1
                continue
            idle_rounds = 0
            seed = next(state.seeds)
            check_training_seed(seed)
            state.in_flight += 1
            state.attempts_left -= 1
            known = resume.outcome(task, seed)  # a rerun: settled by the interrupted run already
            job = executor.submit(worker_episode, task, seed) if known is None else settled(known)
            pending[job] = (handed_out, task)
            handed_out += 1

    try:
        with sigterm_exits(), store.writer() as writer:
            fill()
            while pending:
                finished, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in finished:
                    order, task = pending.pop(future)
                    finished_early[order] = (task, future.result())
                while next_to_commit in finished_early:
                    task, episode = finished_early.pop(next_to_commit)
                    next_to_commit += 1
                    progress[task].in_flight -= 1
                    if episode == STORED:  # in the store already, at this very place
                        progress[task].committed += 1
                    elif isinstance(episode, EpisodeRecording):  # (FAILED: dropped before, again)
                        _commit_or_drop(writer, episode, env_id, settings, summary, progress[task])
                        bar.update(1 if episode.success or settings.keep_failed else 0)
                        elapsed = max(time.perf_counter() - start, 1e-9)
                        bar.set_postfix(success=f"{summary.successes / summary.attempts:.0%}",
                                        eps=f"{summary.attempts / elapsed:.2f}/s", steps=f"{summary.frames / elapsed:.0f}/s", refresh=False)  # fmt: skip
                    fill()
        # Statistics once, here, so every `vla train` on this store reads them instead of recomputing.
        if store.num_frames and not store.stats_are_current():
            store.compute_stats(write=True)
    except BaseException:  # an error, Ctrl-C or SIGTERM: episodes in flight are lost, nothing else
        if settings.workers > 0:
            stop_workers(executor)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()
        store.close()  # releases the writer lock
    summary.seconds = time.perf_counter() - start
    summary.exhausted = [t for t, p in progress.items() if p.committed < p.quota]
    return summary


def _start_executor(env_cfg: Mapping[str, Any], settings: RecordSettings) -> Any:
    """Who records: one batched simulator of ``workers`` worlds (a batched backend such as
    ``env.backend=warp``), ``workers`` worker processes, or this process (``workers=0``)."""
    if registry.runs_batched(env_cfg):
        from vla.envs.record_batched import BatchedRecorder

        return BatchedRecorder(env_cfg, settings.noise, settings.workers)
    if settings.workers > 0:
        return start_workers(settings.workers, env_cfg, settings.noise)
    return InlineExecutor(env_cfg, settings.noise)


def _commit_or_drop(writer: Any, episode: EpisodeRecording, env_id: str, settings: RecordSettings,
                    summary: RecordSummary, state: TaskProgress) -> None:  # fmt: skip
    summary.frames += episode.num_frames
    summary.successes += episode.success
    if not (episode.success or settings.keep_failed):
        summary.dropped += 1
        return
    writer.start_episode(episode.instruction, env_id=env_id, seed=episode.seed, task=episode.task,
                         phrasing=episode.phrasing, expert_noise=settings.noise,
                         clipped_steps=episode.clipped_steps)  # fmt: skip
    for t in range(episode.num_frames):
        writer.add_frame({key: column[t] for key, column in episode.frames.items()})
    writer.commit_episode(episode.success)
    summary.committed += 1
    state.committed += 1


# -- command line ----------------------------------------------------------------------------------


def settings_from_config(cfg: DictConfig) -> tuple[dict[str, Any], RecordSettings]:
    """``(env config, settings)`` from a composed config; the command line wins over the recipe."""
    if "env" not in cfg:
        raise ConfigError(
            "name an env config (env=<name>) or a dataset recipe that names one (dataset=<name>)"
        )
    recipe = cfg.get("dataset") or {}
    values = {k: cfg[k] if k in cfg else recipe.get(k, default) for k, default in DEFAULTS.items()}
    if "episodes" in cfg or "episodes_per_task" in cfg:  # a count on the command line replaces the recipe's
        values["episodes"], values["episodes_per_task"] = cfg.get("episodes"), cfg.get("episodes_per_task")
        values["task_episodes"] = cfg.get("task_episodes")  # ... all of them, per-task ones included
    values = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in values.items()}
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    assert isinstance(env_cfg, dict)
    for key in _ENV_KEYS:
        if values[key] is not None:
            env_cfg[key] = values[key]
    if env_cfg.get("phrasing", "train") != "train":
        raise ConfigError("demonstrations use the training phrasings; held-out ones are kept for evaluation")
    if values["out"] is None:
        raise ConfigError("say where to record: out=<store.zarr> (or a recipe with an 'out' entry)")
    tasks = registry.task_names(env_cfg)
    if not tasks:
        raise ConfigError(f"the env config {env_cfg.get('name')!r} selects no tasks")
    return env_cfg, RecordSettings(
        out=Path(str(values["out"])),
        episodes_per_task=_task_quotas(
            _quotas(tasks, values["episodes"], values["episodes_per_task"]),
            values["task_episodes"],
            registry.all_task_names(env_cfg["suite"]),
        ),
        noise=float(values["noise"]),
        keep_failed=bool(values["keep_failed"]),
        workers=int(values["workers"]),
        seed_start=int(values["seed_start"]),
        progress=bool(values["progress"]),
    )


def _quotas(tasks: Sequence[str], episodes: Any, per_task: Any) -> dict[str, int]:
    """Round-robin quotas: N episodes over T tasks, or the same number for every task."""
    if (episodes is None) == (per_task is None):
        raise ConfigError("give exactly one of episodes=N (in total) and episodes_per_task=N")
    if per_task is not None:
        count = int(per_task)
        if count < 0:
            raise ConfigError(f"episodes_per_task must be >= 0, got {count}")
        return dict.fromkeys(tasks, count)
    total = int(episodes)
    if total < 0:
        raise ConfigError(f"episodes must be >= 0, got {total}")
    base, extra = divmod(total, len(tasks))
    return {task: base + (i < extra) for i, task in enumerate(tasks)}


def _task_quotas(
    quotas: dict[str, int], task_episodes: Mapping[str, Any] | None, suite_tasks: Sequence[str]
) -> dict[str, int]:
    """``quotas`` with the per-task counts of ``task_episodes`` in place of theirs; tasks of the suite
    that this recording does not select are ignored (a recipe may be recorded for a subset), names
    the suite lacks are refused."""
    if not task_episodes:
        return quotas
    unknown = sorted(set(task_episodes) - set(suite_tasks) - set(quotas))
    if unknown:
        raise ConfigError(f"task_episodes names tasks this suite lacks: {unknown}")
    replaced = dict(quotas)
    for task, count in task_episodes.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ConfigError(f"task_episodes[{task}] must be a count >= 0, got {count!r}")
        if task in replaced:
            replaced[task] = count
    return replaced


@cli_main("record")
def main(argv: Sequence[str]) -> int:
    """Entry point of ``vla record``; returns the process exit code."""
    if any(arg in {"-h", "--help", "help"} for arg in argv):
        print(__doc__)
        return 0
    try:
        env_cfg, settings = settings_from_config(compose_command("record", argv, RecordCommand))
    except ConfigError:
        raise
    except ValueError as exc:  # a task selection the suite refuses: the command line's fault too
        raise ConfigError(str(exc)) from exc
    try:
        summary = record(env_cfg, settings)
    except KeyboardInterrupt:
        print(f"vla record: interrupted; committed episodes are kept in {settings.out}", file=sys.stderr)
        return 130
    print(summary.line())
    if summary.exhausted:
        print(f"vla record: could not fill the quota of {summary.exhausted} (too many failed episodes)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0
