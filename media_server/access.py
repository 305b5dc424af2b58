"""Who may watch a lesson: the pairing's rules (its classrooms and observers, ops), checked
against the county config without the mixer; and the log of every view of minors' video.

The token rules are the mixer's (``mixer.guard.credentials``): the ops API token reads
everything, an observer the lessons of its pairings, a classroom (static or signed token)
the lessons of the pairings it belongs to.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from syncclass.config import CountyConfig
from syncclass.errors import AuthError
from syncclass.tokens import SigningKey, looks_signed, verify_token

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Viewer:
    """Who asks, and which pairings' lessons they may watch (``None``: every pairing)."""

    who: str
    """``ops:api_token``, ``ops:<user>``, ``classroom:<id>``, ``observer:<id>`` or
    ``share``."""
    pairings: frozenset[str] | None

    def may_watch(self, pairing_id: str) -> bool:
        return self.pairings is None or pairing_id in self.pairings


class ViewerIndex:
    """Maps a bearer credential to a :class:`Viewer` (constant-time comparisons)."""

    def __init__(self, config: CountyConfig, api_token: str | None = None) -> None:
        self.config = config
        token = api_token or config.ops.api_token
        self._api_token = token.encode() if token else None
        self._keys = [SigningKey(k.id, k.secret.encode()) for k in config.mixer.token_keys]

    def _pairings_of(self, classroom_id: str) -> frozenset[str]:
        return frozenset(p.id for p in self.config.pairings
                         if classroom_id == p.main or classroom_id in p.receiving)

    def viewer_for_who(self, who: str) -> Viewer | None:
        """The viewer a grant's ``who`` names, with the pairings the config gives it now
        (a grant outlives no change of the config: a removed observer reads nothing)."""
        kind, _, ident = who.partition(":")
        if kind == "ops":
            if ident == "api_token" or any(u.name == ident for u in self.config.ops.users):
                return Viewer(who, None)
            return None
        if kind == "observer":
            with contextlib.suppress(KeyError):
                return Viewer(who, frozenset(self.config.observer(ident).pairings))
            return None
        if kind == "classroom":
            with contextlib.suppress(KeyError):
                self.config.classroom(ident)
                return Viewer(who, self._pairings_of(ident))
        return None

    def viewer_for_token(self, token: str, now_s: float | None = None) -> Viewer | None:
        """The viewer ``token`` stands for; ``None`` if it is none we know (or expired)."""
        raw = token.encode()
        if self._api_token is not None and hmac.compare_digest(self._api_token, raw):
            return Viewer("ops:api_token", None)
        for o in self.config.observers:
            if hmac.compare_digest(o.token.encode(), raw):
                return Viewer(f"observer:{o.id}", frozenset(o.pairings))
        if looks_signed(token):
            try:
                claims = verify_token(token, self._keys, time.time() if now_s is None
                                      else now_s)
            except AuthError:
                return None
            return Viewer(f"classroom:{claims.classroom_id}",
                          self._pairings_of(claims.classroom_id))
        if self.config.mixer.allow_static_tokens:
            for c in self.config.classrooms:
                if hmac.compare_digest(c.token.encode(), raw):
                    return Viewer(f"classroom:{c.id}", self._pairings_of(c.id))
        return None


class ViewLog:
    """Append-only log of views of lesson video (minors: who, when, what), one JSON line
    each in ``path``, flushed per line. A viewer's repeated requests for the same lesson
    (playlist reloads, segments) are one view per ``dedup_s``."""

    def __init__(self, path: Path, dedup_s: float = 600.0) -> None:
        self.path = path
        self.dedup_s = dedup_s
        self._last: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self.written = 0

    def claim(self, who: str, lesson_id: str, what: str, remote: str | None,
              now_s: float | None = None) -> str | None:
        """The log line of a view of ``lesson_id`` (``what``: ``live``, ``replay``,
        ``download``), or ``None`` if the same viewer's view was logged less than
        ``dedup_s`` ago. In memory only: :meth:`write` the line (off the event loop)."""
        now = time.time() if now_s is None else now_s
        # Share-link viewers have no name: one view per address.
        key = (who if who != "share" else f"share@{remote}", lesson_id, what)
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.dedup_s:
                return None
            self._last[key] = now
            if len(self._last) > 100_000:  # forget the oldest half (bounded memory)
                for k in sorted(self._last, key=self._last.__getitem__)[:50_000]:
                    del self._last[k]
        return json.dumps({"epoch_ms": int(now * 1000), "who": who, "lesson_id": lesson_id,
                           "what": what, "remote": remote}, ensure_ascii=False) + "\n"

    def write(self, line: str) -> None:
        """Append ``line`` and fsync (blocking: run it in a worker thread)."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            self.written += 1

    def read(self) -> list[dict[str, object]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                logger.warning("%s: skipping an unreadable line", self.path)
        return out
