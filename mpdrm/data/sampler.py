"""``PKBatchSampler``: batches of P subjects x K clips, for the contrastive loss.

Each batch holds ``p`` distinct subjects (all of them when the dataset has fewer) and ``k``
clips of each. A subject's clips are taken round-robin over its visits (visits in random
order, clips shuffled within a visit), so its positives come from different visits whenever
it has more than one; a subject with fewer than ``k`` clips repeats them. Subjects are
visited in a fresh random order each epoch, each subject's clips cycling so that over an
epoch every clip is used about equally. One epoch = ``ceil(len(dataset) / (p * k))``
batches unless ``batches_per_epoch`` is given. Deterministic given ``seed``: epoch e draws
from ``default_rng([seed, e])``; the epoch counter advances on every ``iter()`` (or set it
with ``set_epoch``).
"""
from __future__ import annotations

import math
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler


class PKBatchSampler(Sampler[list[int]]):
    def __init__(self, dataset, p: int, k: int, seed: int = 0, *,
                 batches_per_epoch: int | None = None):
        if p < 1 or k < 1:
            raise ValueError("p and k must be >= 1")
        self.p, self.k, self.seed = int(p), int(k), int(seed)
        subjects = np.asarray(dataset.subjects)
        visits = np.asarray(getattr(dataset, "visits", np.zeros(len(subjects), np.int64)))
        self._by_subject: dict[int, dict[int, np.ndarray]] = {}
        for s in np.unique(subjects):
            idx = np.flatnonzero(subjects == s)
            self._by_subject[int(s)] = {int(v): idx[visits[idx] == v] for v in
                                        np.unique(visits[idx])}
        self.n = len(subjects)
        self.batches_per_epoch = batches_per_epoch
        self.epoch = 0

    def __len__(self) -> int:
        if not self._by_subject:
            return 0
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        return max(1, math.ceil(self.n / (self.p * self.k)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _stream(self, rng: np.random.Generator, visits: dict[int, np.ndarray]):
        """Endless round-robin over visits, reshuffled on each pass."""
        while True:
            order = rng.permutation(list(visits))
            pools = [list(rng.permutation(visits[int(v)])) for v in order]
            while any(pools):
                for pool in pools:
                    if pool:
                        yield int(pool.pop())

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        if not self._by_subject:
            return
        subjects = list(self._by_subject)
        streams = {s: self._stream(rng, self._by_subject[s]) for s in subjects}
        p = min(self.p, len(subjects))
        queue: list[int] = []
        for _ in range(len(self)):
            batch_subjects: list[int] = []
            while len(batch_subjects) < p:
                if not queue:
                    queue = [int(s) for s in rng.permutation(subjects)]
                s = queue.pop()
                if s not in batch_subjects:
                    batch_subjects.append(s)
            batch = [next(streams[s]) for s in batch_subjects for _ in range(self.k)]
            yield batch
