"""Shared helpers of the federation tests: a tiny prepared cohort and a tiny run config."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flwr.app import Context, RecordDict

from client.app import create_client_app
from mpdrm.contract.runconfig import merged, run_prepare_config
from mpdrm.data.prepare import prepare_site
from mpdrm.data.synth import generate_cohort
from server.app import run_server
from tests.federation.message_helpers import LocalGrid, ensure_task_identity

#: Hydra overrides of ``mpdrm-simulate`` for a fast run (also the source of TINY_RUN).
TINY_OVERRIDES = [
    "model.image_size=32",
    "prepare.max_clips=2",
    "data.batch_size=4",
    "data.pk_p=2",
    "data.pk_k=2",
    "data.eval_batch_size=8",
    "train.epochs=1",
]

#: The same settings as flat run-config keys, for in-process runs.
TINY_RUN: dict[str, Any] = {
    "model.image_size": 32,
    "prepare.max_clips": 2,
    "data.batch_size": 4,
    "data.pk_p": 2,
    "data.pk_k": 2,
    "data.eval_batch_size": 8,
    "data.test_fraction": 0.34,
    "data.score_max": 27.0,
    "train.epochs": 1,
    "train.lr": 0.001,
    "min-sites": 2,
    "seed": 0,
}


#: The prepared tiny cohorts of this test process, by number of sites (see make_tiny_cohort).
_PREPARED: dict[int, Path] = {}


def _prepared_original(sites: int) -> Path:
    """The tiny cohort of ``sites`` sites, generated and prepared once per test process in a
    temporary folder removed at exit."""
    if sites not in _PREPARED:
        root = Path(tempfile.mkdtemp(prefix="fedmpdrm-tiny-cohort-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        cohort = generate_cohort(root / "cohort", sites=sites, subjects=3, visits=2, seconds=3.0, seed=0, workers=1)
        prep = run_prepare_config(merged(TINY_RUN))  # clips at the model's shape (32 px)
        for site in sorted(p for p in Path(cohort).iterdir() if (p / "manifest.csv").is_file()):
            prepare_site(site, prep, workers=1, progress=False)
        _PREPARED[sites] = Path(cohort)
    return _PREPARED[sites]


def make_tiny_cohort(root: Path, sites: int = 2) -> Path:
    """A small synthetic cohort (3 subjects x 2 visits x 3 s per site), prepared, in
    ``root / "cohort"``: the caller's own copy (it may write into it) of one cohort generated
    and prepared once per test process. ``copytree`` keeps every file's mtime, so the copy is
    as prepared as the original (the clip index records size and mtime of its files,
    relative to the site folder)."""
    return Path(shutil.copytree(_prepared_original(sites), Path(root) / "cohort", symlinks=True))


def node_context(partition_id: int, num: int) -> Context:
    """A fresh simulation node context (what a restarted site process starts with)."""
    return Context(run_id=1, node_id=100 + partition_id, node_config={"partition-id": partition_id, "num-partitions": num},
                   state=RecordDict(), run_config={})


def run_in_process(run_config: dict[str, Any], contexts: dict[int, Context], client_mods: list | None = None,
                   wrap: dict[int, Any] | None = None) -> dict[str, Any]:
    """The real ServerApp and ClientApp code over an in-process Grid; returns the summary.

    ``contexts`` maps node id -> Context (keep them between calls for an uninterrupted
    site process, pass fresh ones for a restarted one); ``wrap`` maps node id -> a
    function ``(handler) -> handler`` (e.g. a malicious site).
    """
    ensure_task_identity()
    client = create_client_app(run_config, mods=client_mods)
    handlers = {}
    for node_id, ctx in contexts.items():
        handler = (lambda c: (lambda message: client(message, c)))(ctx)
        handlers[node_id] = (wrap or {}).get(node_id, lambda h: h)(handler)
    server_ctx = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    return run_server(LocalGrid(handlers, seed=1), server_ctx, run_config)
