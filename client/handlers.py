"""The train and evaluate handlers: Flower message in, Flower message out.

A handler (1) merges the run config with the instruction's ConfigRecord, (2) finds its
site, (3) builds the model from the global shared weights in the message plus the
site's own local weights from its private state, (4) trains or evaluates with
``mpdrm.training``, and (5) replies with the shared names only.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from mpdrm.contract import keys
from mpdrm.contract.runconfig import build, merged
from mpdrm.contract.sharing import build_site_model, check_inbound, kept_names, load_weights, outbound_state, run_shared_names
from mpdrm.contract.site_data import calibration_offset, eval_loader, personality_source, site_data, train_loader
from mpdrm.contract.sites import derive_seed
from mpdrm.inference.keep import MODEL_SUBDIR, keep_site_model, personality_of
from mpdrm.training import TrainConfig, center_personality, evaluate, round_lr_factor, train_local
from mpdrm.training_engine import optimizer_state_of

from .privacy import PrivateRound, client_dp_config, decline_reply, newest_ledger
from .site import Site, resolve_site
from .state import SiteStateStore, seed_all

log = logging.getLogger("fedmpdrm.client")


@dataclass
class SiteSession:
    """Everything one handler call works with."""

    cfg: dict[str, Any]
    site: Site
    data: Any
    model: torch.nn.Module
    shared: list[str]
    store: SiteStateStore
    state: dict[str, Any] | None
    server_round: int


def open_session(message: Message, context: Context, overrides: Mapping[str, Any] | None, *, for_round: int) -> SiteSession:
    """Resolve the site, build its model and load global + local weights.

    Parameters
    ----------
    message : Message
        The instruction (ArrayRecord "arrays" with the shared names, ConfigRecord "config").
    context : Context
        The node's context (node config, run config, state).
    overrides : Mapping, optional
        Run-config entries layered over ``context.run_config`` (simulation harness).
    for_round : int
        Load the site state meant to start round ``for_round`` (train: the server round;
        evaluate: the server round + 1, i.e. the state after training that round).
    """
    config = message.content.config_records.get(keys.CONFIG)
    cfg = merged(context.run_config, overrides, extra=dict(config) if config is not None else None)
    site = resolve_site(context.node_config, cfg)
    data = site_data(site.data_dir, cfg)
    store = SiteStateStore(site.state_dir, context)
    state = store.load(for_round)
    # Every random draw of a message derives from (run seed, site, round): a restarted or
    # resumed site repeats an uninterrupted one without carrying RNG state on disk.
    # Every site builds its model from the run seed, as the coordinator builds the initial one:
    # the local personality branches start identical, so the shared RARM sees aligned p spaces.
    seed_all(int(cfg["seed"]))
    model = build_site_model(cfg, data.num_subjects)
    seed_all(derive_seed(int(cfg["seed"]), site.site_id, for_round))
    shared = run_shared_names(model, cfg)
    arrays = message.content.array_records.get(keys.ARRAYS, ArrayRecord())
    check_inbound(arrays, shared)
    incoming = arrays.to_torch_state_dict() if len(arrays) else {}
    load_weights(model, incoming, state["local"] if state is not None else {})
    return SiteSession(cfg, site, data, model, shared, store, state, int(cfg.get(keys.SERVER_ROUND, 0)))


def _prefixed(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    return {k if k.startswith(prefix) else f"{prefix}{k}": float(v) for k, v in metrics.items()}


def carried_optimizer_state(s: SiteSession, carry: str) -> dict[str, Any] | None:
    """The saved optimizer state this round starts from (``train.carry_optimizer_state``)."""
    if s.state is None or not s.state.get("optimizer") or carry == "none":
        return None
    if carry == "local":
        return optimizer_state_of(s.state["optimizer"], s.model, kept_names(s.model, s.shared))
    if carry != "all":
        raise ValueError(f"train.carry_optimizer_state must be all, local or none, got {carry!r}")
    return s.state["optimizer"]


def handle_train(message: Message, context: Context, overrides: Mapping[str, Any] | None = None) -> Message:
    """Train the site's model for the configured local epochs; reply with the shared part."""
    start = time.perf_counter()
    server_round = int(message.content.config_records["config"]["server-round"])
    s = open_session(message, context, overrides, for_round=server_round)
    tcfg = build(TrainConfig, s.cfg, "train", seed=derive_seed(int(s.cfg["seed"]), s.site.site_id, server_round) % 2**31)
    tcfg.lr *= round_lr_factor(tcfg, server_round, int(s.cfg["num-server-rounds"]))
    reference = None
    if "proximal-mu" in s.cfg and float(s.cfg["proximal-mu"]) > 0:
        tcfg.proximal_mu = float(s.cfg["proximal-mu"])
        reference = {k: v.detach().clone() for k, v in s.model.state_dict().items() if k in set(s.shared)}
    loader_seed = derive_seed(int(s.cfg["seed"]), s.site.site_id, server_round)
    dp_cfg = client_dp_config(s.cfg)
    dp_round = None
    if dp_cfg is not None:  # client-side DP-SGD: Poisson loader, budget check, private engine
        dp_round = PrivateRound(dp_cfg, newest_ledger(s.store.candidates()), s.data.train,
                                batch_size=int(s.cfg["data.batch_size"]), epochs=tcfg.epochs,
                                max_steps=tcfg.max_steps, seed=loader_seed)
        if not dp_round.allowed:
            log.warning("site %s round %d declined: %s", s.site.name, server_round, dp_round.decision.reason)
            return decline_reply(message, s.site.site_id, dp_round)
    loader = dp_round.loader if dp_round is not None else train_loader(s.data.train, s.cfg, seed=loader_seed)
    if s.state is None and dp_round is None and tcfg.center_personality:  # a new personality branch
        center_personality(s.model, eval_loader(s.data.train, s.cfg))
    # train_local seeds every RNG from tcfg.seed (site, round): a resumed site trains like an
    # uninterrupted one
    result = train_local(
        s.model,
        loader,
        tcfg,
        engine=dp_round.engine() if dp_round is not None else None,
        optimizer_state=carried_optimizer_state(s, tcfg.carry_optimizer_state),
        reference_params=reference,
    )
    dp_state = dp_round.close() if dp_round is not None else (s.state.get("dp") if s.state is not None else None)
    local = {k: v.detach().clone() for k, v in s.model.state_dict().items() if k in set(kept_names(s.model, s.shared))}
    s.store.save(
        {
            "round": server_round,
            "local": local,
            "optimizer": result.optimizer_state,
            "dp": dp_state,
            "site": s.site.name,
        }
    )
    metrics = _prefixed(result.metrics, "train-")
    metrics.update(
        {
            "num-examples": int(result.num_examples),
            "site-id": int(s.site.site_id),
            "train-steps": float(result.steps),
            "train-seconds": time.perf_counter() - start,
        }
    )
    if dp_round is not None:
        metrics.update(dp_round.metrics())
    log.info("site %s round %d trained: %s", s.site.name, server_round, metrics)
    content = RecordDict(
        {"arrays": ArrayRecord(outbound_state(s.model, s.shared)), "metrics": MetricRecord(metrics),
         **site_record(s.site)}
    )
    return Message(content, reply_to=message)


def handle_evaluate(message: Message, context: Context, overrides: Mapping[str, Any] | None = None) -> Message:
    """Evaluate the personalised model (global shared + own local part) on held-out subjects."""
    config = message.content.config_records.get("config")
    server_round = int(config["server-round"]) if config is not None and "server-round" in config else 0
    s = open_session(message, context, overrides, for_round=server_round + 1)
    offset = calibration_offset(s.model, s.data, s.cfg)
    results = evaluate(s.model, eval_loader(s.data.test, s.cfg), task=str(s.cfg["data.task"]),
                       offset=offset or 0.0, **personality_source(s.data, s.cfg))
    keep_model(s, context, server_round, offset)
    metrics: dict[str, Any] = {k: float(v) for k, v in results.items()}
    if offset is not None:
        metrics["calibration_offset"] = offset
    metrics.update({"num-examples": int(len(s.data.test)), "site-id": int(s.site.site_id)})
    return Message(RecordDict({"metrics": MetricRecord(metrics), **site_record(s.site)}), reply_to=message)


def site_record(site: Site) -> dict[str, ConfigRecord]:
    """The reply's ``site`` ConfigRecord with the folder name (simulated sites only)."""
    return {keys.SITE: ConfigRecord({keys.SITE_NAME: site.name})} if site.simulated else {}


def keep_model(s: SiteSession, context: Context, server_round: int, offset: float | None = None) -> None:
    """Write ``STATE_DIR/model/``: the evaluated model (global shared + local) and what scoring needs.

    Written atomically at every evaluation (``mpdrm.inference.keep.keep_site_model``); it
    never leaves the site. A failed write is logged and does not fail the evaluation.
    """
    try:
        keep_site_model(s.site.state_dir / MODEL_SUBDIR, s.model, s.data, s.cfg, site=s.site.name,
                        run_id=int(context.run_id) if context.run_id else None, server_round=server_round,
                        personality=personality_of(s.cfg), calibration_offset=offset)
    except OSError as error:
        log.warning("site %s round %d: model directory not written (%s)", s.site.name, server_round, error)
