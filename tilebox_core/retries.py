"""Retrying with backoff: one policy for every loop that waits and tries again.

tenacity's jittered exponential backoff ("full jitter": a random wait between 0 and
``min(cap, base * 2**(attempt - 1))``), so that many clients retrying at once spread out instead of
hitting a recovering server together. Loops that retry a call use ``retrying``; loops that
schedule their retries themselves (a release restarted while the others run) ask ``delay``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import tenacity


def policy(base: float, cap: float) -> tenacity.wait.wait_base:
    return tenacity.wait_random_exponential(multiplier=base, max=cap)


def delay(attempt: int, *, base: float, cap: float) -> float:
    """The wait before retry ``attempt`` (1 for the first retry)."""
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt
    return policy(base, cap)(state)


def retrying(
    *errors: type[BaseException],
    attempts: int | Callable[[], int],
    base: float,
    cap: float,
    on_retry: Callable[[BaseException, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tenacity.Retrying:
    """A ``tenacity.Retrying`` that retries ``errors`` up to ``attempts`` retries (a callable is
    asked each time: a draining runner gives up sooner) and then re-raises the last error;
    ``on_retry(error, wait)`` is told before each wait (to log it)."""

    def stop(state: tenacity.RetryCallState) -> bool:
        limit = attempts() if callable(attempts) else attempts
        return state.attempt_number > limit

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None and state.next_action is not None:
            error = state.outcome.exception()
            if error is not None:
                on_retry(error, state.next_action.sleep)

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(errors),
        stop=stop,
        wait=policy(base, cap),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
