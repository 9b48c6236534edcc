"""Progress of pulls, imports and unpacks, on stderr: a bar on a terminal, JSON lines with -j, else
nothing. The CLI chooses the mode once (Node.image_progress); the store and the container backend
report through `reporter()`."""

from __future__ import annotations

import json
import sys
import time

BAR, JSON, QUIET = "bar", "json", "quiet"
_mode = QUIET
BAR_EVERY = 0.1  # s between two redraws of the bar
JSON_EVERY = 0.5  # s between two JSON lines (the first and the last are always written)


def configure(mode: str) -> None:
    global _mode
    _mode = mode if mode in (BAR, JSON, QUIET) else QUIET


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class Reporter:
    """One operation's progress: update(done, total) as often as wanted; finish() once."""

    def __init__(self, phase: str, what: str, mode: str | None = None, stream=None):
        self.phase = phase  # pull | import | unpack
        self.what = what
        self.mode = mode or _mode
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._last = 0.0
        self._shown = False

    def update(self, done: int, total: int | None = None, force: bool = False) -> None:
        if self.mode == QUIET:
            return
        now = time.monotonic()
        every = BAR_EVERY if self.mode == BAR else JSON_EVERY
        if not force and self._shown and now - self._last < every:
            return
        self._last, self._shown = now, True
        if self.mode == JSON:
            self._json(done=done, total=total)
            return
        if total:
            frac = min(1.0, done / total)
            bar = "#" * int(frac * 30)
            text = f"{self.phase} {self.what} [{bar:<30}] {frac * 100:3.0f}% {_mb(done)}/{_mb(total)}"
        else:
            text = f"{self.phase} {self.what} {_mb(done)} ({now - self.started:.1f} s)"
        self.stream.write("\r" + text[:200] + "\x1b[K")
        self.stream.flush()

    def finish(self, done: int, ok: bool = True) -> None:
        if self.mode == QUIET:
            return
        seconds = round(time.monotonic() - self.started, 3)
        if self.mode == JSON:
            self._json(done=done, total=done if ok else None, finished=True, ok=ok, seconds=seconds)
            return
        if self._shown or ok:
            word = "done" if ok else "failed"
            self.stream.write(f"\r{self.phase} {self.what}: {word}, {_mb(done)} in {seconds:.1f} s\x1b[K\n")
            self.stream.flush()

    def _json(self, **fields) -> None:
        self.stream.write(json.dumps({"progress": self.phase, "image": self.what, **fields}, sort_keys=True) + "\n")
        self.stream.flush()


def reporter(phase: str, what: str) -> Reporter:
    return Reporter(phase, what)
