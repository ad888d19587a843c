"""What the benchmarks that start clusters and processes share: their clean-up steps run in
reverse whatever happens, and SIGTERM taken as Ctrl-C, so a killed run still stops everything
it started (by pid)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

Run = Callable[[argparse.Namespace, dict, list], Awaitable[None]]


async def run_then_clean_up(run: Run, args: argparse.Namespace, result: dict) -> dict[str, Any]:
    """`run(args, result, cleanup)`, then each step it added to `cleanup`, last first (a step
    may be a coroutine function)."""
    cleanup: list = []
    try:
        await run(args, result, cleanup)
    finally:
        for step in reversed(cleanup):
            outcome = step()
            if asyncio.iscoroutine(outcome) or isinstance(outcome, asyncio.Future):
                await outcome
    return result


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """A SIGTERM unwinds the run like Ctrl-C, through its clean-up."""
    signal.signal(signal.SIGTERM, _interrupt)
