"""``vla eval`` and ``vla record`` with ``env.backend=warp``, on Warp's CPU device, against classic.

Tiny budgets (two worlds, reach and press episodes of ~10-20 steps): the scripted expert evaluated
on both backends gives the same episodes and agreeing success rates; a batched recording writes a
valid store with the classic recording's schema, episodes and order; a rerun resumes it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mujoco_warp", reason="the 'warp' extra (mujoco-warp, warp-lang) is not installed")

from vla.data import TrajectoryStore, validate_store  # noqa: E402
from vla.envs.record import RecordSettings, record  # noqa: E402
from vla.envs.record import main as record_main  # noqa: E402
from vla.evaluation import evaluate, load_report  # noqa: E402
from vla.evaluation.cli import main as eval_main  # noqa: E402
from vla.evaluation.scripted import ScriptedPolicy  # noqa: E402
from vla.features import ACTION_KEY, STATE_KEY, camera_key  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TASKS = ["reach-red", "press-blue"]
ENV = {"name": "tt_warp", "suite": "tabletop", "tasks": TASKS, "image_size": 32}


@pytest.fixture
def config_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "configs"
    for group in ("envs", "datasets", "policies"):
        (root / group).mkdir(parents=True)
    (root / "envs" / "tt_warp.yaml").write_text(
        f"suite: tabletop\ntasks: [{','.join(TASKS)}]\nimage_size: 32\n"
    )
    monkeypatch.setenv("VLA_CONFIG_ROOT", str(root))
    return root


def test_vla_eval_backend_warp_agrees_with_classic(config_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "warp"
    argv = ["policy=scripted", "env=tt_warp", "env.backend=warp", "episodes_per_task=2", "phrasing=train",
            "num_envs=2", "videos=1", "device=cpu", f"out={out}", "progress=false"]  # fmt: skip
    assert eval_main(argv) == 0
    warp = load_report(out)
    classic = evaluate(ScriptedPolicy(), ENV, episodes_per_task=2, phrasings="train", num_envs=2,
                       video_count=0, progress=False)  # fmt: skip
    protocol = json.loads((out / "report.json").read_text())["protocol"]
    assert protocol["backend"] == "warp" and protocol["sim_device"].startswith("cpu (2 worlds)")
    assert "env.backend=warp" in protocol["command"]
    assert (out / "report.md").is_file() and (out / "success.png").is_file()
    assert "warp backend on cpu" in (out / "report.md").read_text()
    assert len(list((out / "videos").glob("*.mp4"))) == 1
    # The same episodes (tasks, seeds, instructions), and success rates inside each other's intervals.
    key = lambda e: (e.task, e.seed, e.phrasing, e.instruction)  # noqa: E731
    assert [key(e) for e in warp.episodes] == [key(e) for e in classic.episodes]
    for a, b in ((warp, classic), (classic, warp)):
        row = a.overall[0]
        assert row.ci_low <= b.overall[0].success_rate <= row.ci_high
    assert all(e.success for e in warp.episodes), [(e.task, e.outcome) for e in warp.episodes]
    lengths = np.array([e.length for e in warp.episodes]) - [e.length for e in classic.episodes]
    assert np.abs(lengths).max() <= 2  # float32 physics: a step either way at a success threshold
    assert warp.timing["policy_input_transfer_s"] >= 0 and warp.timing["sim_s"] > 0


def test_batched_recording_writes_the_classic_schema_and_episodes(tmp_path: Path) -> None:
    quotas = {"reach-red": 2, "press-blue": 1}
    stores = {}
    for backend in ("warp", "classic"):
        stores[backend] = tmp_path / f"{backend}.zarr"
        settings = RecordSettings(out=stores[backend], episodes_per_task=quotas, workers=2, progress=False)
        summary = record({**ENV, "backend": backend}, settings)
        assert summary.committed == 3 and summary.dropped == 0
    assert validate_store(stores["warp"]) == []
    warp, classic = TrajectoryStore.open(stores["warp"]), TrajectoryStore.open(stores["classic"])
    assert warp.schema == classic.schema
    assert [(m.extra["task"], m.seed, m.instruction) for m in warp.episodes_meta()] == [
        (m.extra["task"], m.seed, m.instruction) for m in classic.episodes_meta()
    ]  # the same hand-out and commit order
    for i in range(warp.num_episodes):
        a, b = warp.read_episode(i), classic.read_episode(i)
        assert abs(len(a[ACTION_KEY]) - len(b[ACTION_KEY])) <= 2
        assert a[camera_key("front")].dtype == np.uint8 and a[STATE_KEY].dtype == np.float32
        np.testing.assert_allclose(a[STATE_KEY][0], b[STATE_KEY][0], atol=1e-5)  # same initial state
        np.testing.assert_allclose(a[ACTION_KEY][:5], b[ACTION_KEY][:5], atol=0.05)  # the same expert
    assert warp.stats_are_current()


def test_vla_record_backend_warp_resumes_an_interrupted_store(config_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo.zarr"
    args = ["env=tt_warp", "env.backend=warp", "env.device=cpu", "tasks=[reach-red]", f"out={out}",
            "workers=2", "progress=false"]  # fmt: skip
    assert record_main([*args, "episodes=1"]) == 0
    assert record_main([*args, "episodes=3"]) == 0  # appends seeds 1 and 2 after the stored one
    store = TrajectoryStore.open(out)
    seeds = [m.seed for m in store.episodes_meta()]
    assert seeds == sorted(seeds) and len(set(seeds)) == 3
    assert validate_store(out) == []
