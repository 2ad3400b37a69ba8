"""pyproject's ``[tool.flwr.app.config]`` is the schema's flat defaults, and the flat config round-trips."""
from __future__ import annotations

import dataclasses

import pytest

from mpdrm.contract import pyproject
from mpdrm.contract.runconfig import (build, check_keys, flat_defaults, flat_keys, merged, run_model_config,
                                      run_prepare_config, to_flat)
from mpdrm.contract.schema import RunSchema
from mpdrm.training import TrainConfig
from tests.contract.layers import ROOT


def test_config_sync_pyproject_equals_schema_defaults():
    assert pyproject.differences(ROOT / "pyproject.toml") == []


def test_config_sync_detects_a_drifted_pyproject(tmp_path):
    text = (ROOT / "pyproject.toml").read_text().replace("train.lr = 0.001", "train.lr = 0.01")
    drifted = tmp_path / "pyproject.toml"
    drifted.write_text(text.replace('dp.mode = "none"\n', "") + '\n[tool.flwr.app.config.extra]\nkey = 1\n')
    diff = pyproject.differences(drifted)
    assert "train.lr: 0.01 != schema default 0.001" in diff
    assert any(d.startswith("dp.mode: missing") for d in diff)
    assert "extra.key: not in the schema" in diff
    drifted.write_text(pyproject.with_block(drifted.read_text()))
    assert [d for d in pyproject.differences(drifted) if not d.startswith("extra.key")] == []


def test_config_sync_generated_block_is_idempotent():
    text = (ROOT / "pyproject.toml").read_text()
    assert pyproject.with_block(text) == text


def test_config_sync_flat_keys_are_unique_and_cover_every_run_setting():
    keys = [k.key for k in flat_keys()]
    assert len(keys) == len(set(keys))
    assert {"num-server-rounds", "mode", "fraction-train", "data.pk_p", "data.pk_k", "prepare.hop", "train.epochs",
            "model.size", "dp.mode", "dp.clipping_norm"} <= set(keys)
    assert not {"sites", "cache-dir", "audit", "data.synth.subjects", "resources.client_cpus", "prepare.size",
                "prepare.frames", "prepare.grayscale", "train.seed"} & set(keys)


def test_config_sync_run_defaults_are_the_schema_sections():
    flat = flat_defaults()
    train = build(TrainConfig, flat, "train")
    assert (train.epochs, train.schedule) == (2, "none")  # the run's, not TrainConfig's own (1, cosine)
    assert dataclasses.replace(train, epochs=1, schedule="cosine") == TrainConfig()
    assert to_flat(RunSchema()) == flat


def test_a_value_outside_its_choices_is_refused_before_any_site_starts():
    for key, bad in (("eval.protocol", "visit"), ("eval.calibration", "affine"), ("model.depression_input", "flow")):
        with pytest.raises(ValueError, match=f"run config: {key}='{bad}' is not one of"):
            merged({key: bad})
    assert merged({"eval.calibration": "none", "eval.protocol": "enrolled"})["eval.calibration"] == "none"


def test_config_sync_unknown_key_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown key 'trian\.lr' \(did you mean 'train\.lr'\?\)"):
        merged({"trian.lr": 0.1})
    with pytest.raises(ValueError, match="unknown key 'data.pk'"):
        check_keys({"data.pk": 3})
    assert merged({"strategy.options.eta": 0.01})["strategy.options.eta"] == 0.01  # free-form aggregator keywords
    assert merged(extra={"server-round": 3})["server-round"] == 3  # an instruction's keys are not run config


@pytest.mark.parametrize(("size", "channels", "pixels"), [("tiny", 1, 64), ("base", 1, 112), ("paper", 3, 112)])
def test_config_sync_clip_shape_follows_the_model(size, channels, pixels):
    cfg = merged({"model.size": size})
    model, prep = run_model_config(cfg), run_prepare_config(cfg)
    assert (model.in_channels, model.image_size) == (channels, pixels)
    assert (prep.channels, prep.size, prep.frames) == (channels, pixels, model.frames)
    assert run_prepare_config(merged({"model.size": size, "model.image_size": 32})).size == 32


def _composed(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    import simulations.simulate  # noqa: F401  (registers the schema in Hydra's ConfigStore)

    with initialize_config_dir(str(ROOT / "simulations" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    return OmegaConf.to_object(cfg)


def test_config_sync_hydra_groups_hold_only_overrides():
    """The composed default run differs from the schema only where the harness fills in."""
    run = _composed(["run_dir=/tmp/x"])
    flat, defaults = to_flat(run), flat_defaults()
    differ = {k for k in defaults if flat[k] != defaults[k]}
    assert differ == {"run-dir", "min-sites", "data.score_max"}  # filled by mpdrm-simulate
    paper = to_flat(_composed(["run_dir=/tmp/x", "model=paper", "dp=opacus", "ablation=no_mpfn"]))
    assert (paper["model.size"], paper["dp.mode"], paper["dp.target_epsilon"], paper["model.use_mpfn"]) == \
        ("paper", "opacus", 8.0, False)


def test_config_sync_command_line_keys_are_checked_with_a_suggestion():
    from simulations.overrides import check_overrides

    assert check_overrides(["rounds=2", "model=base", "train.lr=1e-4", "+strategy.options.eta=0.1", "--cfg", "job",
                            "hydra.run.dir=x", "strategy.options.eta=0.1"]) is None
    assert check_overrides(["trian.lr=1"]) == "unknown config key 'trian.lr' (did you mean 'train.lr'?)"
