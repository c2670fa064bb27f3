"""A real Prometheus scraping the cluster's metrics port sees exactly the workload it was given."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.ray_head import RayHead, free_port

PROMETHEUS = "/usr/bin/prometheus"


@pytest.fixture
def prometheus(ray_head: RayHead, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus") or PROMETHEUS
    assert Path(binary).exists(), "prometheus is not installed (scripts/test.sh installs Debian's package)"
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: ray\n    static_configs: [{{targets: ['127.0.0.1:{ray_head.metrics_port}']}}]\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"{url}/-/ready"):
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def query(prom: str, expr: str) -> float:
    """The instant value of ``expr``; 0 when it has no series yet."""
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    r.raise_for_status()
    result = r.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def wait_value(prom: str, expr: str, expected: float, timeout_s: float = 120) -> float:
    deadline = time.monotonic() + timeout_s
    value = query(prom, expr)
    while value != expected and time.monotonic() < deadline:
        time.sleep(1)
        value = query(prom, expr)
    return value


CHATS_200 = 'sum(ray_agentserve_http_requests_total{route="/api/chat",status="200"})'
CHATS_422 = 'sum(ray_agentserve_http_requests_total{route="/api/chat",status="422"})'
TOOL_CALLS = 'sum(ray_agentserve_tool_calls_total{tool="calculator",outcome="ok"})'
LLM_CALLS = 'sum(ray_agentserve_llm_calls_total{model="scripted",outcome="ok"})'
SERVE_REQUESTS = 'sum(ray_serve_num_http_requests_total{application="agentserve"})'


def test_prometheus_counts_the_workload(deployed: str, prometheus: str) -> None:
    deadline = time.monotonic() + 60
    while query(prometheus, 'up{job="ray"}') != 1.0:
        assert time.monotonic() < deadline, "prometheus never scraped the cluster's metrics port"
        time.sleep(1)
    exprs = [CHATS_200, CHATS_422, TOOL_CALLS, LLM_CALLS]
    before = {e: query(prometheus, e) for e in exprs}

    with_tool, plain, invalid = 5, 3, 2
    with httpx.Client(base_url=deployed, timeout=60) as http:
        for i in range(with_tool):
            r = http.post("/api/chat", json={"message": f"calc: {i}*7"})
            assert r.status_code == 200 and r.json()["response"] == f"The result is {i * 7}."
        for i in range(plain):
            assert http.post("/api/chat", json={"message": f"hello {i}"}).status_code == 200
        for _ in range(invalid):
            assert http.post("/api/chat", json={"message": ""}).status_code == 422

    expected = {
        CHATS_200: before[CHATS_200] + with_tool + plain,
        CHATS_422: before[CHATS_422] + invalid,
        TOOL_CALLS: before[TOOL_CALLS] + with_tool,
        LLM_CALLS: before[LLM_CALLS] + 2 * with_tool + plain,  # a tool turn: call, result, answer
    }
    seen = {e: wait_value(prometheus, e, v) for e, v in expected.items()}
    print(f"[cluster] prometheus: before {before}, after {seen}")
    assert seen == expected
    # Serve's own per-application request counter comes through the same port.
    # NOTE: pushed on the proxy's own metrics interval, so it may trail ours by a scrape or two.
    at_least = f"{SERVE_REQUESTS} >= bool {with_tool + plain + invalid}"
    assert wait_value(prometheus, at_least, 1.0) == 1.0, query(prometheus, SERVE_REQUESTS)
