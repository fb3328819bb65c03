#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite against real local servers.
set -euo pipefail
cd "$(dirname "$0")/.."

# The tests start their own Redis and PostgreSQL (tests/servers.py): install the Debian
# packages when one is missing (nothing is done, and nothing printed, when all are there).
has_postgres() {
    command -v initdb >/dev/null && command -v postgres >/dev/null && return 0
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && return 0
    done
    return 1
}
missing=()
command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
has_postgres || missing+=(postgresql)
# promtool checks deploy/prometheus/alerts.yml; the dashboard is tested in headless Chromium.
command -v promtool >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} for the tests" >&2
    sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq)
    "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || { "${apt[@]}" update >/dev/null && "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi

bash scripts/setup.sh test
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest "$@"
