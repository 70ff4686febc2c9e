"""A real ``tilebox console`` process for the console tests, and plain HTTP requests to it."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

TILEBOX = str(Path(sys.executable).parent / "tilebox")


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: str


class ConsoleProcess:
    """``tilebox console --port 0`` against ``redis_url``/``team``; its address is read from
    the line it prints. Stopped with SIGTERM (and killed if it does not stop)."""

    def __init__(self, redis_url: str, team: str, work: Path, *args: str) -> None:
        self.log = work / "console.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TILEBOX_")}
        env.update(TILEBOX_REDIS_URL=redis_url, TILEBOX_TEAM=team, TILEBOX_HOME=str(work / "home"))
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [TILEBOX, "console", "--port", "0", *args],
                env=env, stdout=subprocess.PIPE, stderr=log, text=True,
            )  # fmt: skip
        self.url = self._address()

    def _address(self) -> str:
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if ready:
                line = self.process.stdout.readline()
                match = re.search(r"http://\S+/", line)
                if match:
                    return match[0].rstrip("/")
            if self.process.poll() is not None:
                break
        self.stop()
        raise AssertionError(f"the console did not start: {self.log.read_text()[-2000:]}")

    def get(self, path: str, method: str = "GET") -> Reply:
        request = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Reply(response.status, dict(response.headers), response.read().decode())
        except urllib.error.HTTPError as error:
            with error:
                return Reply(error.code, dict(error.headers), error.read().decode())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stdout:
            self.process.stdout.close()
