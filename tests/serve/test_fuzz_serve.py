"""Fuzz every operation of the OpenAPI document against the deployed Serve app (schemathesis).

``tests/http/test_fuzz_openapi.py`` fuzzes the HTTP layer in-process; this run
sends the same kinds of cases over real HTTP through the Serve proxy to the
deployed application: the Ingress replica, the handles to the Agent,
ToolExecutor and Embedding deployments, the SQLite store and LanceDB. What may
only break there (a DTO that does not pickle across a handle, an error that
crosses a handle as something else, a proxy that answers in its own shape)
breaks here. The Serve tier runs with authentication disabled and rate limits
off (``tests/serve/conftest.py``). Every response must be:

- no server error (5xx),
- a status code the operation declares,
- in a content type declared for that status,
- valid against the schema declared for that status and content type.

Notes:
- The document is the one the deployed app serves: checked equal to the
  in-process build that the cases are generated from (collection needs it before
  the cluster starts).
- As in-process, half the cases are steered at what exists (a stored session, a
  memory, a tool, an admin API key made in the deployed app's SQLite store) and
  scripted-LLM commands are defused, so no case can hang the run.
- Few examples per operation (``MAX_EXAMPLES``): each case is a real request
  through the proxy and the replicas, on a 2-core machine.
- The proxy is Ray's bundled HAProxy, as ``agentserve run`` starts it. A request
  line plus headers longer than its buffer gets HAProxy's own HTML 400, not the
  app's JSON: Ray's default 16 KiB refused a generated ``q`` of 4-byte characters
  (12 bytes each percent-encoded), and a valid ``q`` (up to 2,000 characters) can
  need ~24 KB, so ``serve_app.cli`` sets ``RAY_SERVE_HAPROXY_TUNE_BUFSIZE`` to
  32 KiB, above the longest valid URL (``tests/serve/test_serve_mode.py`` sends
  it). Cases are not shortened.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis

from memory.factory import build_conversation_store
from serve_app.auth.api_keys import create_api_key
from tests.http.fuzz_support import CHECKS, FUZZ_SETTINGS, SEEDED, defuse, seed_through, steer_half_the_cases
from tests.http.test_fuzz_openapi import build_app

pytestmark = pytest.mark.serve

MAX_EXAMPLES = 8
TIMEOUT_S = 30.0

# Generated from the in-process build, as the deployed app builds it (``create_app``); asserted equal below.
LOCAL_DOCUMENT: dict[str, Any] = build_app("http://127.0.0.1:9/v1").openapi()
schema = schemathesis.openapi.from_dict(LOCAL_DOCUMENT)


async def _make_admin_key(data_dir: str) -> tuple[str, str]:
    """An admin key and a spare key's id, in the deployed app's store (as ``agentserve keys create`` does)."""
    store = build_conversation_store(None, data_dir)
    await store.setup()
    try:
        admin = await create_api_key(store, "fuzz-admin", "fuzz", ["admin"])
        spare = await create_api_key(store, "fuzz-admin", "revoked by the fuzzer", ["chat"])
    finally:
        await store.close()
    return admin.key, spare.record.id


@pytest.fixture(scope="module")
def served(deployed_app: str, data_dir: str) -> str:
    """The deployed app's URL, with sessions, a memory and API keys to find."""
    admin_key, spare_key_id = asyncio.run(_make_admin_key(data_dir))
    SEEDED.update(admin_key=admin_key, spare_key_id=spare_key_id, session="ses_sfuzz", spare_session="ses_sfuzz_delete")
    with httpx.Client(base_url=deployed_app, timeout=60) as c:
        seed_through(c)
    return deployed_app


def _differences(a: Any, b: Any, at: str = "") -> list[str]:
    """Where two JSON documents differ, as paths (the assertion message names them)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(a.keys() | b.keys()) for d in _differences(a.get(k), b.get(k), f"{at}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{at}/{i}")]
    return [] if a == b else [f"{at}: {a!r} != {b!r}"]


def test_the_deployed_app_serves_the_fuzzed_document(served: str) -> None:
    r = httpx.get(f"{served}/openapi.json", timeout=30)
    assert r.status_code == 200
    assert _differences(r.json(), LOCAL_DOCUMENT) == []


steer_half_the_cases(schema)


@schema.parametrize()
@hypothesis.settings(FUZZ_SETTINGS, max_examples=MAX_EXAMPLES)
def test_every_operation_answers_as_documented_when_deployed(case: schemathesis.Case, served: str) -> None:
    defuse(case)
    case.call_and_validate(checks=CHECKS, base_url=served, timeout=TIMEOUT_S)
