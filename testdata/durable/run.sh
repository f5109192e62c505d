#!/usr/bin/env bash
# Process-level test of the durable answer queue (issue 9 item 6): two
# qa-server nodes that answer nothing themselves (-workers 0) and three
# qa-worker processes share one Redis under a fresh key prefix; 40 clients
# of the official socket.io-client (durable.mjs) ask 1000 streamed
# questions over both nodes while one worker and then one node are
# SIGKILLed. Every task must end completed, answered once, with its chunks
# joining to the answer; a second phase stops every worker, asks 20
# questions that must stay pending, and starts a worker that answers them.
#
# Usage: testdata/durable/run.sh
# The node kill lands in a burst of 150 questions that node is taking:
# every question it acknowledged must be answered all the same.
# Environment: REDIS_URL (default redis://127.0.0.1:6379; a local Redis is
# started when that one is down); DURABLE_ARGS adds arguments to the
# driver (e.g. "--questions 200"; "--burst-sessions 0" kills the node on a
# timer instead of in a burst of questions it is taking; "--in-node" for a
# server without the queue: see durable.mjs); QA_SERVER_BIN / QA_WORKER_BIN use prebuilt
# binaries; DURABLE_RACE=1 builds them with -race (a race report fails the
# run). Needs node (>= 18), npm, go and redis-cli. Exits non-zero if any
# check failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
redis_url="${REDIS_URL:-redis://127.0.0.1:6379}"
# A fresh prefix per run: fresh queue, sessions and limits, and nothing of
# another run (or of the conformance suite) is touched.
prefix="durable:$$:$RANDOM:"

work="$(mktemp -d)"
pidfile="$work/pids"
: >"$pidfile"
cleanup() {
	# The driver stops its processes; this is for a driver that died.
	while read -r pid; do
		kill -KILL "$pid" 2>/dev/null || true
	done <"$pidfile"
	redis-cli -u "$redis_url" --scan --pattern "${prefix}*" 2>/dev/null |
		xargs -r -n 500 redis-cli -u "$redis_url" del >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! redis-cli -u "$redis_url" ping 2>/dev/null | grep -q PONG; then
	case "$redis_url" in
	redis://127.0.0.1:6379 | redis://127.0.0.1:6379/*)
		echo "# durable: starting redis-server on 127.0.0.1:6379"
		redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
		for _ in $(seq 1 50); do
			redis-cli -u "$redis_url" ping 2>/dev/null | grep -q PONG && break
			sleep 0.1
		done
		;;
	esac
fi
if ! redis-cli -u "$redis_url" ping 2>/dev/null | grep -q PONG; then
	echo "FAIL durable: Redis at $redis_url is not reachable"
	exit 1
fi

if [ ! -d "$here/node_modules/socket.io-client" ]; then
	echo "# durable: installing the pinned client (npm ci)"
	(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi

server_bin="${QA_SERVER_BIN:-}"
worker_bin="${QA_WORKER_BIN:-}"
if [ -z "$server_bin" ]; then
	echo "# durable: building ./cmd/qa-server"
	server_bin="$work/qa-server"
	(cd "$root" && go build ${DURABLE_RACE:+-race} -o "$server_bin" ./cmd/qa-server)
fi
if [ -z "$worker_bin" ] && [ -d "$root/cmd/qa-worker" ]; then
	echo "# durable: building ./cmd/qa-worker"
	worker_bin="$work/qa-worker"
	(cd "$root" && go build ${DURABLE_RACE:+-race} -o "$worker_bin" ./cmd/qa-worker)
fi

mkdir -p "$work/logs"
status=0
# shellcheck disable=SC2086 # DURABLE_ARGS is split on purpose
node "$here/durable.mjs" --server-bin "$server_bin" ${worker_bin:+--worker-bin "$worker_bin"} \
	--redis-url "$redis_url" --prefix "$prefix" --logs "$work/logs" --pidfile "$pidfile" \
	--kb "$root/internal/demokb/kb.json" ${DURABLE_ARGS:-} || status=1

for log in "$work"/logs/*.log; do
	[ -e "$log" ] || continue
	if grep -qE 'panic|fatal error:|DATA RACE' "$log"; then
		echo "FAIL process_log: $(basename "$log") shows a panic or race:"
		grep -E -A8 'panic|fatal error:|DATA RACE' "$log" | head -40
		status=1
	fi
done
if [ "$status" != 0 ]; then
	for log in "$work"/logs/*.log; do
		[ -e "$log" ] || continue
		echo "# durable: last lines of $(basename "$log"):"
		tail -n 25 "$log" | sed 's/^/#   /'
	done
fi
exit "$status"
