"""partition(): complete, disjoint, sorted; the personality prefix exactly on the local side."""
import pytest
import torch

import mpdrm


@pytest.mark.parametrize("kw", [dict(), dict(num_subjects=5), dict(use_mpfn=False), dict(use_rarm=False),
                                dict(use_mmp=False), dict(task="classification", num_classes=4)])
def test_partition_complete_disjoint_prefix(kw):
    model = mpdrm.build_model("tiny", **kw)
    model.register_buffer("some_buffer", torch.zeros(2))  # buffers are partitioned too
    model.personality is not None and model.personality.register_buffer("local_buffer", torch.ones(1))
    shared, local = mpdrm.partition(model)
    keys = set(model.state_dict())
    assert set(shared) | set(local) == keys
    assert not set(shared) & set(local)
    assert shared == sorted(shared) and local == sorted(local)
    assert all(k.startswith("personality.") for k in local)
    assert not any(k.startswith("personality.") for k in shared)
    assert "some_buffer" in shared
    if model.personality is not None:
        assert "personality.local_buffer" in local
        assert any(k.startswith("personality.head.") for k in local)
        assert any(k.startswith("personality.backbone.") for k in local)
        if kw.get("num_subjects"):
            assert "personality.prototypes.weight" in local
    else:
        assert local == []
    assert any(k.startswith("depression.") for k in shared)
    assert any(k.startswith("head.") for k in shared)
    assert any(k.startswith("rarm.") for k in shared) == model.config.use_rarm
    assert list(mpdrm.shared_state(model)) == shared
    assert list(mpdrm.local_state(model)) == local


def test_every_parameter_is_named_once():
    model = mpdrm.build_model("tiny", num_subjects=3)
    shared, local = mpdrm.partition(model)
    params = [n for n, _ in model.named_parameters()]
    assert sorted(params) == sorted(set(params))
    assert set(params) <= set(shared) | set(local)


def test_load_shared_state_round_trip_and_rejects_other_names():
    a = mpdrm.build_model("tiny", num_subjects=3)
    torch.manual_seed(1)
    b = mpdrm.build_model("tiny", num_subjects=3)
    mpdrm.load_shared_state(b, {k: v.clone() for k, v in mpdrm.shared_state(a).items()})
    for k, v in mpdrm.shared_state(b).items():
        assert torch.equal(v, mpdrm.shared_state(a)[k])
    # local weights untouched
    assert not torch.equal(mpdrm.local_state(a)["personality.prototypes.weight"],
                           mpdrm.local_state(b)["personality.prototypes.weight"])
    leaked = dict(mpdrm.shared_state(a))
    leaked["personality.prototypes.weight"] = torch.zeros(3, 64)
    with pytest.raises(KeyError):
        mpdrm.load_shared_state(b, leaked)
    missing = dict(mpdrm.shared_state(a))
    missing.pop(next(iter(missing)))
    with pytest.raises(KeyError):
        mpdrm.load_shared_state(b, missing)
    mpdrm.load_local_state(b, mpdrm.local_state(a))


def test_partition_looks_through_opacus_wrapper():
    from opacus import GradSampleModule

    model = mpdrm.build_model("tiny", num_subjects=2)
    wrapped = GradSampleModule(model)
    assert mpdrm.partition(wrapped) == mpdrm.partition(model)
    assert list(mpdrm.shared_state(wrapped)) == mpdrm.partition(model)[0]
