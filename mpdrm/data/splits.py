"""Subject-disjoint splits and k-fold cross-validation, seeded.

Subjects (not videos, not clips) are what is split: no subject's clips are ever on both
sides. Assignment depends only on the sorted set of subject ids and the seed, so it is the
same on every machine and in every run, and independent of manifest row order.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np


def _ordered(subjects: Iterable[str]) -> list[str]:
    return sorted(set(subjects))


def subject_split(subjects: Iterable[str], test_fraction: float = 0.25, seed: int = 0,
                  ) -> tuple[list[str], list[str]]:
    """(train_subjects, test_subjects), both sorted. ``round(test_fraction * n)`` test
    subjects, at least one when ``test_fraction > 0`` and there are two or more subjects,
    and never all of them."""
    subs = _ordered(subjects)
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError("test_fraction must be in [0, 1)")
    n = len(subs)
    n_test = int(round(test_fraction * n))
    if test_fraction > 0 and n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    else:
        n_test = min(n_test, max(n - 1, 0))
    perm = np.random.default_rng(seed).permutation(n)
    test = sorted(subs[i] for i in perm[:n_test])
    train = sorted(subs[i] for i in perm[n_test:])
    return train, test


def kfold_subjects(subjects: Iterable[str], k: int, seed: int = 0,
                   ) -> list[tuple[list[str], list[str]]]:
    """k (train, test) pairs; every subject is in exactly one test fold; fold sizes differ
    by at most one."""
    subs = _ordered(subjects)
    if k < 2 or k > len(subs):
        raise ValueError(f"k must be in [2, number of subjects = {len(subs)}]")
    perm = np.random.default_rng(seed).permutation(len(subs))
    folds = [sorted(subs[i] for i in perm[f::k]) for f in range(k)]
    return [(sorted(s for g, fold in enumerate(folds) if g != f for s in fold), folds[f])
            for f in range(k)]


def split_from_column(rows: Sequence, ) -> tuple[list[str], list[str]] | None:
    """Use the manifest's ``split`` column when every usable row has one."""
    values = [(r.subject, r.split) for r in rows]
    if not values or any(s is None for _, s in values):
        return None
    train = sorted({sub for sub, s in values if s == "train"})
    test = sorted({sub for sub, s in values if s == "test"})
    both = set(train) & set(test)
    if both:
        raise ValueError(f"subjects in both train and test splits: {sorted(both)}")
    return train, test
