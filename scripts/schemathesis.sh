#!/usr/bin/env bash
# Runs schemathesis against a real `tsbackup serve` started here with a throwaway config (a new
# local repository, a state file, two databases on a port where nothing listens so queued jobs
# fail fast, an operator and an owner token). Bounded: at most N examples per operation
# (SCHEMATHESIS_EXAMPLES, default 25) and a time limit (SCHEMATHESIS_TIMEOUT seconds, default
# 300). Fails if any response is a 5xx or does not match /openapi.json.
#   usage: scripts/schemathesis.sh [path/to/tsbackup]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-.build/debug/tsbackup}
EXAMPLES=${SCHEMATHESIS_EXAMPLES:-25}
LIMIT=${SCHEMATHESIS_TIMEOUT:-300}
command -v schemathesis >/dev/null || { echo "schemathesis.sh: schemathesis is not installed (scripts/setup.sh installs it)" >&2; exit 1; }

work=$(mktemp -d /tmp/tsbackup-schemathesis.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
dead_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
operator_token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
owner_token=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
operator_hash=$(printf '%s' "$operator_token" | "$BIN" serve hash-token)
owner_hash=$(printf '%s' "$owner_token" | "$BIN" serve hash-token)

cat > "$work/serve.yaml" <<YAML
listen: {host: 127.0.0.1, port: $port}
repository: {url: $work/repo}
state_file: $work/state.sqlite
rehearsal_targets:
  scratch: {host: 127.0.0.1, port: $dead_port, user: postgres}
databases:
  metrics: {host: 127.0.0.1, port: $dead_port, user: backup, dbname: metrics, schedule: {cron: "0 3 * * *"}, retention: {keep_last: 3}, rehearsal: {target: scratch}}
  other: {host: 127.0.0.1, port: $dead_port, user: backup, dbname: other}
tokens:
  - {name: ops, sha256: $operator_hash, role: operator}
  - {name: owner, sha256: $owner_hash, role: owner, databases: [metrics]}
YAML

"$BIN" serve --config "$work/serve.yaml" > "$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then break; fi
  kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log" >&2; echo "schemathesis.sh: the service did not start" >&2; exit 1; }
  sleep 0.3
done

status=0
for token in "$operator_token" "$owner_token"; do
  timeout "$LIMIT" schemathesis --no-color run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-examples "$EXAMPLES" --request-timeout 20 --workers 1 \
    --suppress-health-check all || status=$?
  [ "$status" -eq 0 ] || break
done
if grep -q "request failed" "$work/serve.log"; then
  echo "schemathesis.sh: the service logged a failed request:" >&2
  grep "request failed" "$work/serve.log" >&2
  status=1
fi
exit "$status"
