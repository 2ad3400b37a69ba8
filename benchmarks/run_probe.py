"""The command line shared by the probes that read finished runs (``RUN_DIR ... [--out FILE]``)."""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def probe_main(doc: str, report: Callable[[Path], dict[str, Any]], line: Callable[[dict[str, Any]], str],
               argv: list[str] | None = None) -> int:
    """Parse ``RUN_DIR [RUN_DIR ...] [--out FILE] [--threads N]``, print ``line(report(run))`` per
    run and write every report to ``--out`` as JSON."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, help="write the reports here as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reports = []
    for run_dir in args.run_dirs:
        reports.append(report(run_dir))
        print(line(reports[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(reports, indent=1))
    return 0
