"""Evaluation protocols: each split keeps its promise, and the references are computed on exactly
the scored visits."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mpdrm.data import load_site
from mpdrm.data.cohorts import oracle_reference, references_on
from mpdrm.data.splits import REFERENCE, TEST, TRAIN, protocol_split, subject_split

VISITS = [(s, v) for s in ("a", "b", "c", "d") for v in (1, 2, 3)] + [("e", 1)]


def _roles(split, role):
    return {k for k, r in split.roles.items() if r == role}


def test_visits_protocol_holds_out_each_last_visit_and_trains_on_the_rest():
    split = protocol_split(VISITS, "visits", subject_split_=(["a"], ["b"]))
    test, train = _roles(split, TEST), _roles(split, TRAIN)
    assert test == {(s, 3) for s in "abcd"}  # e has one visit: nothing to hold out
    assert not test & train
    assert {s for s, _ in test} <= {s for s, _ in train}  # every scored person was seen in training
    assert split.train_subjects == list("abcde") and split.other_subjects == []


def test_enrolled_protocol_scores_later_visits_of_unseen_subjects():
    train_s, test_s = subject_split(sorted({s for s, _ in VISITS}), 0.4, seed=1)
    split = protocol_split(VISITS, "enrolled", subject_split_=(train_s, test_s))
    test, train, enrol = _roles(split, TEST), _roles(split, TRAIN), _roles(split, REFERENCE)
    assert {s for s, _ in enrol} == set(test_s) and not enrol & test
    assert all(v == 1 for _, v in enrol) and all(v > 1 for _, v in test)  # the first visit enrols
    assert not {s for s, _ in train} & set(test_s)  # enrolled people never train
    assert split.train_subjects == sorted(train_s)


def test_subjects_protocol_is_the_subject_split():
    split = protocol_split(VISITS, "subjects", subject_split_=(["a", "b", "c"], ["d", "e"]))
    assert _roles(split, TEST) == {k for k in VISITS if k[0] in "de"} and not _roles(split, REFERENCE)
    with pytest.raises(ValueError, match="unknown evaluation protocol 'later'"):
        protocol_split(VISITS, "later", subject_split_=([], []))


@pytest.mark.parametrize("protocol", ["subjects", "visits", "enrolled"])
def test_load_site_serves_each_protocol(prepared_cohort, protocol):
    from mpdrm.data.prepare import PrepareConfig

    site = sorted(p for p in prepared_cohort.iterdir() if (p / "manifest.csv").is_file())[0]
    data = load_site(site, PrepareConfig(), test_fraction=0.25, seed=0, protocol=protocol)
    test = {(v["subject"], v["visit"]) for v in data.test.videos}
    train = {(v["subject"], v["visit"]) for v in data.train.videos}
    assert test and not test & train
    if protocol == "subjects":
        assert data.reference is None and not {s for s, _ in test} & {s for s, _ in train}
    if protocol == "visits":
        assert data.reference is data.train and {s for s, _ in test} <= {s for s, _ in train}
        assert set(np.unique(data.test.subjects)) <= set(np.unique(data.train.subjects))
    if protocol == "enrolled":
        enrol = {(v["subject"], v["visit"]) for v in data.reference.videos}
        assert not enrol & test and not enrol & train
        assert set(np.unique(data.test.subjects)) == set(np.unique(data.reference.subjects))
        assert data.num_subjects == len({s for s, _ in train})  # no prototype for an enrolled person


def test_references_on_the_scored_visits_equal_a_direct_computation(tiny_cohort):
    oracle = json.loads((tiny_cohort / "oracle.json").read_text())
    chosen = [(v["site"], v["subject"], int(v["visit"])) for v in oracle["visits"] if v["visit"] == 2]
    got = references_on(oracle, chosen)
    rows = [v for v in oracle["visits"] if v["visit"] == 2]
    scores = np.array([v["score"] for v in rows], float)
    direct = np.sqrt(np.mean((np.array([v["oracle_score"] for v in rows]) - scores) ** 2)) / oracle["score_max"]
    blind = np.sqrt(np.mean((np.array([v["habit_blind_score"] for v in rows]) - scores) ** 2)) / oracle["score_max"]
    mean_all = np.mean([v["score"] for v in oracle["visits"]])
    constant = np.sqrt(np.mean((mean_all - scores) ** 2)) / oracle["score_max"]
    assert got["oracle"]["rmse"] == pytest.approx(direct, abs=1e-5)
    assert got["habit_blind"]["rmse"] == pytest.approx(blind, abs=1e-5)
    assert got["constant"]["rmse"] == pytest.approx(constant, abs=1e-5)
    assert oracle_reference(tiny_cohort, chosen) == got
    with pytest.raises(KeyError, match="not in oracle.json"):
        references_on(oracle, [("site-99", "x", 1)])


def test_person_memory_is_the_mean_score_of_each_persons_other_visits(tiny_cohort):
    oracle = json.loads((tiny_cohort / "oracle.json").read_text())
    last = {}
    for v in oracle["visits"]:
        last[(v["site"], v["subject"])] = max(last.get((v["site"], v["subject"]), 0), int(v["visit"]))
    chosen = [(v["site"], v["subject"], int(v["visit"])) for v in oracle["visits"]
              if int(v["visit"]) == last[(v["site"], v["subject"])]]  # the visits protocol's test set
    got = references_on(oracle, chosen)["person_memory"]["rmse"]
    errors = []
    for v in oracle["visits"]:
        if int(v["visit"]) == last[(v["site"], v["subject"])]:
            earlier = [w["score"] for w in oracle["visits"] if (w["site"], w["subject"]) == (v["site"], v["subject"])
                       and int(w["visit"]) < int(v["visit"])]
            errors.append(np.mean(earlier) - v["score"])
    assert got == pytest.approx(np.sqrt(np.mean(np.square(errors))) / oracle["score_max"], abs=1e-5)
    # a person every visit of whom is scored (held out, as under `subjects`): no memory to use
    person = chosen[0][:2]
    everything = chosen + [(v["site"], v["subject"], int(v["visit"])) for v in oracle["visits"]
                           if (v["site"], v["subject"]) == person]
    assert "person_memory" not in references_on(oracle, everything)


def test_site_mean_is_the_mean_score_of_the_sites_unscored_visits(tiny_cohort):
    oracle = json.loads((tiny_cohort / "oracle.json").read_text())
    chosen = [(v["site"], v["subject"], int(v["visit"])) for v in oracle["visits"] if int(v["visit"]) == 2]
    errors = []
    for v in oracle["visits"]:
        if int(v["visit"]) == 2:
            rest = [w["score"] for w in oracle["visits"] if w["site"] == v["site"] and int(w["visit"]) != 2]
            errors.append(np.mean(rest) - v["score"])
    got = references_on(oracle, chosen)["site_mean"]["rmse"]
    assert got == pytest.approx(np.sqrt(np.mean(np.square(errors))) / oracle["score_max"], abs=1e-5)
    every = [(v["site"], v["subject"], int(v["visit"])) for v in oracle["visits"]]
    assert "site_mean" not in references_on(oracle, every)  # nothing left to take a mean of
