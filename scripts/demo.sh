#!/usr/bin/env bash
# `make demo`: a whole sync against the local Constant Contact sandbox, no account needed.
# Starts the sandbox, ingests the bundled Flipcause payloads, shows the dry-run plan, runs
# the sync, and prints the contacts per list as the sandbox now holds them. Then the go-live
# clean-up: a test supporter is synced and removed again, while the real one stays.
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-0}"
# A taken port (another demo, another service) is no reason to fail: let the sandbox pick one.
if [ "$port" != 0 ] && ! python -c 'import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
  echo "== port $port is taken; the sandbox picks a free one"
  port=0
fi
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

echo; echo "== a test supporter arrives (like the README's receiver check) and is synced"
printf '%s\n' '{"webhook_record_id": "demo-test-1", "webhook_trigger_type": "new_activity", "activity_type": "Donation", "transaction_id": "demo-t1", "PD_first_name": "Todd", "PD_last_name": "Trial", "PD_email": "todd+test@example.org", "DD_amount": "1.00"}' \
  | flipsync ingest -
flipsync run
echo; echo "== flipsync cleanup-test-contacts   (test_records.email_matches: *+test@example.org; only reads)"
flipsync cleanup-test-contacts
echo; echo "== flipsync cleanup-test-contacts --apply"
flipsync cleanup-test-contacts --apply
echo; echo "== the sandbox now: todd+test@example.org is deleted, todd@example.org stays"
python scripts/sandbox_lists.py "$base_url" | grep -E '^all contacts|todd'
echo; echo "== flipsync backfill --since 2000-01-01   (the marked test record is skipped: never sent again)"
flipsync backfill --since 2000-01-01
echo; echo "== flipsync explain todd+test@example.org"
flipsync explain todd+test@example.org
