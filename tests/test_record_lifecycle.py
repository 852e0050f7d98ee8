"""`vla record`: workers never outlive the writer, a rerun writes the uninterrupted order, settings checked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import record_fakes

from vla.config import ConfigError
from vla.data import TrajectoryStore, validate_store
from vla.envs import record_rollout, registry
from vla.envs.record import RecordSettings, record
from vla.envs.record_rollout import record_episode

ENV = {"name": "fake", "suite": record_fakes.SUITE}


@pytest.fixture(autouse=True)
def fake_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.SUITES, record_fakes.SUITE, "record_fakes")


def _order(path: Path) -> list[tuple[str, int]]:
    return [(m.extra["task"], m.seed) for m in TrajectoryStore.open(path).episodes_meta()]


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    found, frontier = set(), [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


WRITER = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from vla.envs import registry
registry.SUITES["recordfake"] = "record_fakes"
from vla.envs.record import RecordSettings, record
settings = RecordSettings(out=Path({out!r}), episodes_per_task={{"steady": 40, "flaky": 40}}, workers=2,
                          progress=False)
record({{"name": "fake", "suite": "recordfake", "step_s": 0.05, "length": 10}}, settings)
"""


def _start_writer(tmp_path: Path) -> tuple[subprocess.Popen, set[int]]:
    code = WRITER.format(tests=os.path.dirname(__file__), out=str(tmp_path / "s.zarr"))
    process = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while len(_alive(_descendants(process.pid))) < 2:  # the two workers (and the resource tracker)
        assert process.poll() is None and time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)
    time.sleep(1.5)  # workers busy recording
    return process, _alive(_descendants(process.pid))


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_workers_end_with_the_writer(tmp_path: Path, how: signal.Signals) -> None:
    process, workers = _start_writer(tmp_path)
    try:
        process.send_signal(how)
        status = process.wait(timeout=30)
        assert not _wait_gone(workers, 15), "worker processes outlived the writer"
    finally:
        for pid in _alive(workers | {process.pid}):
            os.kill(pid, signal.SIGKILL)
    if how == signal.SIGTERM:
        assert status == 143
    store = tmp_path / "s.zarr"
    assert validate_store(store) == []  # committed episodes intact, whatever the signal
    with TrajectoryStore.open(store, mode="a"):  # and the writer lock is free again
        pass


def test_an_error_in_the_writer_stops_the_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import multiprocessing

    def broken_commit(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("vla.envs.record._commit_or_drop", broken_commit)
    settings = RecordSettings(
        out=tmp_path / "s.zarr", episodes_per_task={"steady": 20}, workers=2, progress=False
    )
    with pytest.raises(RuntimeError, match="disk full"):
        record({**ENV, "step_s": 0.05, "length": 10}, settings)
    deadline = time.monotonic() + 15
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not multiprocessing.active_children()
    with TrajectoryStore.open(settings.out, mode="a"):  # the writer lock was released
        pass


def test_resumed_recording_has_the_uninterrupted_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    quotas = {"steady": 4, "flaky": 4}
    once = RecordSettings(out=tmp_path / "once.zarr", episodes_per_task=quotas, workers=0, progress=False)
    record(ENV, once)
    expected = _order(once.out)
    assert ("flaky", 1) not in expected and len(expected) == 8  # a dropped seed, as in real recordings

    twice = RecordSettings(out=tmp_path / "twice.zarr", episodes_per_task=quotas, workers=0, progress=False)
    for interrupt_at in (4, 3):  # interrupted twice, at different places
        calls = {"n": 0}

        def interrupted(*args: object, at: int = interrupt_at, calls: dict = calls) -> object:
            calls["n"] += 1
            if calls["n"] == at:
                raise KeyboardInterrupt
            return record_episode(*args)  # type: ignore[arg-type]

        monkeypatch.setattr(record_rollout, "record_episode", interrupted)
        with pytest.raises(KeyboardInterrupt):
            record(ENV, twice)
        monkeypatch.undo()
        monkeypatch.setitem(registry.SUITES, record_fakes.SUITE, "record_fakes")
    tried: list[tuple[str, int]] = []
    monkeypatch.setattr(
        record_rollout,
        "record_episode",
        lambda env, expert, task, seed: tried.append((task, seed)) or record_episode(env, expert, task, seed),
    )
    summary = record(ENV, twice)
    assert _order(twice.out) == expected
    assert summary.already + summary.committed == 8
    assert not set(tried) & set(_order(twice.out)[: summary.already])  # nothing stored was recorded again


@pytest.mark.parametrize(("key", "value"), [("workers", -1), ("seed_start", -3), ("noise", -0.5)])
def test_negative_settings_are_refused_naming_the_key(tmp_path: Path, key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"{key}={value}"):
        RecordSettings(out=tmp_path / "x.zarr", episodes_per_task={"steady": 1}, **{key: value})
