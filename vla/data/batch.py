"""A batch of training windows, filled in place: what ``TrajectoryDataset.__getitems__`` returns.

torch's DataLoader calls ``dataset.__getitems__(indices)`` with a whole batch and hands the result
to its ``collate_fn``. :class:`WindowBatch` is a sequence of per-sample dicts (views, made only
when asked for) so any collate function that takes a list of samples still works, and it carries
the already-collated tensors in ``.collated``: :func:`collate_windows` (used by
:func:`vla.data.sampler.make_dataloader`) returns them with no per-sample work at all.

Inside a DataLoader worker the tensors are allocated in shared memory from the start, as
``default_collate`` does, so sending a batch to the training process copies nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info
from torch.utils.data._utils.collate import default_collate

_ALIGN = 64


def empty_batch_tensors(layout: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> PackedBatch:
    """Uninitialized tensors ``{key: (shape, dtype)}``, all views of one buffer.

    Inside a DataLoader worker the buffer is in shared memory, and the batch pickles as that one
    buffer: torch passes one file descriptor per tensor storage to the training process, and that
    hand-over (a socket connection each) cost more than reading the samples did.
    """
    offsets, total = {}, 0
    for key, (shape, dtype) in layout.items():
        offsets[key] = total
        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
        total += -(-nbytes // _ALIGN) * _ALIGN
    if get_worker_info() is None:
        buffer = torch.empty(total, dtype=torch.uint8)
    else:
        buffer = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(total))
    return PackedBatch(buffer, {k: (offsets[k], *layout[k]) for k in layout})


def _view(buffer: torch.Tensor, offset: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
    return buffer[offset : offset + nbytes].view(dtype).view(shape)


class PackedBatch(dict):
    """A collated batch whose tensors are views of one buffer, and which pickles as that buffer."""

    def __init__(self, buffer: torch.Tensor, layout: dict[str, tuple[int, tuple[int, ...], torch.dtype]]):
        super().__init__({key: _view(buffer, *where) for key, where in layout.items()})
        self._buffer, self._layout = buffer, layout
        self._packed = dict(self)

    def __reduce__(self) -> tuple[Any, ...]:
        intact = all(self.get(key) is tensor for key, tensor in self._packed.items())
        if not intact:  # entries replaced since packing: send a plain dict
            return (dict, (dict(self),))
        extras = {k: v for k, v in self.items() if k not in self._packed}
        return (_unpack, (self._buffer, self._layout, extras))


def _unpack(buffer: torch.Tensor, layout: dict, extras: dict[str, Any]) -> PackedBatch:
    batch = PackedBatch(buffer, layout)
    batch.update(extras)
    return batch


class WindowBatch(Sequence[dict[str, Any]]):
    """Collated windows ``{key: tensor (B, ...) | list}``, also readable as B per-sample dicts."""

    def __init__(self, collated: dict[str, Any]) -> None:
        self.collated = collated
        self._size = len(collated["episode_index"])
        self._rows: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return self._size

    def _samples(self) -> list[dict[str, Any]]:
        if self._rows is None:
            columns: dict[str, Sequence[Any]] = {}
            for key, value in self.collated.items():
                if key in ("episode_index", "frame_index"):
                    columns[key] = value.tolist()  # plain ints, as a single sample holds
                elif isinstance(value, torch.Tensor):
                    columns[key] = value.unbind(0)
                else:
                    columns[key] = value
            self._rows = [{key: column[i] for key, column in columns.items()} for i in range(self._size)]
        return self._rows

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        return self._samples()[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self._samples())


def collate_windows(samples: Sequence[Any]) -> Any:
    """``collate_fn`` for :class:`TrajectoryDataset`: a :class:`WindowBatch` as is, else ``default_collate``."""
    if isinstance(samples, WindowBatch):
        return samples.collated
    return default_collate(samples)
