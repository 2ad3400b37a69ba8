"""load_site / ClipDataset / splits / PKBatchSampler."""
from __future__ import annotations

import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mpdrm.data import PKBatchSampler, PrepareConfig, SiteData, load_site, prepare_site
from mpdrm.data.splits import kfold_subjects, subject_split


def test_load_site_batches_follow_the_contract(prepared_cohort):
    data = load_site(prepared_cohort / "site-01", test_fraction=0.25, seed=0)
    assert isinstance(data, SiteData)
    assert data.name == "site-01" and data.score_max == 27 and data.task == "regression"
    assert data.num_subjects == 3 and len(data.test_subject_ids) == 1
    assert not set(data.subject_ids) & set(data.test_subject_ids)
    # 3 s at 15 fps = 45 frames -> 2 clips per video; 2 visits per subject
    assert len(data.train) == 3 * 2 * 2 and len(data.test) == 1 * 2 * 2
    batch = next(iter(DataLoader(data.train, batch_size=5)))
    assert batch["clips"].shape == (5, 1, 16, 64, 64) and batch["clips"].dtype == torch.float32
    assert 0.0 <= batch["clips"].min() and batch["clips"].max() <= 1.0
    assert batch["target"].dtype == torch.float32 and batch["target"].shape == (5,)
    for key in ("subject", "visit", "video"):
        assert batch[key].dtype == torch.int64 and batch[key].shape == (5,)
    # training subjects 0..num_subjects-1, test subjects after them
    assert set(data.train.subjects.tolist()) == {0, 1, 2}
    assert set(data.test.subjects.tolist()) == {3}
    # targets are score / score_max, matching the manifest
    for v in data.videos:
        assert v["target"] == pytest.approx(v["score"] / 27)
    item = data.test[0]
    vid = data.videos[int(item["video"])]
    assert vid["split"] == "test" and vid["subject"] == data.test_subject_ids[0]
    assert float(item["target"]) == pytest.approx(vid["score"] / 27)
    # video indices are unique across the site
    assert sorted(v["video_index"] for v in data.videos) == list(range(8))


def test_load_site_is_deterministic_and_seeded(prepared_cohort):
    a = load_site(prepared_cohort / "site-02", seed=1)
    b = load_site(prepared_cohort / "site-02", seed=1)
    assert a.test_subject_ids == b.test_subject_ids
    assert torch.equal(a.train[3]["clips"], b.train[3]["clips"])
    splits = {tuple(load_site(prepared_cohort / "site-02", seed=s).test_subject_ids)
              for s in range(6)}
    assert len(splits) > 1


def test_classification_and_kfold(prepared_cohort):
    data = load_site(prepared_cohort / "site-01", task="classification", folds=4, fold=2, seed=0)
    assert data.train[0]["target"].dtype == torch.int64
    labels = {int(data.train[i]["target"]) for i in range(len(data.train))}
    assert labels <= {0, 1} and data.num_classes == 2
    tests = [tuple(load_site(prepared_cohort / "site-01", folds=4, fold=f).test_subject_ids)
             for f in range(4)]
    assert sorted(s for t in tests for s in t) == sorted(f"S01-0{i}" for i in range(1, 5))


def test_split_column_and_prepare_cfg(tmp_path, tiny_cohort):
    site = tmp_path / "site"
    shutil.copytree(tiny_cohort / "site-01", site)
    lines = (site / "manifest.csv").read_text().splitlines()
    out = [lines[0] + ",split"]
    for ln in lines[1:]:
        out.append(ln + ("," + ("test" if ln.split(",")[1] == "S01-02" else "train")))
    (site / "manifest.csv").write_text("\n".join(out) + "\n")
    prepare_site(site, PrepareConfig(size=32, frames=8, stride=1, hop=15), progress=False)
    data = load_site(site, PrepareConfig(size=32, frames=8, stride=1, hop=15))
    assert data.test_subject_ids == ["S01-02"]
    assert data.train[0]["clips"].shape == (1, 8, 32, 32)
    assert len(data.train) == 3 * 2 * 3          # 45 frames, window 8, hop 15 -> 3 clips


def test_no_usable_video_raises(tmp_path, helpers):
    helpers.write_manifest(tmp_path / "s", [["videos/x.mp4", "A", 1, 3]])
    prepare_site(tmp_path / "s", progress=False)
    with pytest.raises(RuntimeError, match="no usable video"):
        load_site(tmp_path / "s")


def test_subject_split_and_kfold():
    subs = [f"s{i}" for i in range(10)]
    tr, te = subject_split(subs, 0.3, seed=4)
    assert len(te) == 3 and not set(tr) & set(te) and sorted(tr + te) == sorted(subs)
    assert subject_split(list(reversed(subs)), 0.3, seed=4) == (tr, te)   # order-free
    assert subject_split(["a", "b"], 0.01)[1] != []                       # at least one
    assert subject_split(["a", "b"], 0.99)[0] != []                       # never all
    folds = kfold_subjects(subs, 3, seed=0)
    assert sorted(s for _, te in folds for s in te) == sorted(subs)
    assert {len(te) for _, te in folds} == {3, 4}
    with pytest.raises(ValueError):
        kfold_subjects(subs, 11)


class _FakeDataset:
    def __init__(self, subjects, visits):
        self.subjects = np.asarray(subjects)
        self.visits = np.asarray(visits)

    def __len__(self):
        return len(self.subjects)


def test_pk_sampler():
    # 5 subjects, 3 visits each, 4 clips per visit; subject 4 has only 2 clips
    subjects, visits = [], []
    for s in range(4):
        for v in range(3):
            subjects += [s] * 4
            visits += [v] * 4
    subjects += [4, 4]
    visits += [0, 1]
    ds = _FakeDataset(subjects, visits)
    sampler = PKBatchSampler(ds, p=3, k=3, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == int(np.ceil(50 / 9))
    for b in batches:
        assert len(b) == 9
        subs = [subjects[i] for i in b]
        counts = Counter(subs)
        assert len(counts) == 3 and set(counts.values()) == {3}
        for s in counts:                               # positives from different visits
            vis = [visits[i] for i in b if subjects[i] == s]
            assert len(set(vis)) == min(3, len({visits[i] for i in range(50)
                                                 if subjects[i] == s}))
    # seeded: same seed same batches; epochs differ
    assert list(PKBatchSampler(ds, 3, 3, seed=0)) == batches
    assert list(sampler) != batches
    sampler.set_epoch(0)
    assert list(sampler) == batches
    # fewer subjects than p: all of them
    assert all(len(set(subjects[i] for i in b)) == 5
               for b in PKBatchSampler(ds, p=8, k=2, seed=1))


def test_pk_sampler_with_dataloader(prepared_cohort):
    data = load_site(prepared_cohort / "site-01")
    loader = DataLoader(data.train, batch_sampler=PKBatchSampler(data.train, p=2, k=2, seed=0))
    batch = next(iter(loader))
    assert batch["clips"].shape[0] == 4
    assert Counter(batch["subject"].tolist()).most_common()[0][1] == 2


def test_dataloader_worker_processes(prepared_cohort):
    data = load_site(prepared_cohort / "site-02")
    data.train[0]                                    # opens a memory map in this process
    loader = DataLoader(data.train, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(len(b["clips"]) for b in batches) == len(data.train)
    assert torch.equal(batches[0]["clips"][1], data.train[1]["clips"])
