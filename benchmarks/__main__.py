"""``python -m benchmarks``: the benchmark suite (``benchmarks.suite``), run from the repository root."""
from benchmarks.suite import main

raise SystemExit(main())
