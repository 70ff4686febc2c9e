"""A direct runner in its own process, for crash and concurrency tests.

python -m tests.runner_process URL TEAM CLUSTER MODULE:CLASS[,MODULE:CLASS...] [LEASE] [PREFETCH]
"""

from __future__ import annotations

import importlib
import sys

from tilebox_core import Client
from tilebox_core.logs import configure_logging


def load(spec: str) -> type:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def main() -> None:
    url, team, cluster, classes = sys.argv[1:5]
    lease = float(sys.argv[5]) if len(sys.argv) > 5 else 2.0
    prefetch = int(sys.argv[6]) if len(sys.argv) > 6 else 4
    configure_logging("warning")
    client = Client(url, team=team, retries=20)
    tasks = [load(spec) for spec in classes.split(",")]
    print("ready", flush=True)
    client.runner(
        cluster, tasks, lease_seconds=lease, prefetch=prefetch, block_ms=200
    ).run_forever()


if __name__ == "__main__":
    main()
