#!/usr/bin/env bash
# Generates a Python client from openapi/openapi.json with openapi-python-client (pinned in
# tests/tooling/requirements-openapi-client.txt) and uses it against the running service:
# samples, fit on a CSV body (plain and gzip'd), score, evaluate, alerts, SIEM exports as text,
# the chart as bytes (tests/tooling/openapi_client_check.py). Fails when the generator warns about
# anything but the request bodies it cannot send (NDJSON and Zeek; see the config file), or when
# a call raises or parses an answer wrongly. Run by .ci/run; it never skips.
#
# Usage: tests/tooling/openapi_client_check.sh      (from anywhere; builds the debug binary)
# Env:   NS_OPENAPI_CLIENT_VENV (default /tmp/ns-openapi-client), KEEP_TMP=1 keeps the client,
#        the data dir and the server log.
set -euo pipefail

cd "$(dirname "$0")/../.."
TOOLING="$(pwd)/tests/tooling"
REQUIREMENTS="$TOOLING/requirements-openapi-client.txt"
VENV="${NS_OPENAPI_CLIENT_VENV:-/tmp/ns-openapi-client}"
PINNED="$(grep -E '^openapi-python-client==' "$REQUIREMENTS" | cut -d= -f3)"

if [[ ! -x "$VENV/bin/openapi-python-client" ]] || [[ "$("$VENV/bin/openapi-python-client" --version 2>/dev/null)" != *"$PINNED"* ]]; then
    echo "== installing openapi-python-client $PINNED into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
fi
[ "${1:-}" = "--install-only" ] && exit 0

# shellcheck source=../../scripts/temp-service.sh
source scripts/temp-service.sh

echo "== generating the client" >&2
# The generator runs ruff on what it wrote: from the venv.
ROOT="$(pwd)"
(cd "$TMP" && PATH="$VENV/bin:$PATH" openapi-python-client generate \
    --path "$ROOT/openapi/openapi.json" --meta none \
    --config "$TOOLING/openapi-python-client.yaml" >"$TMP/generate.log" 2>&1) || {
    cat "$TMP/generate.log" >&2; echo "openapi-python-client failed" >&2; exit 1; }
# Every warning names what it is about on the line after `WARNING ...`: only request bodies the
# generator cannot send may be skipped. `ingest` takes Zeek bodies only, so the generator skips
# the whole operation; clients post it with the httpx client as they post Zeek bodies to score.
unexpected="$(grep -A2 '^WARNING' "$TMP/generate.log" | grep -vE '^(WARNING parsing POST /v1/(detectors/\{name\}/)?(score|evaluate|model/fit|ingest) within .*|Unsupported content type (application/x-ndjson|application/x-zeek-json|text/zeek-tsv)|--|)$' || true)"
if [[ -n "$unexpected" ]]; then
    cat "$TMP/generate.log" >&2
    echo "openapi client check: the generator warned about more than the NDJSON and Zeek bodies:" >&2
    echo "$unexpected" >&2
    exit 1
fi
test -d "$TMP/netsentinel_client"

KEY="openapi-client-check-admin-key"
export NETSENTINEL_API_KEYS="admin:$KEY"
start_service

echo "== calling the service through the generated client" >&2
NS_BASE_URL="$BASE" NS_API_KEY="$KEY" PYTHONPATH="$TMP" "$VENV/bin/python" "$TOOLING/openapi_client_check.py"
