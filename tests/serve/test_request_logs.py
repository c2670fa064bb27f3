"""The request log line as an operator reads it: Serve's JSON replica log, one object per line.

The Serve tier logs like ``configs/production.yaml`` (``encoding: JSON``, access
log off), so the Ingress replica's log file holds the app's request line with
every field as a JSON key, plus what Serve adds (deployment, replica, request id).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.serve


def serve_logs(pattern: str = "*.log") -> dict[Path, str]:
    """This cluster's Serve log files (replicas, proxy, controller) and their text."""
    from ray.serve._private.logging_utils import get_serve_logs_dir

    return {path: path.read_text(errors="replace") for path in Path(get_serve_logs_dir()).glob(pattern)}


def request_lines(request_id: str) -> list[dict[str, Any]]:
    """The app's request lines (they carry ``latency_ms``) for ``request_id``, parsed."""
    found = []
    for text in serve_logs("replica_*Ingress*.log").values():
        for line in text.splitlines():
            if request_id not in line:
                continue
            record = json.loads(line)  # every line is JSON: a TEXT line would fail here
            if "latency_ms" in record:
                found.append(record)
    return found


def wait_for_line(request_id: str) -> dict[str, Any]:
    lines: list[dict[str, Any]] = []
    for _ in range(200):  # written as the response ends, maybe just after the client has it
        lines = request_lines(request_id)
        if lines:
            break
        time.sleep(0.1)
    assert len(lines) == 1, lines
    return lines[0]


def test_one_json_line_per_request_with_who_what_and_how_long(deployed_app: str) -> None:
    rid, secret = f"log-{uuid.uuid4().hex}", f"not-a-real-token-{uuid.uuid4().hex}"
    words = f"remember the teal walrus {uuid.uuid4().hex[:8]}"
    # The development principal from X-User-ID; the bearer token is ignored (auth is disabled here).
    headers = {"X-Request-ID": rid, "X-User-ID": "dora", "Authorization": f"Bearer {secret}"}
    r = httpx.post(f"{deployed_app}/api/chat", json={"message": words}, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers.get_list("x-request-id") == [rid]

    line = wait_for_line(rid)
    assert line["request_id"] == rid
    assert (line["method"], line["route"], line["status"]) == ("POST", "/api/chat", 200)
    assert line["principal_id"] == "dora" and line["session_id"] == r.json()["session_id"]
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] > 0
    assert line["levelname"] == "INFO" and line["deployment"].endswith("Ingress")
    # Never the credential, and no message contents at INFO by default.
    everything = "\n".join(serve_logs().values())
    assert secret not in everything
    assert words not in everything and r.json()["response"] not in json.dumps(line)


def test_an_error_is_logged_with_its_status_and_route_template(deployed_app: str) -> None:
    rid = f"log-{uuid.uuid4().hex}"
    r = httpx.get(f"{deployed_app}/api/sessions/no-such-session", headers={"X-Request-ID": rid, "X-User-ID": "dora"})
    assert r.status_code == 404 and r.json()["error"]["request_id"] == rid
    line = wait_for_line(rid)
    assert line["status"] == 404 and line["route"] == "/api/sessions/{session_id}"
    assert line["session_id"] == "no-such-session"
