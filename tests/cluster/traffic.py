"""Background HTTP traffic that counts every failure: non-200, no ``done`` event, connection errors."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import httpx

from tests.support.sse import parse_sse


@dataclass
class Traffic:
    """``clients`` threads, each alternating a chat with a tool call and a streamed turn.

    Args:
        base_url: The Serve HTTP address.
        clients: Concurrent clients.
        stream_tokens: Tokens per streamed reply (the scripted LLM's ``slow:`` pace), so
            streams are in flight when replicas are replaced.
    """

    base_url: str
    clients: int = 4
    stream_tokens: int = 20
    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Traffic:
        for i in range(self.clients):
            t = threading.Thread(target=self._client, args=(i,), daemon=True, name=f"traffic-{i}")
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=180)
        assert not any(t.is_alive() for t in self._threads), "a traffic client is stuck"

    def wait_for(self, ok: int, timeout_s: float = 120) -> None:
        """Until ``ok`` more requests have succeeded (bounded)."""
        target = self.ok + ok
        deadline = time.monotonic() + timeout_s
        while self.ok < target:
            assert time.monotonic() < deadline, f"traffic stalled: {self.summary()}"
            time.sleep(0.2)

    def summary(self) -> str:
        return f"sent {self.sent}, ok {self.ok}, failed {len(self.failures)}: {self.failures[:5]}"

    def _record(self, failure: str | None) -> None:
        with self._lock:
            self.sent += 1
            if failure is None:
                self.ok += 1
            else:
                self.failures.append(failure)

    def _client(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, timeout=180) as http:
            for n in itertools.count():
                if self._stop.is_set():
                    return
                try:
                    failure = self._chat(http, index, n) if n % 2 == 0 else self._stream(http, index, n)
                except httpx.HTTPError as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                self._record(failure)

    def _chat(self, http: httpx.Client, index: int, n: int) -> str | None:
        r = http.post("/api/chat", json={"message": f"calc: {index}+{n}", "user_id": f"traffic-{index}"})
        if r.status_code != 200:
            return f"chat {r.status_code}: {r.text[:200]}"
        if r.json()["response"] != f"The result is {index + n}.":
            return f"chat answered {r.json()['response']!r}"
        return None

    def _stream(self, http: httpx.Client, index: int, n: int) -> str | None:
        body = {"message": f"slow: {self.stream_tokens}", "user_id": f"traffic-{index}"}
        r = http.post("/api/chat/stream", json=body)
        if r.status_code != 200:
            return f"stream {r.status_code}: {r.text[:200]}"
        names = [name for name, _ in parse_sse(r.text)]
        if not names or names[-1] != "done" or "error" in names:
            return f"stream events {names[-3:]}: {r.text[-300:]}"
        return None
