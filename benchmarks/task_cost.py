"""The work one no-op task costs, counted in instructions: steadier than tasks/s on a shared machine.

    python benchmarks/task_cost.py [--backend valkey|redis | --url URL] [--tasks N] [--valgrind]

In one process, one after the other: N single-task jobs (one ``jobs().submit_many`` call, then a
direct runner's ``run_all``), and one job whose root task fans out N no-op subtasks (``run_all``).
For each it prints, per task: the server's instructions (``perf stat`` attached to the server
process, when ``perf`` is installed, may attach and the machine has hardware counters; the
server must run on this machine; or, with ``--valgrind``, callgrind's count), the server's CPU time (INFO cpu) and this process's CPU time (submitting and running).

Instruction counts repeat within about 1% from run to run, whatever else the machine is doing;
times and tasks/s (``tasks_bench.py``) swing by tens of percent on a shared 2-vCPU machine. Use
this script to compare two versions of the task plane; use ``tasks_bench.py`` for throughput.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # for tests.servers

import noop_tasks  # noqa: E402
from noop_tasks import FanOut, Noop  # noqa: E402
from tasks_bench import delete_team  # noqa: E402

from tests.servers import add_server_arguments, server_url  # noqa: E402
from tilebox_core import Client  # noqa: E402
from tilebox_core.logs import configure_logging  # noqa: E402


@contextmanager
def perf_instructions(pid: int) -> Iterator[Callable[[], int | None]]:
    """Count the instructions process ``pid`` runs inside the block; None if perf cannot (not
    installed, not allowed to attach, or no hardware counters, as on many VMs)."""
    counted: list[int | None] = [None]
    perf = shutil.which("perf")
    if perf is None:
        yield lambda: counted[0]
        return
    process = subprocess.Popen(
        [perf, "stat", "-x", ",", "-e", "instructions", "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(0.2)  # attached before the work starts
    try:
        yield lambda: counted[0]
    finally:
        process.send_signal(signal.SIGINT)
        _, report = process.communicate(timeout=10)
        for line in report.splitlines():
            value, _, event = ([*line.split(","), "", "", ""])[:3]
            if event.startswith("instructions") and value.isdigit():
                counted[0] = int(value)


def callgrind_launcher(work: Path) -> list[str]:
    """Run the throwaway server under callgrind: exact instruction counts, about 50x slower."""
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/callgrind.out"]


@contextmanager
def callgrind_instructions(
    pid: int, work: Path, keep: Path | None = None
) -> Iterator[Callable[[], int | None]]:
    """Count the instructions the server ``pid``, run by ``callgrind_launcher(work)``, executes
    inside the block: its counters are zeroed before and dumped after (and the dump copied to
    ``keep``, for ``callgrind_annotate``)."""
    counted: list[int | None] = [None]
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
    try:
        yield lambda: counted[0]
    finally:
        subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
        dumps = sorted(work.glob("callgrind.out.*"), key=lambda p: int(p.suffix[1:]))
        if keep is not None:
            shutil.copy(dumps[-1], keep)
        for line in dumps[-1].read_text().splitlines():
            if line.startswith("summary:"):
                counted[0] = int(line.split()[1])


def server_cpu(client: Client) -> float:
    info = client.redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def measure(
    url: str,
    label: str,
    tasks: int,
    work: Callable[[Client], None],
    callgrind: Path | None,
    keep: Path | None,
) -> None:
    team = f"cost-{uuid.uuid4().hex[:8]}"
    with Client(url, team=team) as client:
        pid = int(client.redis.info("server")["process_id"])
        cpu, mine = server_cpu(client), time.process_time()
        if callgrind:
            dump = keep / f"callgrind.{label.split()[0]}" if keep else None
            counter = callgrind_instructions(pid, callgrind, dump)
        else:
            counter = perf_instructions(pid)
        with counter as counted:
            work(client)
        cpu, mine = server_cpu(client) - cpu, time.process_time() - mine
        delete_team(client.redis, client.store.keys)  # with --url: leave nothing behind
    count = counted()
    server = f"{count / tasks:,.0f} instructions" if count else "instructions n/a (see --valgrind)"
    print(
        f"{label}: server {server}, {cpu / tasks * 1e6:.0f} us CPU per task; "
        f"this process (submit + run) {mine / tasks * 1e6:.0f} us CPU per task",
        flush=True,
    )


def run_single(n: int) -> Callable[[Client], None]:
    def work(client: Client) -> None:
        client.jobs().submit_many(("single", Noop(i)) for i in range(n))
        client.runner(tasks=noop_tasks.TASKS).run_all()

    return work


def run_fanout(n: int) -> Callable[[Client], None]:
    def work(client: Client) -> None:
        client.jobs().submit("fan-out", FanOut(n))
        client.runner(tasks=noop_tasks.TASKS).run_all()

    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_server_arguments(parser)
    parser.add_argument(
        "--tasks", type=int, default=10_000, help="jobs, and subtasks of the fan-out"
    )
    parser.add_argument(
        "--valgrind", action="store_true",
        help="run the throwaway server under callgrind and count with it (where perf cannot "
        "count; exact, but the run takes about 50x longer: use --tasks 2000)",
    )  # fmt: skip
    parser.add_argument(
        "--keep-profiles", type=Path, metavar="DIR",
        help="with --valgrind: copy each measurement's callgrind profile to DIR "
        "(callgrind.single, callgrind.fan-out) for callgrind_annotate",
    )  # fmt: skip
    args = parser.parse_args()
    if args.tasks < 1:
        parser.error("--tasks must be positive")
    if args.valgrind and (args.url or not shutil.which("valgrind")):
        parser.error("--valgrind needs valgrind installed, and a throwaway server (no --url)")
    if args.keep_profiles and not args.valgrind:
        parser.error("--keep-profiles needs --valgrind")
    if args.keep_profiles:
        try:
            args.keep_profiles.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            parser.error(f"--keep-profiles {args.keep_profiles}: cannot use it as a directory "
                         f"({exc.strerror}); pass a directory path")  # fmt: skip
    configure_logging("warning")
    works: list[Path] = []

    def launcher(work: Path) -> list[str]:
        works.append(work)
        return callgrind_launcher(work)

    with server_url(args.backend, args.url, launcher if args.valgrind else None) as url:
        callgrind = works[0] if works else None
        counting = "callgrind" if callgrind else "perf"
        print(f"server: {args.url or args.backend}; {args.tasks} tasks per measurement; "
              f"instructions counted by {counting}", flush=True)  # fmt: skip
        measure(
            url,
            "single-task jobs",
            args.tasks,
            run_single(args.tasks),
            callgrind,
            args.keep_profiles,
        )
        measure(
            url,
            "fan-out subtasks",
            args.tasks + 1,
            run_fanout(args.tasks),
            callgrind,
            args.keep_profiles,
        )


if __name__ == "__main__":
    main()
