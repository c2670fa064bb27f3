"""The embedding model in a child process of its own, so that it never waits for its caller's GIL.

``SubprocessEncoder`` starts ``python -m memory.encoder_process``, which loads
``SentenceTransformerEmbedder`` and answers batches over its stdin and stdout:

- request: 4-byte big-endian length, then a UTF-8 JSON array of texts;
- reply: ``V``, then two big-endian uint32 (rows, dim) and the float32 vectors, row
  by row; or ``E``, a 4-byte length and a UTF-8 error message;
- once at start: ``R``, the dim and the precision it runs (``f`` float32, ``b``
  bfloat16) when the model is loaded, or ``E`` and why not.

NOTE: why a process. The eager model runs Python between its torch operators; in
the Embedding replica that Python needs the GIL that Serve's request handling holds
~40% of the time under load, and the model waits for it between operators. Beside
one busy Python thread the eager model encoded 31 texts/s instead of ~150
(docs/benchmarks.md, "Tenth session"); in its own process it waits for nobody.
The vectors are bit for bit those of the model in the caller's process
(tests/unit/test_encoder_process.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import IO, cast

import numpy as np

from memory.embedder import Precision

_LEN = struct.Struct(">I")
_SHAPE = struct.Struct(">II")
_PRECISION_CODES = {"float32": b"f", "bfloat16": b"b"}  # what the model runs, in the ready message


class SubprocessEncoder:
    """``encode(texts)`` by the model in a child process, which encodes one batch at a time.

    Calls from several threads are pipelined: a batch is written to the child while
    an earlier one still encodes, so the child starts it the moment it is free,
    and each caller reads its own reply in the order the batches were sent.

    The child inherits this process's environment (``OMP_NUM_THREADS``, which Ray
    sets from the replica's CPUs) and import path, and its niceness. It exits when
    its stdin closes: when ``close()`` is called, or when this process dies in any
    way, SIGKILL included.

    Args:
        model_path: A sentence-transformers model directory; the bundled one by default.
        start_timeout_s: How long the model may take to load.
        precision: The model's (``SentenceTransformerEmbedder``); ``self.precision`` is what it runs.
    """

    def __init__(
        self, model_path: str | None = None, start_timeout_s: float = 120.0, precision: Precision = "auto"
    ) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        args = [sys.executable, "-m", "memory.encoder_process", precision] + ([model_path] if model_path else [])
        # NOTE: stderr is inherited: the child's warnings land in the replica's log.
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._send_lock = threading.Lock()  # one request written at a time
        self._turns = threading.Condition()  # guards the counts below; replies are read in sending order
        self._sent = 0  # requests written
        self._replied = 0  # replies read (or failed)
        self._head_since: float | None = None  # when the child began the batch it encodes now
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in: IO[bytes] = self._proc.stdin
        self._out: IO[bytes] = self._proc.stdout
        ready = threading.Timer(start_timeout_s, self._proc.kill)  # a hung load must not hang the replica
        ready.start()
        try:
            kind = self._read(1)
            if kind == b"R":
                (self.dim,) = _LEN.unpack(self._read(_LEN.size))
                code = self._read(1)
                self.precision = next(name for name, c in _PRECISION_CODES.items() if c == code)
                return
            message = self._read_error() if kind == b"E" else "it exited while loading"
        except RuntimeError as exc:
            message = str(exc)
        finally:
            ready.cancel()
        self.close()
        raise RuntimeError(f"the embedding model process did not start: {message}")

    @property
    def pid(self) -> int:
        return self._proc.pid

    def alive(self) -> bool:
        return self._proc.poll() is None

    def busy_for(self) -> float:
        """Seconds the batch being encoded has taken so far; 0 when idle."""
        since = self._head_since
        return 0.0 if since is None else time.monotonic() - since

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Unit-length vectors, one per text, in order. Blocking; safe from any thread."""
        if not texts:
            return []
        ticket = self._send(json.dumps(texts).encode())
        with self._turns:
            while self._replied != ticket:
                self._turns.wait()
        try:
            rows, data = self._receive()
        finally:
            with self._turns:
                self._replied += 1
                self._head_since = time.monotonic() if self._replied < self._sent else None
                self._turns.notify_all()
        if rows != len(texts):
            raise RuntimeError(f"the embedding model returned {rows} vectors for {len(texts)} texts")
        vectors: list[list[float]] = np.frombuffer(data, dtype=np.float32).reshape(rows, -1).tolist()
        return vectors

    def _send(self, body: bytes) -> int:
        """Write one request; its place in the order of replies."""
        with self._send_lock:
            try:
                self._in.write(_LEN.pack(len(body)) + body)
                self._in.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise RuntimeError(f"the embedding model process is gone (exit code {self._proc.poll()})") from exc
            with self._turns:
                if self._replied == self._sent:  # the child was idle: it starts this one now
                    self._head_since = time.monotonic()
                self._sent += 1
                return self._sent - 1

    def _receive(self) -> tuple[int, bytes]:
        """Read the next reply (the caller's turn): rows and the vectors' bytes."""
        kind = self._read(1)
        if kind == b"E":
            raise RuntimeError(f"the embedding model failed: {self._read_error()}")
        if kind != b"V":
            self._proc.kill()  # out of step with us: a replacement is the only way back
            raise RuntimeError(f"the embedding model process sent {kind!r}, not a reply")
        rows, dim = _SHAPE.unpack(self._read(_SHAPE.size))
        return rows, self._read(rows * dim * 4)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the child: EOF on its stdin, then SIGKILL if it has not gone in ``timeout_s``."""
        with contextlib.suppress(OSError):
            self._in.close()
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._out.close()

    def _read(self, n: int) -> bytes:
        data = self._out.read(n)
        if len(data) != n:  # EOF: the child is exiting
            try:
                code: int | None = self._proc.wait(5)
            except subprocess.TimeoutExpired:
                code = None
            raise RuntimeError(f"the embedding model process is gone (exit code {code})")
        return data

    def _read_error(self) -> str:
        (n,) = _LEN.unpack(self._read(_LEN.size))
        return self._read(n).decode(errors="replace")


def _serve(model_path: str | None, precision: Precision, inp: IO[bytes], out: IO[bytes]) -> int:
    from memory.embedder import EMBEDDING_DIM, SentenceTransformerEmbedder

    def error(message: str) -> None:
        data = message.encode()
        out.write(b"E" + _LEN.pack(len(data)) + data)
        out.flush()

    try:
        model = SentenceTransformerEmbedder(model_path, precision=precision)
    except Exception as exc:  # the parent raises it with the reason
        error(f"{type(exc).__name__}: {exc}")
        return 1
    out.write(b"R" + _LEN.pack(EMBEDDING_DIM) + _PRECISION_CODES[model.precision])
    out.flush()
    while True:
        header = inp.read(_LEN.size)
        if len(header) < _LEN.size:  # the parent closed the pipe or died
            return 0
        body = inp.read(_LEN.unpack(header)[0])
        try:
            texts = json.loads(body)
            vectors = np.ascontiguousarray(model.encode_array(texts), dtype=np.float32)
        except Exception as exc:  # this batch fails; the next one runs
            error(f"{type(exc).__name__}: {exc}")
            continue
        out.write(b"V" + _SHAPE.pack(*vectors.shape) + vectors.tobytes())
        out.flush()


def main() -> int:
    # NOTE: Ctrl-C reaches the whole process group; this process ends with its parent,
    # when its stdin closes, not with a KeyboardInterrupt traceback in the replica's log.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # NOTE: stdout carries the replies alone: keep a private copy of it for them and
    # send whatever the libraries print to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    precision = cast(Precision, sys.argv[1])
    return _serve(sys.argv[2] if len(sys.argv) > 2 else None, precision, sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main())
