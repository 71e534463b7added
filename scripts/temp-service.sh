# Sourced (not run) by scripts/schemathesis.sh and tests/tooling/openapi_client_check.sh, from the
# repository root: builds the debug binary ($BIN; or uses $NETSENTINEL_BIN when set, as .ci/run
# does with the binary `cargo test` just built), makes a temp dir ($TMP, removed on exit unless
# KEEP_TMP=1) and defines `start_service [serve flags...]`, which starts the service over
# $TMP/data on a free loopback port ($BASE, $SERVER_PID; log in $TMP/server.log) with the
# caller's environment, waits until it answers /healthz, and stops it on exit.

if [[ -n "${NETSENTINEL_BIN:-}" ]]; then
    BIN="$NETSENTINEL_BIN"
    echo "== using $BIN" >&2
else
    echo "== cargo build" >&2
    cargo build --quiet --bin netsentinel
    BIN="$(pwd)/target/debug/netsentinel"
fi

TMP="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ "${KEEP_TMP:-0}" != 1 ]]; then rm -rf "$TMP"; else echo "kept $TMP" >&2; fi
}
trap cleanup EXIT

start_service() {
    # A free loopback port: bind port 0, read it back, release it for the service.
    local port
    port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    BASE="http://127.0.0.1:$port"
    echo "== starting netsentinel on $BASE (data in $TMP/data)" >&2
    "$BIN" serve --addr "127.0.0.1:$port" --data-dir "$TMP/data" --log warn "$@" >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 300); do
        if curl -fsS "$BASE/healthz" >/dev/null 2>&1; then break; fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "netsentinel exited during start:" >&2; cat "$TMP/server.log" >&2; exit 1
        fi
        sleep 0.1
    done
    curl -fsS "$BASE/healthz" >/dev/null
}
