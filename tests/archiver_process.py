"""An archiver in its own process, for crash tests: it SIGKILLs itself after the Nth time it
completes STEP (intend, put, record or trim; ``none``: it runs its pass to the end).

python -m tests.archiver_process URL TEAM STEP N

The archive is the one TILEBOX_ARCHIVE_URL (else TILEBOX_HOME) names; retention 0, segments of
3 entries, so that a small team makes several segments per log.
"""

from __future__ import annotations

import os
import signal
import sys

import msgspec

from tilebox_core import Client
from tilebox_core.archiver import Archiver


def main() -> None:
    url, team, step, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    seen = 0

    def hook(done: str, stream: str) -> None:
        nonlocal seen
        if done == step:
            seen += 1
            if seen == nth:
                os.kill(os.getpid(), signal.SIGKILL)

    with Client(url, team=team) as client:
        archiver = Archiver(client, retention_ms=0, segment_entries=3, hook=hook, lease_ms=500)
        passes = archiver.run_once()
        archiver.release()
    print(msgspec.json.encode(passes).decode(), flush=True)


if __name__ == "__main__":
    main()
