"""Progress for the long steps (writing files, waiting for the device), on stderr.

`rich` draws bars on a terminal; without a terminal (CI, logs) or without rich, each step is a
plain line when it starts and when it ends. Results go to stdout, not here.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

try:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TransferSpeedColumn,
    )
except ImportError:  # rich is optional: plain lines instead of bars
    Console = None  # type: ignore[assignment,misc]


class Reporter:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._rich = Console is not None and self.stream.isatty() and not quiet
        self._console = Console(file=self.stream) if self._rich else None
        self._job: tuple[Progress, Any] | None = None  # the one bar of a whole job (see `job`)

    def info(self, message: str) -> None:
        if not self.quiet:
            print(message, file=self.stream, flush=True)

    @contextmanager
    def job(self, label: str, total: int) -> Iterator[None]:
        """One bar for a whole job of several transfers (a blank board: MicroPython, then our
        firmware): every `transfer` inside it advances this bar and names its step."""
        if self._console is None:
            started = time.monotonic()
            self.info(f"{label}: {total:,} bytes in all ...")
            yield
            self.info(f"{label}: done in {time.monotonic() - started:.1f} s")
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeElapsedColumn(), console=self._console,
                      transient=False) as progress:
            self._job = (progress, progress.add_task(label, total=total))
            try:
                yield
            finally:
                self._job = None

    @contextmanager
    def transfer(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        """A byte counter; yields `advance(n)`."""
        if self._job is not None:
            progress, task = self._job
            progress.update(task, description=label)
            yield lambda n: progress.advance(task, n)
            return
        if self._console is None:
            started = time.monotonic()
            self.info(f"{label}: {total:,} bytes ...")
            yield lambda n: None
            self.info(f"{label}: done in {time.monotonic() - started:.1f} s")
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), console=self._console, transient=False) as progress:
            task = progress.add_task(label, total=total)
            yield lambda n: progress.advance(task, n)

    @contextmanager
    def waiting(self, label: str, timeout: float) -> Iterator[Callable[[], None]]:
        """A bar that fills as the deadline approaches; yields `tick()`."""
        if self._console is None:
            self.info(f"{label} (up to {timeout:.0f} s) ...")
            yield lambda: None
            return
        started = time.monotonic()
        with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=self._console, transient=True) as progress:
            task = progress.add_task(label, total=timeout)
            yield lambda: progress.update(task, completed=min(timeout, time.monotonic() - started))
