"""Training windows, episode split, TrajectoryDataset in DataLoaders, and the storage-locality sampler."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from vla.data import StorageLocalitySampler, TrajectoryDataset, WindowSpec, make_dataloader, split_episodes
from vla.data.batch import collate_windows

SPEC = WindowSpec(n_obs_steps=3, horizon=4)


def test_window_pads_with_edge_frames_and_masks(data_store_path):
    dataset = TrajectoryDataset(data_store_path, SPEC)
    assert len(dataset) == 24
    first = dataset[5]  # frame 0 of episode 1 (frames 5..13)
    assert (first["episode_index"], first["frame_index"], first["instruction"]) == (1, 0, "task 1")
    assert first["observation.state"][:, 0].tolist() == [5, 5, 5]
    assert first["observation_is_pad"].tolist() == [True, True, False]
    assert first["action"][:, 0].tolist() == [0, 1, 2, 3]
    assert not first["action_is_pad"].any()
    last = dataset[13]  # frame 8, the last of episode 1
    assert last["observation.state"][:, 0].tolist() == [11, 12, 13]
    assert last["action"][:, 0].tolist() == [8, 8, 8, 8]
    assert last["action_is_pad"].tolist() == [False, True, True, True]
    image = last["observation.images.front"]
    assert (
        image.dtype == torch.uint8
        and image.shape == (3, 16, 16, 3)
        and image[:, 0, 0, 0].tolist() == [11, 12, 13]
    )
    assert last["observation.state"].dtype == torch.float32 and last["action"].shape == (4, 2)
    assert last["observation_is_pad"].dtype == torch.bool


def test_episode_subset_and_observation_keys(data_store_path):
    spec = WindowSpec(1, 2, observation_keys=("observation.state",))
    dataset = TrajectoryDataset(data_store_path, spec, episodes=[2, 0])
    assert len(dataset) == 8 and {dataset[i]["episode_index"] for i in range(8)} == {0, 2}
    assert "observation.images.front" not in dataset[0]
    with pytest.raises(KeyError, match="observation.velocity"):
        TrajectoryDataset(data_store_path, WindowSpec(observation_keys=("observation.velocity",)))
    with pytest.raises(IndexError):
        TrajectoryDataset(data_store_path, spec, episodes=[4])


def test_store_and_in_memory_sources_agree(data_store_path):
    lazy = TrajectoryDataset(data_store_path, SPEC, cache_bytes=1)  # evicts on every chunk
    eager = TrajectoryDataset(data_store_path, SPEC, in_memory=True)
    for i in range(len(lazy)):
        a, b = lazy[i], eager[i]
        for key in a:
            if isinstance(a[key], torch.Tensor):
                assert torch.equal(a[key], b[key]), key
            else:
                assert a[key] == b[key]


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_episodes(50, 0.2, seed=3)
    assert len(val) == 10 and sorted(train + val) == list(range(50))
    assert split_episodes(50, 0.2, seed=3) == (train, val)
    assert split_episodes(50, 0.2, seed=4) != (train, val)
    assert split_episodes(3, 0.01, seed=0)[1] != []  # asked for validation: at least one episode
    assert split_episodes(5, 0.0, seed=0) == ([0, 1, 2, 3, 4], [])
    with pytest.raises(ValueError):
        split_episodes(5, 1.0, seed=0)


def test_storage_locality_sampler_is_a_local_permutation(data_store_path):
    dataset = TrajectoryDataset(data_store_path, SPEC)
    sampler = StorageLocalitySampler(dataset, group_frames=4, groups_in_flight=2, seed=1)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(24)) and sorted(second) == list(range(24))
    assert first != second  # a new order each epoch
    groups = dataset.anchor_frame[np.array(first)] // 4
    assert all(len(set(groups[i : i + 8])) <= 2 for i in range(0, 24, 8))  # two groups at a time
    ranks = [
        list(StorageLocalitySampler(dataset, group_frames=4, seed=1, rank=r, world_size=2)) for r in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) and not set(ranks[0]) & set(ranks[1])


def test_dataloader_with_two_workers_covers_every_sample(data_store_path):
    dataset = pickle.loads(pickle.dumps(TrajectoryDataset(data_store_path, SPEC)))
    dataset[0]  # opened in the parent before forking: workers must reopen their own
    loader = make_dataloader(dataset, batch_size=6, num_workers=2, seed=0)  # one epoch: 4 steps of 6
    assert len(loader) == 4
    seen = []
    for batch in loader:
        assert batch["observation.images.front"].shape[1:] == (3, 16, 16, 3)
        assert len(batch["instruction"]) == len(batch["episode_index"])
        seen += (batch["observation.state"][:, -1, 0]).long().tolist()
    assert sorted(seen) == list(range(24))
    in_store_order = torch.utils.data.DataLoader(dataset, 24, collate_fn=collate_windows)
    ordered = [b["observation.state"][:, -1, 0] for b in in_store_order]
    assert ordered[0].tolist() == list(range(24))


def test_sampler_groups_fit_the_decoded_storage_chunk_cache(data_store_path):
    from vla.data.sampler import GROUP_CHUNKS, group_chunks

    roomy = TrajectoryDataset(data_store_path, SPEC)
    assert roomy.image_storage_chunk_bytes == roomy.storage_chunk_frames * 16 * 16 * 3
    assert group_chunks(roomy, groups_in_flight=4) == GROUP_CHUNKS
    roomy.largest_image_storage_chunk_bytes = 2 << 20  # the earlier 2 MB layout: groups of 2, as then
    assert group_chunks(roomy, groups_in_flight=4) == 2
    # A cache that holds 4 groups of 2 chunks (+1 each for history) but not of 3 or more.
    tight = TrajectoryDataset(
        data_store_path, SPEC, cache_bytes=int(4 * 3 * roomy.image_storage_chunk_bytes / 0.75)
    )
    assert group_chunks(tight, groups_in_flight=4) == 2
    assert group_chunks(TrajectoryDataset(data_store_path, SPEC, cache_bytes=1), 4) == 1
    state_only = TrajectoryDataset(data_store_path, WindowSpec(1, 2, observation_keys=("observation.state",)))
    assert state_only.image_storage_chunk_bytes == 0 and group_chunks(state_only, 4) == GROUP_CHUNKS


def test_task_balanced_order_draws_every_task_equally_often():
    from vla.data.loader import task_balanced_order

    tasks = ["reach"] * 20 + ["stack"] * 180  # a short task and a long one, as on the tabletop
    order = task_balanced_order(tasks)
    drawn = np.concatenate([order(0, epoch) for epoch in range(20)])
    assert drawn.shape == (4000,) and drawn.min() >= 0 and drawn.max() < 200
    share_of_reach = float((drawn < 20).mean())
    assert 0.45 < share_of_reach < 0.55  # a frame-uniform order would give 0.10
    assert len(np.unique(drawn[drawn < 20])) == 20  # every window of the short task is used
    np.testing.assert_array_equal(order(3, 1), task_balanced_order(tasks)(3, 1))  # (seed, epoch) decide
    assert not np.array_equal(order(3, 1), order(3, 2))


def test_task_weights_shift_the_share_of_the_tasks_they_match():
    from vla.data.loader import task_balanced_order

    tasks = ["suite/reach-red"] * 20 + ["suite/press-red"] * 50 + ["suite/pick-red"] * 130
    plain = task_balanced_order(tasks)
    weighted = task_balanced_order(tasks, {"*press-*": 2.0})
    drawn = np.concatenate([weighted(0, epoch) for epoch in range(20)])
    share_of_press = float(((drawn >= 20) & (drawn < 70)).mean())
    assert 0.45 < share_of_press < 0.55  # 2 / (1 + 2 + 1); unweighted it would be 1/3
    assert 0.2 < float((drawn < 20).mean()) < 0.3  # the unmatched tasks keep weight 1
    # No weights, no change: the unweighted order is the one runs trained with before weights existed.
    np.testing.assert_array_equal(task_balanced_order(tasks, {})(3, 1), plain(3, 1))
    assert not np.array_equal(weighted(3, 1), plain(3, 1))
    zero = np.concatenate([task_balanced_order(tasks, {"*pick-*": 0})(0, e) for e in range(5)])
    assert zero.max() < 70  # weight 0 leaves a task out
    with pytest.raises(ValueError, match=r"match none of the training tasks"):
        task_balanced_order(tasks, {"*stack-*": 2.0})  # a typo never trains silently unweighted
    with pytest.raises(ValueError, match="task weights must be finite"):
        task_balanced_order(tasks, {"*": 0.0})


def test_tasks_order_balances_the_tasks_a_suite_recorder_names(tmp_path):
    """One env id ("tabletop") holds every task of a suite; the task is in the episode's metadata."""
    from conftest import data_frame, data_schema

    from vla.data import TrajectoryStore

    path = tmp_path / "suite.zarr"
    store = TrajectoryStore.create(path, data_schema(), fps=10, robot_type="test")
    with store, store.writer() as writer:
        total = 0
        for episode, (task, length) in enumerate([("reach-red", 3), ("stack", 30)] * 2):
            writer.start_episode(f"do {task}", env_id="tabletop", seed=episode, task=task)
            for i in range(length):
                writer.add_frame(data_frame(total + i, i))
            writer.commit_episode(success=True)
            total += length
    dataset = TrajectoryDataset(path, WindowSpec(n_obs_steps=1, horizon=2))
    assert dataset.episode_tasks == ["tabletop/reach-red", "tabletop/stack"] * 2
    loader = make_dataloader(dataset, batch_size=11, steps=60, order="tasks", seed=0)
    episodes = torch.cat([batch["episode_index"] for batch in loader])
    share_of_reach = float((episodes % 2 == 0).float().mean())
    assert 0.4 < share_of_reach < 0.6  # frame-uniform would give 6 / 66 = 0.09


def test_curriculum_reads_only_its_tasks_first_then_every_task():
    from vla.data.loader import StepBatchSampler, curriculum_order, uniform_order

    tasks = ["suite/reach-red"] * 10 + ["suite/stack"] * 90
    sampler = StepBatchSampler(
        100, 8, seed=0, end_step=40, order_fn=uniform_order(100),
        first_order_fn=curriculum_order(tasks, ["*reach-*"]), first_steps=15,
    )  # fmt: skip
    batches = list(sampler)
    assert all(max(b) < 10 for b in batches[:15])  # reach windows only
    later = np.concatenate(batches[15:])
    assert later.max() >= 10 and len(np.unique(later)) > 50  # then the whole set
    # A pure function of (seed, step): a resumed sampler sees the same batches.
    resumed = StepBatchSampler(
        100, 8, seed=0, start_step=12, end_step=40, order_fn=uniform_order(100),
        first_order_fn=curriculum_order(tasks, ["*reach-*"]), first_steps=15,
    )  # fmt: skip
    assert list(resumed) == batches[12:]
    with pytest.raises(ValueError, match=r"match none of the training tasks.*suite/stack"):
        curriculum_order(tasks, ["*press-*"])


def test_dataloader_tasks_order_reads_the_dataset_tasks(data_store_path):
    dataset = TrajectoryDataset(data_store_path, WindowSpec(n_obs_steps=1, horizon=2), episodes=[0, 2])
    loader = make_dataloader(dataset, batch_size=4, steps=3, order="tasks", seed=0)
    batches = list(loader)
    assert len(batches) == 3
    assert set(torch.cat([b["episode_index"] for b in batches]).tolist()) <= {0, 2}
