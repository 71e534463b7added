#!/usr/bin/env bash
# A/B of durable continuous ingest between binaries: scripts/bench-ingest.sh on the binary given,
# with the generated log kept between runs (/tmp/ingest-ab) and a fresh data directory per run.
# The stored windows' checksum it prints must be equal across binaries. Run binaries interleaved:
#
#   for i in 1 2; do scripts/ab-ingest.sh /tmp/ns-main; scripts/ab-ingest.sh target/release/netsentinel; done
#
# Env: as bench-ingest.sh (BATCH, LINES, PORT default 18191, PERF=FILE).
set -euo pipefail
BIN="$1" LOG_DIR="${LOG_DIR:-/tmp/ingest-ab}" PORT="${PORT:-18191}" \
    exec "$(dirname "$0")/bench-ingest.sh"
