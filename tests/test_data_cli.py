"""`vla data` info, validate (including corrupt and missing chunks), stats and demo."""

from __future__ import annotations

import numpy as np
from conftest import data_schema, write_data_episodes

from vla.cli import main as vla_main
from vla.data import TrajectoryStore, validate_store
from vla.data.cli import main


def _many_episodes_store(tmp_path):
    path = tmp_path / "big.zarr"
    with TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test") as store:
        write_data_episodes(store, [100] * 6)  # 600 frames: images span two 256-frame chunks+
    return path


def test_info_lists_features_instructions_and_size(data_store_path, capsys):
    assert vla_main(["data", "info", str(data_store_path)]) == 0
    out = capsys.readouterr().out
    assert "episodes   4" in out and "frames     24" in out
    assert "observation.images.front" in out and "(16, 16, 3)" in out and "uint8" in out
    assert "2  task 0" in out and "2  task 1" in out and "MiB" in out


def test_validate_passes_on_a_good_store(data_store_path, capsys):
    assert main(["validate", str(data_store_path)]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_names_feature_and_episodes_of_a_corrupt_chunk(tmp_path, capsys):
    path = _many_episodes_store(tmp_path)
    shard = path / "data" / "observation.images.front" / "c" / "0" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[100:140] = bytes(40)  # inside the first inner chunk
    shard.write_bytes(bytes(raw))
    assert main(["validate", str(path)]) == 1
    out = capsys.readouterr().out
    assert "feature 'observation.images.front': frames 0..255 (episodes 0..2)" in out
    assert "problem" in out
    problems = validate_store(path)
    assert len(problems) == 1 and "observation.images.front" in problems[0]


def test_validate_reports_truncated_and_missing_files(tmp_path):
    path = _many_episodes_store(tmp_path)
    state = path / "data" / "observation.state" / "c" / "0" / "0"
    state.write_bytes(state.read_bytes()[:50])
    (path / "data" / "action" / "c" / "0" / "0").unlink()
    problems = validate_store(path)
    assert any("'observation.state'" in p and "episodes 0..5" in p for p in problems)
    assert any("'action'" in p and "missing" in p for p in problems)
    assert validate_store(tmp_path / "nowhere")[0].startswith("cannot open")


def test_validate_reports_bad_episode_boundaries(data_store_path):
    with TrajectoryStore.open(data_store_path, mode="a") as store:
        store.array("meta/episode_ends")[1] = 3  # ends before the previous episode
    problems = validate_store(data_store_path)
    assert any("episode_ends" in p for p in problems)
    assert any("meta/length" in p for p in problems)


def test_stats_command_prints_and_saves(data_store_path, capsys):
    assert main(["stats", str(data_store_path)]) == 0
    out = capsys.readouterr().out
    assert "observation.state" in out and "q99" in out
    store = TrajectoryStore.open(data_store_path)
    assert store.stats_are_current()
    np.testing.assert_allclose(store.stats["action"]["min"], [0, -1])


def test_demo_writes_validates_and_reports(tmp_path, capsys):
    path = tmp_path / "demo.zarr"
    assert main(["demo", str(path), "episodes=3"]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and "episodes   3" in out and "statistics current" in out
    assert main(["demo", str(path), "episodes=3"]) == 1  # refuses to overwrite
    assert "exists" in capsys.readouterr().err
