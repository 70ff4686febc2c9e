"""The event loops coroutine tasks (``async def execute``) are awaited on: one per worker thread
of a runner, made on its first coroutine task and reused for the next (async clients that a task
keeps for later ones stay bound to a live loop), closed when the worker ends."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import threading
from collections.abc import Coroutine
from typing import Any


class EventLoop:
    """One worker's event loop. It runs in the worker's own thread; where that thread runs a loop
    of its own already (a notebook's: a runner started in a Jupyter cell), which would refuse a
    second, it runs in a thread beside it, and the worker waits for each coroutine there."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Await ``coroutine`` to its end; its result, or its error (a cancellation is an error
        of the task's, not the runner's)."""
        try:
            return self._run(coroutine)
        except (asyncio.CancelledError, concurrent.futures.CancelledError) as exc:
            raise RuntimeError("the task's coroutine was cancelled") from exc

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            if _running_loop() is not None:
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name=f"{self._name}-loop", daemon=True
                )
                self._thread.start()
        if self._thread is None:
            return self._loop.run_until_complete(coroutine)
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """Cancel what the tasks left running on the loop, and close it (as ``asyncio.run``)."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        thread, self._thread = self._thread, None
        try:
            if thread is None:
                loop.run_until_complete(_shut_down(loop))
            else:
                asyncio.run_coroutine_threadsafe(_shut_down(loop), loop).result()
        finally:
            if thread is not None:
                loop.call_soon_threadsafe(loop.stop)
                thread.join()
            loop.close()


async def _shut_down(loop: asyncio.AbstractEventLoop) -> None:
    left = [task for task in asyncio.all_tasks(loop) if task is not asyncio.current_task()]
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()


def not_runnable(task: object, returned: object) -> TypeError:
    """The error of a task whose ``execute`` returned ``returned`` (not None, not a coroutine):
    the task fails with it rather than completing with none of its code run."""
    name = type(task).__qualname__
    if inspect.isgenerator(returned):
        why = "a generator: execute contains 'yield', so none of its code ran; remove the yield"
    elif inspect.isasyncgen(returned):
        why = (
            "an async generator: 'async def execute' contains 'yield', so none of its code ran; "
            "remove the yield"
        )
    elif inspect.isawaitable(returned):
        why = (
            f"an awaitable ({type(returned).__name__}) that is not a coroutine: only a coroutine "
            "(what 'async def execute' returns) is awaited; make execute 'async def' and await it "
            "there"
        )
    else:
        why = f"{type(returned).__name__} {_short(returned)}: execute must return None"
    return TypeError(f"{name}.execute returned {why}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
