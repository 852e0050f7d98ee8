"""``evaluate`` end to end on a tiny, fast fake suite defined in this module.

The fake suite is registered in ``vla.envs.registry.SUITES`` under this module's name, so the env
worker processes (which receive the parent's suite table) import it from here.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from vla.code_version import code_version
from vla.envs import registry
from vla.evaluation import ScriptedPolicy, evaluate, load_report
from vla.seeds import TRAIN_SEED_RANGE, eval_seeds

# ----------------------------------------------------------------------------------- fake suite
TASKS = ["reach-left", "reach-right", "broken"]
PHRASES = {"train": "move to the {side} target", "heldout": "go {side}, to the goal"}
MAX_STEPS = 25


class FakeReach(gym.Env):
    """A point moves by the action (2-D, in [-0.2, 0.2]); success within 0.05 of a seeded goal."""

    def __init__(self, task: str, phrasing: str = "train", image_size: int = 16) -> None:
        self.task, self.phrasing, self.size = task, phrasing, image_size
        self.max_episode_steps = MAX_STEPS
        self.action_space = spaces.Box(-0.2, 0.2, (2,), np.float32)
        half = (image_size + 1) // 2
        self.observation_space = spaces.Dict({  # declared: the harness checks policies against it
            "observation.images.front": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "observation.images.wrist": spaces.Box(0, 255, (half, half, 3), np.uint8),
            "observation.state": spaces.Box(-np.inf, np.inf, (4,), np.float32),
        })  # fmt: skip
        self.goal = self.pos = np.zeros(2)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        side = -1.0 if self.task == "reach-left" else 1.0
        self.goal = np.array([side * 0.5, self.np_random.uniform(-0.3, 0.3)])
        self.pos, self.steps = np.zeros(2), 0
        return self._obs(), {"success": False}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if self.task == "broken":
            raise RuntimeError("the fake robot is broken")
        self.pos = self.pos + np.clip(np.asarray(action, dtype=np.float64), -0.2, 0.2)
        self.steps += 1
        success = bool(np.linalg.norm(self.pos - self.goal) < 0.05)
        info: dict[str, Any] = {"success": success}
        out_of_bounds = bool(np.abs(self.pos).max() > 1.0)
        if out_of_bounds:
            info["failure_reason"] = "out_of_bounds"
        return self._obs(), 0.0, success or out_of_bounds, self.steps >= MAX_STEPS, info

    def _obs(self) -> dict:
        image = np.zeros((self.size, self.size, 3), np.uint8)
        col = int(np.clip((self.pos[0] + 1) / 2 * (self.size - 1), 0, self.size - 1))
        image[:, col] = 255
        side = "left" if self.task == "reach-left" else "right"
        return {"observation.images.front": image, "observation.images.wrist": image[::2, ::2].copy(),
                "observation.state": np.concatenate([self.pos, self.goal]).astype(np.float32),
                "instruction": PHRASES[self.phrasing].format(side=side)}  # fmt: skip


def task_names(selection: Any) -> list[str]:
    return list(TASKS if selection is None else selection)


def make(task: str, **options: Any) -> FakeReach:
    return FakeReach(task, **options)


def make_expert(env: FakeReach, noise_std: float = 0.0, seed: int | None = None):
    return lambda obs: np.clip(env.goal - env.pos, -0.2, 0.2).astype(np.float32)


def difficulty(task: str) -> str:
    return "easy" if task == "reach-left" else "hard"


# ----------------------------------------------------------------------------------- policies
class _Spec:
    def __init__(self, n_obs_steps: int = 1, chunk_size: int = 4, replan_every: int | None = None) -> None:
        self.n_obs_steps, self.chunk_size, self.replan_every = n_obs_steps, chunk_size, replan_every


class GoalSeeker:
    """Plans a straight chunk from the state (pos, goal); records every batch it is given."""

    def __init__(self, n_obs_steps: int = 2, chunk_size: int = 4, output: str = "good") -> None:
        self.spec, self.output, self.batches = _Spec(n_obs_steps, chunk_size), output, []

    def predict_chunks(self, batch: dict[str, Any]) -> np.ndarray:
        self.batches.append(batch)
        state = batch["observation.state"][:, -1]
        step = np.clip((state[:, 2:] - state[:, :2]) / self.spec.chunk_size, -0.2, 0.2)
        chunks = np.repeat(step[:, None, :], self.spec.chunk_size, axis=1).astype(np.float32)
        if self.output == "zero":
            return np.zeros_like(chunks)
        if self.output == "nan":
            chunks[:, 0, 0] = np.nan
        if self.output == "wide":
            return np.zeros(chunks.shape[:2] + (3,), np.float32)
        if self.output == "raise":
            raise ValueError("cannot decode action tokens")
        return chunks


ENV_CFG = {"name": "fake", "suite": "evalfake", "image_size": 16}


@pytest.fixture(autouse=True)
def fake_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.SUITES, "evalfake", __name__)


# ----------------------------------------------------------------------------------- tests
def test_scripted_expert_full_report(tmp_path: Path) -> None:
    tasks = ["reach-left", "reach-right"]
    report = evaluate(ScriptedPolicy(), ENV_CFG, tasks=tasks, episodes_per_task=3, phrasings="both",
                      num_envs=2, video_count=3, out_dir=tmp_path, progress=False, policy_name="scripted")  # fmt: skip
    assert len(report.episodes) == 2 * 3 * 2
    assert all(e.success and e.outcome == "success" for e in report.episodes)
    assert report.rate(None, "train") == 1.0 and report.rate(None, "heldout") == 1.0

    # The published eval seeds, numbered by the suite's task list, each under both phrasings.
    for task in tasks:
        assert report.protocol["seeds"][task] == eval_seeds(3, task_index=TASKS.index(task))
        used = sorted({e.seed for e in report.episodes if e.task == task})
        assert used == eval_seeds(3, task_index=TASKS.index(task)) and not set(used) & set(TRAIN_SEED_RANGE)
    train_words = {e.instruction for e in report.episodes if e.phrasing == "train"}
    heldout_words = {e.instruction for e in report.episodes if e.phrasing == "heldout"}
    assert train_words and heldout_words and not train_words & heldout_words

    data = json.loads((tmp_path / "report.json").read_text())
    for key in ["policy", "checkpoint", "checkpoint_hash", "env", "tasks", "episodes_per_task", "phrasings",
                "seeds", "replan_every", "temporal_ensemble", "num_envs", "vla_version", "code", "command"]:  # fmt: skip
        assert key in data["protocol"], key
    assert data["protocol"]["command"].startswith("vla eval policy=scripted")
    assert data["protocol"]["code"] == code_version()  # the checkout the evaluation ran on
    assert data["protocol"]["env"]["suite"] == "evalfake"
    assert {r["difficulty"] for r in data["per_difficulty"]} == {"easy", "hard"}
    assert data["timing"]["env_steps"] == sum(e.length for e in report.episodes) > 0
    assert load_report(tmp_path) == report
    markdown = (tmp_path / "report.md").read_text()
    assert "reach-left" in markdown and "heldout phrasings" in markdown
    assert (tmp_path / "success.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import imageio.v3 as iio

    videos = sorted((tmp_path / "videos").glob("*.mp4"))
    assert len(videos) == 3  # all succeeded: the places reserved for failures go to successes
    assert sorted(Path(e.video).name for e in report.episodes if e.video) == [v.name for v in videos]
    assert all(v.name.endswith("_success.mp4") and v.name.startswith("reach-") for v in videos)
    frames = iio.imread(videos[0], plugin="pyav") if _has_pyav() else iio.imread(videos[0])
    assert frames.ndim == 4 and frames.shape[1:] == (16, 16, 3) and len(frames) >= 2


def _has_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


def test_zero_policy_fails_and_failure_causes_are_named(tmp_path: Path) -> None:
    report = evaluate(GoalSeeker(output="zero"), ENV_CFG, tasks=["reach-left"], episodes_per_task=2,
                      phrasings="train", num_envs=2, video_count=2, out_dir=tmp_path, progress=False)  # fmt: skip
    assert report.rate(None, "train") == 0.0
    assert {e.outcome for e in report.episodes} == {"timeout"}
    assert all(e.length == MAX_STEPS for e in report.episodes)
    videos = [e.video for e in report.episodes if e.video]
    assert len(videos) == 2 and all("fail-timeout" in v and (tmp_path / v).is_file() for v in videos)

    causes = {}
    for output in ["nan", "wide", "raise"]:
        bad = evaluate(GoalSeeker(output=output), ENV_CFG, tasks=["reach-left"], episodes_per_task=1,
                       phrasings="train", num_envs=1, video_count=0, progress=False)  # fmt: skip
        causes[output] = (bad.episodes[0].outcome, bad.episodes[0].detail)
    assert causes["nan"][0] == "invalid_action" and "NaN" in causes["nan"][1]
    assert causes["wide"][0] == "invalid_action" and "(2,)" in causes["wide"][1]
    assert causes["raise"] == ("policy_error", "ValueError: cannot decode action tokens")

    broken = evaluate(ScriptedPolicy(), ENV_CFG, tasks=["broken", "reach-right"], episodes_per_task=1,
                      phrasings="train", num_envs=2, video_count=0, progress=False)  # fmt: skip
    outcome = {e.task: (e.outcome, e.detail) for e in broken.episodes}
    assert outcome["broken"] == ("env_error", "RuntimeError: the fake robot is broken")
    assert outcome["reach-right"][0] == "success"  # one env failing does not stop the others


def test_a_suite_that_cannot_list_all_its_tasks_is_an_error_naming_it(monkeypatch) -> None:
    """Seeds are numbered by a task's index in the suite's full list: never by the selection instead."""
    import sys

    from vla.evaluation.api import resolve_tasks

    assert resolve_tasks(ENV_CFG, ["reach-right"]) == (["reach-right"], TASKS)

    def selection_only(selection: Any) -> list[str]:
        if selection is None:
            raise NotImplementedError("this suite has no list of all its tasks")
        return list(selection)

    monkeypatch.setattr(sys.modules[__name__], "task_names", selection_only)
    with pytest.raises(ValueError, match="env suite 'evalfake' cannot list all its tasks.*no list of all"):
        resolve_tasks(ENV_CFG, ["reach-right"])


def test_env_reported_failure_reason() -> None:
    class Runaway(GoalSeeker):
        def predict_chunks(self, batch: dict[str, Any]) -> np.ndarray:
            return np.full((len(batch["instruction"]), 4, 2), 0.2, np.float32)

    report = evaluate(Runaway(), ENV_CFG, tasks=["reach-left"], episodes_per_task=1, phrasings="train",
                      num_envs=1, video_count=0, progress=False)  # fmt: skip
    assert report.episodes[0].outcome == "out_of_bounds" and report.episodes[0].length < MAX_STEPS


@pytest.mark.parametrize(("replan_every", "ensemble"), [(2, None), (4, 0.1)])
def test_chunk_execution_paths_and_history_padding(replan_every: int, ensemble: float | None) -> None:
    policy = GoalSeeker(n_obs_steps=2, chunk_size=4)
    report = evaluate(policy, ENV_CFG, tasks=["reach-left", "reach-right"], episodes_per_task=2,
                      phrasings="train", replan_every=replan_every, temporal_ensemble=ensemble,
                      num_envs=2, video_count=0, progress=False)  # fmt: skip
    assert all(e.success for e in report.episodes), [(e.outcome, e.length) for e in report.episodes]
    assert (
        report.protocol["replan_every"] == replan_every and report.protocol["temporal_ensemble"] == ensemble
    )
    first = policy.batches[0]
    assert first["observation.state"].shape[1] == 2  # n_obs_steps frames
    np.testing.assert_array_equal(first["observation.state"][:, 0], first["observation.state"][:, 1])
    assert first["observation.images.front"].shape[1:] == (2, 16, 16, 3)
    # Batched inference: every call covers the slots that need a chunk, and the number of calls
    # follows the execution mode (a new chunk per step when ensembling).
    rows = sum(len(b["instruction"]) for b in policy.batches)
    steps = sum(e.length for e in report.episodes)
    if ensemble is None:
        assert rows == sum(-(-e.length // replan_every) for e in report.episodes)
    else:
        assert rows == steps
    assert max(len(b["instruction"]) for b in policy.batches) == 2


@pytest.mark.parametrize(("own", "expected"), [(None, 4), (3, 3)])
def test_the_policys_own_replan_interval_is_the_default(own: int | None, expected: int) -> None:
    policy = GoalSeeker(n_obs_steps=1, chunk_size=4)
    policy.spec.replan_every = own
    report = evaluate(policy, ENV_CFG, tasks=["reach-left"], episodes_per_task=2, phrasings="train",
                      num_envs=1, video_count=0, progress=False)  # fmt: skip
    assert report.protocol["replan_every"] == expected
    assert len(policy.batches) == sum(-(-e.length // expected) for e in report.episodes)


def test_evaluate_checkpoint_records_hash_and_refuses_mismatched_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vla.policies
    from vla.evaluation import evaluate_checkpoint
    from vla.evaluation.protocol import checkpoint_hash

    checkpoint = tmp_path / "step_00000010"
    checkpoint.mkdir()
    (checkpoint / "ema.safetensors").write_bytes(b"weights")
    (checkpoint / "policy.json").write_text("{}")
    loaded: list[tuple[str, str]] = []

    def fake_load(
        path: Any,
        device: str = "auto",
        precision: str = "auto",
        flow_noise: str = "fresh",
        flow_noise_scale: float = 1.0,
        flow_steps: int | None = None,
    ) -> GoalSeeker:
        loaded.append((str(path), device, precision, flow_noise, flow_noise_scale, flow_steps))
        policy = GoalSeeker(n_obs_steps=1)
        policy.decode_errors, policy.precision, policy.flow_noise = 0, "int8", flow_noise
        policy.flow_noise_scale, policy.flow_steps = flow_noise_scale, flow_steps
        return policy

    monkeypatch.setattr(vla.policies, "load_policy", fake_load)
    report = evaluate_checkpoint(checkpoint, ENV_CFG, device="cpu", precision="int8", flow_noise="fixed",
                                 flow_noise_scale=0.5, flow_steps=3, tasks=["reach-right"], episodes_per_task=1, phrasings="heldout", num_envs=1,
                                 video_count=0, progress=False)  # fmt: skip
    assert loaded == [(str(checkpoint), "cpu", "int8", "fixed", 0.5, 3)]
    assert report.protocol["precision"] == "int8" and report.protocol["flow_noise"] == "fixed"
    assert report.protocol["flow_noise_scale"] == 0.5 and report.protocol["flow_steps"] == 3
    assert report.protocol["command"].endswith(
        "precision=int8 flow_noise=fixed flow_noise_scale=0.5 flow_steps=3"
    )
    assert report.protocol["checkpoint_hash"] == checkpoint_hash(checkpoint)
    assert report.protocol["policy"] == "checkpoint" and report.diagnostics == {"decode_errors": 0}
    assert report.protocol["command"].startswith(f"vla eval policy=checkpoint checkpoint={checkpoint}")
    assert [e.phrasing for e in report.episodes] == ["heldout"] and report.episodes[0].success

    class Picky(GoalSeeker):
        def __init__(self) -> None:
            super().__init__()
            self.spec.check_features = self.check_features

        def check_features(self, features: dict[str, tuple[int, ...]], names=None, source=None) -> None:
            if features["observation.images.front"] != (96, 96, 3):
                raise ValueError(
                    f"front camera is {features['observation.images.front']}, the policy wants 96x96"
                )

    with pytest.raises(ValueError, match="wants 96x96"):
        evaluate(Picky(), ENV_CFG, tasks=["reach-left"], episodes_per_task=1, phrasings="train", num_envs=1,
                 video_count=0, progress=False)  # fmt: skip


def test_trace_episode_reads_the_probe_after_every_step() -> None:
    """The diagnostics' rollout: one reading per step, the episode's success, the step limit."""
    from omegaconf import OmegaConf

    from vla.evaluation.trace import trace_episode

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "envs" / "tabletop_demo.yaml")
    env = registry.make_env(cfg, "reach-red", cameras=[])
    expert = registry.make_expert(cfg, env)
    scripted = SimpleNamespace(reset=lambda instruction: None, act=expert)
    hands, success = trace_episode(env, scripted, 1_000_000, env.ee_pos, env.max_steps)
    assert success and 1 < len(hands) < env.max_steps and hands.shape[1] == 3
    assert np.linalg.norm(hands[-1] - env.block_pos("red")) < 0.06  # the last reading is the final hand
    still = SimpleNamespace(reset=lambda instruction: None, act=lambda obs: np.zeros(4, np.float32))
    hands, success = trace_episode(env, still, 1_000_000, env.ee_pos, max_steps=5)
    assert not success and hands.shape == (5, 3)
    env.close()
