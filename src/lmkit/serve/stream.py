"""Streaming text out of generated tokens: whole UTF-8 characters only, stop strings never leaked.

A byte-level tokenizer may split one character (an emoji, an accented letter) across two tokens,
and a stop string may span several tokens. :class:`TextStream` receives each new token's bytes and
releases only text that can no longer change: bytes of an unfinished character wait for the rest
(an incremental UTF-8 decoder, so no U+FFFD appears mid-character), and a tail that could be the
start of a stop string waits until it is either completed (the text is cut before it) or ruled
out. The streamed pieces joined are exactly the final text, so a streamed and a non-streamed
completion of the same tokens are equal. Pure: no model, no server.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    """Bytes of generated tokens in, releasable text out; ``stopped`` once a stop string appeared."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self.stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # decoded so far (cut at the stop string once one appeared)
        self.released = 0  # characters of ``text`` handed out
        self.stopped = False
        self.stop_found: str | None = None

    def push(self, data: bytes) -> str:
        """Add one token's bytes; return the text that became final (possibly "")."""
        if self.stopped:
            return ""
        self.text += self._decoder.decode(data)
        return self._release(final=False)

    def finish(self) -> str:
        """No more tokens: flush an unfinished character (as U+FFFD) and the held-back tail."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self.stop and not self.stopped:
            # a stop string can only start where it could overlap text not yet searched
            longest = max(len(s) for s in self.stop)
            begin = max(0, self.released - longest + 1)
            hits = [(i, s) for s in self.stop if (i := self.text.find(s, begin)) >= 0]
            if hits:
                cut, found = min(hits)
                self.text, self.stopped, self.stop_found = self.text[:cut], True, found
        end = len(self.text)
        if not final and not self.stopped:
            end -= self._held_back()
        piece = self.text[self.released : end]
        self.released = max(self.released, end)
        return piece

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best
