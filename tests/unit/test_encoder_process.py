"""The embedding model in a child process: the same vectors, its failures, and its end.

These start real child processes with the bundled model (``python -m
memory.encoder_process``); each test that starts one stops it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from deployments.embedding import EmbeddingDeployment
from memory.embedder import EMBEDDING_DIM, SentenceTransformerEmbedder
from memory.encoder_process import SubprocessEncoder
from serve_app.procfs import stat_fields

TEXTS = ["calc: 17*23", "ünïcödé テスト 🚀", "", "The quick brown fox jumps over the lazy dog. " * 80]


@pytest.fixture(scope="module")
def encoder() -> Iterator[SubprocessEncoder]:
    enc = SubprocessEncoder()
    yield enc
    enc.close()


def gone(pid: int, within_s: float) -> bool:
    """Whether process ``pid`` has exited (or is a zombie) within ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        stat = stat_fields(pid)
        if stat is None or stat[0] == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def test_the_child_gives_the_vectors_of_the_model_in_this_process(encoder: SubprocessEncoder) -> None:
    here = SentenceTransformerEmbedder()
    assert encoder.dim == EMBEDDING_DIM
    assert encoder.precision == here.precision  # ``auto`` decides alike in both
    assert encoder.encode(TEXTS) == here.encode(TEXTS)  # bit for bit, as Python floats
    assert encoder.encode(TEXTS[:1]) == here.encode(TEXTS[:1])
    assert encoder.encode([]) == []


def test_the_child_runs_the_precision_asked_for() -> None:
    enc = SubprocessEncoder(precision="float32")
    try:
        assert enc.precision == "float32"
        assert enc.encode(TEXTS) == SentenceTransformerEmbedder(precision="float32").encode(TEXTS)
    finally:
        enc.close()


def threads_after_a_batch() -> int:
    """Threads of a new model process once it has encoded a batch."""
    enc = SubprocessEncoder()
    try:
        enc.encode([f"text number {i}" for i in range(32)])
        return len(os.listdir(f"/proc/{enc.pid}/task"))
    finally:
        enc.close()


def test_the_child_tokenizes_a_batch_on_its_own_thread_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tokenizer's thread pool would contend with Serve's threads for the replica's CPU.
    # NOTE: unset here, as in a replica (this process may have set it by loading the model).
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    own = threads_after_a_batch()
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # an operator's choice is kept
    assert threads_after_a_batch() > own


def test_calls_from_many_threads_each_get_their_own_vectors(encoder: SubprocessEncoder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"text number {i}" for i in range(24)]
    expected = [encoder.encode([t])[0] for t in texts]  # alone, not padded in a batch
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: encoder.encode([t])[0], texts))
    assert got == expected


def test_a_batch_is_sent_while_the_one_before_it_encodes(
    encoder: SubprocessEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child gets the next batch while it encodes one, so it never waits between them."""
    from concurrent.futures import ThreadPoolExecutor

    send, receive = encoder._send, encoder._receive
    tickets: list[int] = []
    second_sent = threading.Event()
    waited: list[bool] = []

    def sending(body: bytes) -> int:
        tickets.append(send(body))
        if len(tickets) == 2:
            second_sent.set()
        return tickets[-1]

    def receiving() -> tuple[int, bytes]:
        if not waited:  # the first reply is read only once the second batch is in the pipe
            waited.append(second_sent.wait(10))
        return receive()

    monkeypatch.setattr(encoder, "_send", sending)
    monkeypatch.setattr(encoder, "_receive", receiving)
    here = SentenceTransformerEmbedder()
    expected = [here.encode(TEXTS[:2]), here.encode(TEXTS[2:])]
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(encoder.encode, TEXTS[:2])
        b = pool.submit(encoder.encode, TEXTS[2:])
        assert [a.result(30), b.result(30)] == expected
    assert waited == [True]
    assert sorted(tickets) == [min(tickets), min(tickets) + 1]  # appended after the send lock: any order
    assert encoder.busy_for() == 0.0


def test_a_batch_the_model_rejects_fails_alone_and_the_next_one_runs(encoder: SubprocessEncoder) -> None:
    with pytest.raises(RuntimeError, match=r"the embedding model failed: \w*Error"):
        encoder.encode([{"not": "a text"}])  # type: ignore[list-item]
    assert encoder.alive()
    [vec] = encoder.encode(["still here"])
    assert len(vec) == EMBEDDING_DIM


def test_ctrl_c_leaves_the_child_to_end_with_its_parent(encoder: SubprocessEncoder) -> None:
    os.kill(encoder.pid, signal.SIGINT)  # what Ctrl-C sends the whole process group
    assert not gone(encoder.pid, 0.5)
    [vec] = encoder.encode(["after Ctrl-C"])
    assert len(vec) == EMBEDDING_DIM


async def test_a_model_process_stuck_in_a_batch_fails_the_replicas_health_check(encoder: SubprocessEncoder) -> None:
    dep = EmbeddingDeployment({"model_stall_timeout_s": 0.3}, encoder=encoder)
    await dep.check_health()
    os.kill(encoder.pid, signal.SIGSTOP)  # stuck: alive, but it answers nothing
    try:
        pending = asyncio.ensure_future(asyncio.to_thread(encoder.encode, ["stuck"]))
        await asyncio.sleep(0.6)
        assert encoder.busy_for() > 0.3
        with pytest.raises(RuntimeError, match="encoding one batch for"):
            await dep.check_health()
    finally:
        os.kill(encoder.pid, signal.SIGCONT)
    [vec] = await pending  # the batch was not lost, only late
    assert len(vec) == EMBEDDING_DIM and encoder.busy_for() == 0.0
    await dep.check_health()
    del dep  # the deployment closes only a model process it started itself
    assert encoder.alive()


def test_a_dead_child_fails_the_call_clearly_and_close_reaps_it() -> None:
    enc = SubprocessEncoder()
    os.kill(enc.pid, signal.SIGKILL)
    assert gone(enc.pid, 10)
    with pytest.raises(RuntimeError, match="the embedding model process is gone"):
        enc.encode(["hello"])
    assert not enc.alive()
    enc.close()


def test_close_stops_the_child() -> None:
    enc = SubprocessEncoder()
    assert enc.alive()
    enc.close()
    assert not enc.alive()
    with pytest.raises(RuntimeError, match="gone"):
        enc.encode(["after close"])


def test_a_model_that_cannot_load_fails_the_start_with_the_reason(tmp_path: object) -> None:
    with pytest.raises(RuntimeError, match="did not start: ") as info:
        SubprocessEncoder(str(tmp_path) + "/no-such-model")
    assert "no-such-model" in str(info.value)


def test_the_child_exits_when_its_parent_is_killed() -> None:
    code = "from memory.encoder_process import SubprocessEncoder; e = SubprocessEncoder(); print(e.pid, flush=True); input()"
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child, 0.2)
        parent.kill()  # SIGKILL: no chance to close anything
        parent.wait()
        assert gone(child, 10)
    finally:
        parent.kill()
        parent.wait()
        if child and not gone(child, 0):
            os.kill(child, signal.SIGKILL)
