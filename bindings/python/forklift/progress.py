"""A progress bar for long maps: tqdm when installed, a plain text bar otherwise."""

from __future__ import annotations

import sys
import threading


class Progress:
    """Counts finished items of one map and shows them on stderr."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.done = 0
        self._lock = threading.Lock()
        self._stream = stream or sys.stderr
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, file=self._stream)
        except ImportError:
            self._bar = None
            self._draw()

    def advance(self, count: int):
        with self._lock:
            self.done += count
            if self._bar is not None:
                self._bar.update(count)
            else:
                self._draw()
            if self.done >= self.total:
                self.close()

    def _draw(self):
        width = 30
        filled = width * self.done // self.total if self.total else width
        end = "\n" if self.done >= self.total else ""
        self._stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}{end}")
        self._stream.flush()

    def attach(self, result):
        """Closes the bar when ``result`` fails, so the terminal is left clean."""

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
