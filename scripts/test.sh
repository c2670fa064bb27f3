#!/usr/bin/env bash
# The test command (`make test`, and CI's .ci/run): lint, types, import contracts,
# then the tiers: fast (no Ray, no servers), contract (the stores on the real
# SQLite, PostgreSQL, Redis and LanceDB), serve (one Ray cluster) with the
# bundled-model tests.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export RAY_USAGE_STATS_ENABLED=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# PostgreSQL and Redis: start them where they are down; under CI, fail loudly if still unreachable.
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
if ! pg_up && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! redis_up && command -v redis-server >/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi
for _ in $(seq 1 20); do pg_up && redis_up && break; sleep 0.5; done
if [ -n "${CI:-}" ]; then
  pg_up || { echo "FATAL: PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
  redis_up || { echo "FATAL: Redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }
fi

# Real peers some tests run (Debian packages): nginx in front of the app, Prometheus scraping Ray.
need_pkgs=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
command -v prometheus >/dev/null || need_pkgs+=(prometheus)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "==> installing ${need_pkgs[*]} (Debian)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null \
    || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null; }
fi

echo "==> ruff";        $BIN/ruff check . && $BIN/ruff format --check .
echo "==> mypy";        $BIN/mypy
echo "==> lint-imports"; $BIN/lint-imports
PYTEST="$BIN/pytest -q -p no:cacheprovider"
echo "==> fast tier";     $PYTEST tests/unit tests/http -m "not localmodel"
echo "==> contract tier"; $PYTEST tests/contract
echo "==> serve tier";    $PYTEST tests/serve tests/unit -m "serve or localmodel"
echo "==> cluster tier";  $PYTEST tests/cluster
