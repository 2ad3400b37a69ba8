"""Site names: simulated sites report theirs, deployed sites report only ids.

Regression: a deployment whose SuperNodes had ``site-id`` 1..3 was once named after the
folders of a default synthetic cohort cached on the coordinator's machine (ids 1, 2 became
``site-02``, ``site-03``), so failure messages named the wrong sites.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flwr.app import ConfigRecord, Context, RecordDict

from client.site import resolve_site
from mpdrm.contract.runconfig import merged
from mpdrm.contract.sites import cohort_sites
from mpdrm.data.cohorts import CACHE_ENV, default_cohort_dir
from server.app import learn_site_names
from strategies.ordering import reported_site_names
from tests.federation.message_helpers import reply
from tests.federation.sim_helpers import TINY_RUN, make_tiny_cohort, node_context, run_in_process


def _site(name: str) -> dict[str, ConfigRecord]:
    return {"site": ConfigRecord({"name": name})}


def test_reported_names_come_from_the_site_record_only() -> None:
    replies = [reply(7, None, {"site-id": 0}, extra=_site("site-01")),
               reply(8, None, {"site-id": 4}),  # a deployed site: no name
               reply(9, None, {"site-id": 5}, extra={"site": ConfigRecord({"name": ""})})]
    assert reported_site_names(replies) == {"0": "site-01"}


def test_learned_names_rename_the_summary_and_round_zero() -> None:
    class Strategy:
        site_names = {"0": "site-01", "1": "site-02"}

    sites: dict[str, str] = {}
    summary = {"sites": {}, "initial": {"eval": {"per_site": {"0": {"rmse": 1.0}, "1": {"rmse": 2.0}}}}}
    learn_site_names(Strategy(), sites, summary)  # type: ignore[arg-type]
    assert sites == summary["sites"] == {"0": "site-01", "1": "site-02"}
    assert set(summary["initial"]["eval"]["per_site"]) == {"site-01", "site-02"}


def test_only_simulation_partitions_announce_their_name(tmp_path: Path) -> None:
    cohort = make_tiny_cohort(tmp_path, sites=2)
    folder = cohort_sites(cohort)[0]
    deployed = resolve_site({"data-path": str(folder), "site-id": 1}, {})
    simulated = resolve_site({"partition-id": 0, "num-partitions": 2}, {"cohort": str(cohort)})
    assert (deployed.simulated, simulated.simulated) == (False, True)
    assert simulated.name == folder.name


def test_deployed_sites_are_named_by_id_whatever_cohorts_the_coordinator_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    cohort = make_tiny_cohort(tmp_path, sites=2)
    # The coordinator's cache holds the default cohort a deployed run's config would map to.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    run_config = {**TINY_RUN, "num-server-rounds": 1, "run-dir": str(tmp_path / "run")}
    shutil.copytree(cohort, default_cohort_dir(merged(run_config), 2))
    contexts = {100 + i: Context(run_id=1, node_id=100 + i, state=RecordDict(), run_config={},
                                 node_config={"data-path": str(folder), "site-id": i + 1,
                                              "state-dir": str(tmp_path / "state" / folder.name)})
                for i, folder in enumerate(cohort_sites(cohort))}
    summary = run_in_process(run_config, contexts)
    assert summary["sites"] == {}
    assert set(summary["rounds"][0]["train"]["per_site"]) == {"1", "2"}

    simulated = {100 + i: node_context(i, 2) for i in range(2)}
    summary = run_in_process({**TINY_RUN, "num-server-rounds": 1, "cohort": str(cohort),
                              "run-dir": str(tmp_path / "sim"), "state-root": str(tmp_path / "sim-state")},
                             simulated)
    assert summary["sites"] == {"0": "site-01", "1": "site-02"}
    assert set(summary["rounds"][0]["train"]["per_site"]) == {"site-01", "site-02"}
