"""The scripted OpenAI-compatible LLM with the knobs the goal benchmarks need.

``serve_app.scripted_llm`` with its ``slow: <n>`` rule's token delay settable,
so one server answers both a zero-latency tool turn (``calc: 17*23``) and a
slow streamed reply (``slow: 20`` = 20 tokens, ``--slow-token-delay-s`` apart).
uvloop and httptools, no access log, no cyclic garbage collector: it must cost both
stacks as little as it can, and stall neither.

    python -m bench.llm --port 8100 --slow-token-delay-s 0.01
"""

from __future__ import annotations

import argparse
import gc

import uvicorn

from serve_app.scripted_llm import SERVER_OPTIONS, ScriptedLLMConfig, create_scripted_llm_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--latency-s", type=float, default=0.0, help="before the first byte of every call")
    parser.add_argument("--slow-token-delay-s", type=float, default=0.01, help="between the tokens of `slow: <n>`")
    a = parser.parse_args()
    cfg = ScriptedLLMConfig(latency_s=a.latency_s, slow_token_delay_s=a.slow_token_delay_s)
    # NOTE: it stands in for a remote LLM, whose pauses would not stop our processes. Its
    # collector's full passes took 40-116 ms with 1,000 streams open and delayed every token
    # due meanwhile: the few first tokens they hit decided goal 3's p99 in whichever run they
    # fell (the LLM's own, the baseline's or Serve's). It makes no cyclic garbage: 9,000
    # streamed calls grew it by the same 27 MB (its request log) with the collector off as
    # on (docs/benchmarks.md, "Eighth session").
    gc.disable()
    uvicorn.run(
        create_scripted_llm_app(cfg),
        host=a.host,
        port=a.port,
        loop="uvloop",
        http="httptools",
        backlog=4096,
        **SERVER_OPTIONS,
    )


if __name__ == "__main__":
    main()
