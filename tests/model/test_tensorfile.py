"""Data-only files: a tree round-trips exactly; truncated, altered, foreign or pickled files are refused."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from mpdrm import tensorfile
from mpdrm.persistence import capture_rng, restore_rng
from mpdrm.tensorfile import TensorFileError


def _tree():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    opt.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    opt.step()
    return {"round": 3, "local": {"personality.w": torch.randn(4, 5), "personality.n": torch.tensor(7)},
            "optimizer": opt.state_dict(), "rng": capture_rng(), "dp": {"history": [(1.1, 0.01, 40)], "eps": None},
            "names": ["a", "b"], 5: "int key", ("x", 1): np.arange(6, dtype=np.float32).reshape(2, 3),
            "flag": True, "inf": float("inf")}


def _same(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


def test_tree_round_trips_exactly(tmp_path):
    tree = _tree()
    tensorfile.save(tmp_path / "s.safetensors", tree)
    back = tensorfile.load(tmp_path / "s.safetensors")
    assert _same(tree, back)
    restore_rng(back["rng"])  # the RNG snapshot is usable as read back
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 2))], lr=1e-3)
    opt.load_state_dict(back["optimizer"])


def test_truncated_altered_and_foreign_files_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "state.safetensors"
    tensorfile.save(path, _tree())
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(TensorFileError, match="state.safetensors"):
        tensorfile.load(path)
    altered = bytearray(blob)
    altered[-1] ^= 0xFF
    path.write_bytes(bytes(altered))
    with pytest.raises(TensorFileError, match="SHA-256"):
        tensorfile.load(path)
    path.write_bytes(b"")
    with pytest.raises(TensorFileError, match="state.safetensors"):
        tensorfile.load(path)


def test_a_pickle_payload_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes(pickle.dumps({"round": 1, "x": Payload()}))
    with pytest.raises(TensorFileError, match="checkpoint.safetensors"):
        tensorfile.load(path)
    assert not marker.exists()


def test_objects_that_are_not_data_are_not_written(tmp_path):
    with pytest.raises(TypeError, match="object"):
        tensorfile.save(tmp_path / "x.safetensors", {"bad": object()})
    assert not (tmp_path / "x.safetensors").exists()


def test_the_same_tree_gives_the_same_bytes():
    tree = {"a": torch.arange(5), "b": {"c": [1.5, None, "x"]}, "d": np.ones(3)}
    assert tensorfile.dumps(tree) == tensorfile.dumps(tree)
