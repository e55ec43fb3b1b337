"""Stop sequences over a stream of text: never emit a stop, even split across tokens."""

from __future__ import annotations

from collections.abc import Sequence


class StopMatcher:
    """Feed text as it is generated; get back what is safe to emit and whether to stop.

    Text that could still become the start of a stop sequence is held back until the next
    piece decides it, so a streaming client never sees part of a stop sequence.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._held = ""
        self.matched: str | None = None  # the stop sequence that ended the text

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        window = self._held + text
        cut = min((i for i in (window.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self._held = ""
            self.matched = next(s for s in self._stops if window.find(s) == cut)
            return window[:cut], True
        keep = self._partial_suffix(window)
        self._held = window[len(window) - keep :] if keep else ""
        return window[: len(window) - keep], False

    def flush(self) -> str:
        """What was held back, once generation ended without completing a stop."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, window: str) -> int:
        """Length of the longest suffix of `window` that is a proper prefix of a stop."""
        for size in range(min(self._longest - 1, len(window)), 0, -1):
            tail = window[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0
