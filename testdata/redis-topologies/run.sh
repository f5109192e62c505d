#!/usr/bin/env bash
# Starts the Redis deployments the topology tests need besides a single
# server, on free loopback ports, runs a command with their addresses in
# the environment, and stops them (also on failure or interrupt):
#
#   - a Redis Cluster of three masters (no replicas):
#     REDIS_CLUSTER_ADDRS=127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
#   - a master watched by one Sentinel (redis-server --sentinel):
#     REDIS_SENTINEL_ADDRS=127.0.0.1:S, REDIS_SENTINEL_MASTER=mymaster
#
# Nothing is kept on disk but a temporary directory, removed at the end.
#
# Usage: testdata/redis-topologies/run.sh [command [args…]]
# Without a command it runs the tests that use these deployments (see
# internal/redistest) with -race.
set -euo pipefail
cd "$(dirname "$0")/../.."

for tool in redis-server redis-cli; do
  command -v "$tool" >/dev/null || { echo "redis-topologies: $tool is not installed" >&2; exit 1; }
done

tmp=$(mktemp -d)
ports=()
cleanup() {
  for p in "${ports[@]}"; do
    redis-cli -h 127.0.0.1 -p "$p" shutdown nosave >/dev/null 2>&1 || true
  done
  # Wait for the servers to be gone before removing their directory.
  for f in "$tmp"/*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    for _ in $(seq 1 50); do
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  done
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

# in_use reports whether something listens on 127.0.0.1:$1.
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Ports are taken below the kernel's ephemeral range, where outgoing
# connections (of tests running meanwhile) would make a bind fail, with
# the cluster bus's port+10000 below it too.
ephemeral_low=32768
if [ -r /proc/sys/net/ipv4/ip_local_port_range ]; then
  read -r ephemeral_low _ </proc/sys/net/ipv4/ip_local_port_range
fi
port_low=1100
port_high=$((ephemeral_low - 10001))
if [ "$port_high" -le "$port_low" ]; then
  echo "redis-topologies: no free port range below the ephemeral ports ($ephemeral_low)" >&2
  exit 1
fi
next_port=$((port_low + RANDOM % (port_high - port_low)))

# free_port sets port to one that nothing listens on, whose +10000 (a
# cluster node's bus) is free too; it never repeats one.
free_port() {
  while :; do
    next_port=$((next_port + 1))
    [ "$next_port" -le "$port_high" ] || next_port=$port_low
    if ! in_use "$next_port" && ! in_use $((next_port + 10000)); then
      port=$next_port
      return
    fi
  done
}

wait_for() { # wait_for DESCRIPTION COMMAND…: up to 10 s
  local what=$1
  shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "redis-topologies: timed out waiting for $what" >&2
  return 1
}

# start_server [--config FILE] [redis-server args…] starts a server (with
# FILE as its config file, which redis-server wants first) on a free port,
# which it leaves in port (the args may name it as PORT). A port that turns
# out to be taken after all is given up for the next one, up to 5 times.
start_server() {
  local attempt arg args conf=()
  if [ "${1:-}" = --config ]; then
    conf=("$2")
    shift 2
  fi
  for attempt in 1 2 3 4 5; do
    free_port
    args=()
    for arg in "$@"; do args+=("${arg//PORT/$port}"); done
    rm -f "$tmp/$port.log"
    redis-server "${conf[@]}" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --daemonize yes --dir "$tmp" --pidfile "$tmp/$port.pid" --logfile "$tmp/$port.log" "${args[@]}" || true
    for _ in $(seq 1 50); do
      if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
        ports+=("$port")
        return 0
      fi
      sleep 0.1
    done
    echo "redis-topologies: redis-server did not start on $port (attempt $attempt):" >&2
    tail -n 5 "$tmp/$port.log" >&2 2>/dev/null || true
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
  done
  return 1
}

# The cluster.
cluster=()
for _ in 1 2 3; do
  start_server --cluster-enabled yes --cluster-config-file "$tmp/nodes-PORT.conf" --cluster-node-timeout 5000
  cluster+=("127.0.0.1:$port")
done
redis-cli --cluster create "${cluster[@]}" --cluster-replicas 0 --cluster-yes >"$tmp/cluster-create.log"
cluster_ok() {
  for a in "${cluster[@]}"; do
    redis-cli -h 127.0.0.1 -p "${a##*:}" cluster info | grep -q '^cluster_state:ok' || return 1
  done
}
wait_for "cluster_state:ok" cluster_ok

# The master and its Sentinel (redis-server --sentinel with a config file
# of its own, which the Sentinel rewrites).
start_server
master=$port
printf 'sentinel monitor mymaster 127.0.0.1 %s 1\nsentinel down-after-milliseconds mymaster 5000\n' "$master" >"$tmp/sentinel.conf"
start_server --config "$tmp/sentinel.conf" --sentinel
sentinel=$port
sentinel_ok() {
  redis-cli -h 127.0.0.1 -p "$sentinel" sentinel get-master-addr-by-name mymaster | grep -q "^$master\$"
}
wait_for "the sentinel to know mymaster" sentinel_ok

REDIS_CLUSTER_ADDRS=$(IFS=,; echo "${cluster[*]}")
export REDIS_CLUSTER_ADDRS
export REDIS_SENTINEL_ADDRS="127.0.0.1:$sentinel"
export REDIS_SENTINEL_MASTER=mymaster
echo "redis-topologies: cluster $REDIS_CLUSTER_ADDRS; sentinel $REDIS_SENTINEL_ADDRS (master 127.0.0.1:$master)"

if [ $# -gt 0 ]; then
  "$@"
else
  go test -race -count=1 -run 'Topolog|TestRedisAuth|Cluster|Sentinel' . ./redisadapter/ ./cmd/qa-server/
fi
