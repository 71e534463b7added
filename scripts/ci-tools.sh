#!/usr/bin/env bash
# Installs what CI's tests need beyond the Rust toolchain, so .ci/run can do it in the
# background while it compiles: Debian's postgresql (the PostgreSQL tests) and syslog-ng with its
# http module (the real-pipeline test) in one apt-get run when missing, and the pinned Python
# tools (Schemathesis, openapi-python-client) in their venvs. Each part is skipped when already
# installed; a failure exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || packages+=(postgresql)
# syslog-ng with its http module: the real-pipeline test (tests/suite/pipeline_syslog_ng.rs).
ls /usr/lib/syslog-ng/*/libhttp.so >/dev/null 2>&1 || packages+=(syslog-ng-core syslog-ng-mod-http)
if [ "${#packages[@]}" -gt 0 ]; then
  echo "ci-tools: apt-get install ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi &
apt_pid=$!

bash scripts/schemathesis.sh --install-only &
st_pid=$!
bash tests/tooling/openapi_client_check.sh --install-only &
client_pid=$!

status=0
for pid in "$apt_pid" "$st_pid" "$client_pid"; do
  wait "$pid" || status=1
done
exit "$status"
