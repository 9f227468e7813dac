#!/usr/bin/env bash
# `make demo`: a whole sync against the local Constant Contact sandbox, no account needed.
# Starts the sandbox, ingests the bundled Flipcause payloads, shows the dry-run plan, runs
# the sync, and prints the contacts per list as the sandbox now holds them.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-0}"
dir="demo-state"
rm -rf "$dir" && mkdir -m 700 "$dir"

flipsync sandbox --port "$port" --seed flipsync/samples/sandbox-seed.yaml \
  --token-file "$dir/tokens.json" --activity-seconds 0.5 >"$dir/sandbox.out" 2>"$dir/sandbox.err" &
sandbox_pid=$!
trap 'kill "$sandbox_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  grep -q "listening on" "$dir/sandbox.out" 2>/dev/null && break
  kill -0 "$sandbox_pid" 2>/dev/null || { cat "$dir/sandbox.err" >&2; exit 1; }
  sleep 0.1
done
base_url="$(sed -n 's/^sandbox listening on //p' "$dir/sandbox.out")"
[ -n "$base_url" ] || { echo "sandbox did not start" >&2; exit 1; }
echo "== sandbox running at $base_url"

sed -e "s#@BASE_URL@#$base_url#g" scripts/demo-config.yaml >"$dir/flipsync.yaml"
export FLIPSYNC_CONFIG="$dir/flipsync.yaml"

echo; echo "== flipsync ingest flipsync/samples/webhooks.ndjson"
flipsync ingest flipsync/samples/webhooks.ndjson
echo; echo "== flipsync run --dry-run   (nothing is written)"
flipsync run --dry-run
echo; echo "== flipsync run"
flipsync run
echo; echo "== flipsync run   (again: nothing new, so no request at all)"
flipsync run
echo; echo "== contacts per list in the sandbox"
python scripts/sandbox_lists.py "$base_url"
echo; echo "== flipsync explain todd@example.org"
flipsync explain todd@example.org
