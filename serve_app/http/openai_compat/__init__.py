"""The OpenAI-compatible API: ``GET /v1/models`` and ``POST /v1/chat/completions``.

``protocol`` holds the wire models, ``router`` the thin routes, ``serving``
the mapping onto agent turns. Nothing is imported here, so that
``serve_app.http.errors`` can use ``protocol`` without an import cycle.
"""
