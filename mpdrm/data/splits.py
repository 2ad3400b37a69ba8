"""Subject-disjoint splits and k-fold cross-validation, seeded.

Subjects (not videos, not clips) are what is split: no subject's clips are ever on both
sides. Assignment depends only on the sorted set of subject ids and the seed, so it is the
same on every machine and in every run, and independent of manifest row order.
"""
from __future__ import annotations

from dataclasses import dataclass
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


#: Evaluation protocols: who is scored, and what is known about them beforehand.
#: ``subjects``: held-out subjects (the person is unknown). ``visits``: every subject's last
#: visit is held out and the earlier ones train (the person is known: monitoring enrolled
#: patients). ``enrolled``: held-out subjects whose first visit enrols them (their
#: personality reference, no training on it) and whose later visits are scored.
PROTOCOLS = ("subjects", "visits", "enrolled")

#: Roles of a visit under a protocol.
TRAIN, TEST, REFERENCE = "train", "test", "reference"


@dataclass(frozen=True)
class ProtocolSplit:
    """Where each (subject, visit) goes under an evaluation protocol.

    Attributes
    ----------
    train_subjects : list of str
        Subjects with training visits, sorted (prototype ``i`` is ``train_subjects[i]``).
    other_subjects : list of str
        Subjects without training visits, sorted (indexed after the training subjects).
    roles : dict
        ``(subject, visit) -> "train" | "test" | "reference"``.
    """

    train_subjects: list[str]
    other_subjects: list[str]
    roles: dict[tuple[str, int], str]


def _last_visit_held_out(visits: Sequence[tuple[str, int]]) -> dict[tuple[str, int], str]:
    last: dict[str, int] = {}
    count: dict[str, int] = {}
    for subject, visit in visits:
        last[subject] = max(visit, last.get(subject, visit))
        count[subject] = count.get(subject, 0) + 1
    return {(s, v): TEST if v == last[s] and count[s] > 1 else TRAIN for s, v in visits}


def _first_visit_enrols(visits: Sequence[tuple[str, int]], held_out: set[str]) -> dict[tuple[str, int], str]:
    first: dict[str, int] = {}
    for subject, visit in visits:
        first[subject] = min(visit, first.get(subject, visit))
    return {(s, v): TRAIN if s not in held_out else (REFERENCE if v == first[s] else TEST) for s, v in visits}


def protocol_split(visits: Sequence[tuple[str, int]], protocol: str, *,
                   subject_split_: tuple[list[str], list[str]]) -> ProtocolSplit:
    """The roles of a site's visits under ``protocol`` (see :data:`PROTOCOLS`).

    Parameters
    ----------
    visits : sequence of (subject, visit)
        The site's usable visits (one entry per video).
    protocol : str
        ``subjects`` | ``visits`` | ``enrolled``.
    subject_split_ : (train, test) subject lists
        The subject-disjoint split used by ``subjects`` and ``enrolled`` (ignored by ``visits``,
        where every subject trains).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}; expected one of {PROTOCOLS}")
    subjects = _ordered(s for s, _ in visits)
    if protocol == "visits":
        return ProtocolSplit(subjects, [], _last_visit_held_out(visits))
    train_s, test_s = (sorted(x) for x in subject_split_)
    if protocol == "subjects":
        held = set(test_s)
        return ProtocolSplit(train_s, test_s, {(s, v): TEST if s in held else TRAIN for s, v in visits})
    return ProtocolSplit(train_s, test_s, _first_visit_enrols(visits, set(test_s)))
