#!/usr/bin/env bash
# Runs the official-client conformance suite (conformance.mjs) against the
# demo server cmd/qa-server, once over websocket and once over polling.
#
# Each transport gets a fresh server process on a free loopback port, so
# that the per-address question budget (60/min) and connection count start
# from zero: the suite expects the default limits and spends that budget
# on purpose. The only non-default setting is QA_ANSWER_DELAY=30ms, which
# keeps streamed answers unfinished long enough to cancel them and to hold
# three tasks open.
#
# Usage: testdata/conformance/run.sh [transport...]   (default: websocket polling)
# Environment: CONFORMANCE_ARGS adds arguments to every suite run (e.g.
# "--only history"); QA_SERVER_BIN uses a prebuilt server binary;
# CONFORMANCE_RACE=1 builds the server with -race (a race report fails the run);
# CONFORMANCE_NODES=N (N > 1, needs REDIS_URL) starts N servers sharing one
# Redis as one cluster and spreads the suite's clients over them.
# Needs node (>= 18), npm and go. Exits non-zero if any check failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
transports=("$@")
[ ${#transports[@]} -gt 0 ] || transports=(websocket polling)

work="$(mktemp -d)"
nodes="${CONFORMANCE_NODES:-1}"
if [ "$nodes" -gt 1 ] && [ -z "${REDIS_URL:-}" ]; then
	echo "# conformance: CONFORMANCE_NODES=$nodes needs REDIS_URL (the nodes share one Redis)" >&2
	exit 2
fi
pids=()
cleanup() {
	stop_servers
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ ! -d "$here/node_modules/socket.io-client" ]; then
	echo "# conformance: installing the pinned client (npm ci)"
	(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

bin="${QA_SERVER_BIN:-}"
if [ -z "$bin" ]; then
	echo "# conformance: building ./cmd/qa-server"
	bin="$work/qa-server"
	# CONFORMANCE_RACE=1 builds the server with the race detector.
	(cd "$root" && go build ${CONFORMANCE_RACE:+-race} -o "$bin" ./cmd/qa-server)
fi

# start_server starts one node logging to $1 and appends its URL to urls.
# All nodes of a run share run_prefix: with REDIS_URL set the server keeps
# its state in Redis, and a fresh key prefix per run gives each run fresh
# limits, as a fresh process does without Redis.
start_server() {
	local log="$1"
	# Port 0: the kernel picks a free port; the server logs the address.
	QA_REDIS_PREFIX="$run_prefix" QA_CLUSTER_KEY="${run_prefix}socket.io" QA_ANSWER_DELAY=30ms "$bin" -addr 127.0.0.1:0 -log-level info >"$log" 2>&1 &
	local pid=$!
	pids+=("$pid")
	local url=""
	for _ in $(seq 1 200); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "# conformance: the server exited early:" >&2
			cat "$log" >&2
			return 1
		fi
		url="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -n 1 || true)"
		if [ -n "$url" ] && node -e 'fetch(process.argv[1]).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))' "$url/healthz"; then
			urls+=("$url")
			return 0
		fi
		sleep 0.1
	done
	echo "# conformance: the server did not come up within 20 s:" >&2
	cat "$log" >&2
	return 1
}

stop_servers() {
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	pids=()
}

# servers_alive reports the nodes that died during the run.
servers_alive() {
	local ok=0
	for pid in "${pids[@]}"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" 2>/dev/null && rc=0 || rc=$?
			echo "FAIL server_alive: a qa-server node exited during the run (status $rc)"
			ok=1
		fi
	done
	return $ok
}

total_pass=0
total_fail=0
status=0
for transport in "${transports[@]}"; do
	run_prefix="conformance:$$:$RANDOM:"
	urls=()
	started=1
	for n in $(seq 1 "$nodes"); do
		if ! start_server "$work/server-$transport-$n.log"; then
			started=0
			break
		fi
	done
	if [ "$started" = 0 ]; then
		echo "FAIL conformance_$transport: qa-server did not start"
		total_fail=$((total_fail + 1))
		status=1
		stop_servers
		continue
	fi
	url_list="$(IFS=,; echo "${urls[*]}")"
	echo "# conformance: $transport against $url_list"
	out="$work/out-$transport.txt"
	run_failed=0
	# shellcheck disable=SC2086 # CONFORMANCE_ARGS is split on purpose
	if ! node "$here/conformance.mjs" --url "$url_list" --transport "$transport" ${CONFORMANCE_ARGS:-} | tee "$out"; then
		run_failed=1
	fi
	if ! servers_alive; then
		echo "0 passed, 1 failed" >>"$out"
		run_failed=1
	fi
	counts="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" || true)"
	if [ -n "$counts" ]; then
		while read -r p _ f _; do
			total_pass=$((total_pass + p))
			total_fail=$((total_fail + f))
		done <<<"$counts"
	else
		total_fail=$((total_fail + 1))
		run_failed=1
	fi
	stop_servers
	for log in "$work"/server-"$transport"-*.log; do
		if [ "$run_failed" = 1 ]; then
			status=1
			echo "# conformance: last lines of $(basename "$log"):"
			tail -n 40 "$log" | sed 's/^/#   /'
		fi
		if grep -qE 'panic|fatal error:|DATA RACE' "$log"; then
			echo "FAIL server_log_$transport: $(basename "$log") shows a panic or race:"
			grep -E -A5 'panic|fatal error:|DATA RACE' "$log" | head -40
			total_fail=$((total_fail + 1))
			status=1
		fi
	done
done

echo "${total_pass} passed, ${total_fail} failed"
exit "$status"
