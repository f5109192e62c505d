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

# free_port prints a port that is free, and (for a cluster node, whose bus
# listens on port+10000) whose +10000 is free too; it never repeats one.
next_port=$((20000 + RANDOM % 20000))
free_port() {
  while :; do
    next_port=$((next_port + 1))
    [ "$next_port" -lt 55000 ] || next_port=20001
    local p=$next_port
    if ! in_use "$p" && ! in_use $((p + 10000)); then
      echo "$p"
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

start_server() { # start_server PORT [extra redis-server args…]
  local p=$1
  shift
  redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no \
    --daemonize yes --dir "$tmp" --pidfile "$tmp/$p.pid" --logfile "$tmp/$p.log" "$@"
  ports+=("$p")
  wait_for "redis-server on $p" redis-cli -h 127.0.0.1 -p "$p" ping
}

# The cluster.
cluster=()
for _ in 1 2 3; do
  p=$(free_port)
  start_server "$p" --cluster-enabled yes --cluster-config-file "$tmp/nodes-$p.conf" --cluster-node-timeout 5000
  cluster+=("127.0.0.1:$p")
done
redis-cli --cluster create "${cluster[@]}" --cluster-replicas 0 --cluster-yes >"$tmp/cluster-create.log"
cluster_ok() {
  for a in "${cluster[@]}"; do
    redis-cli -h 127.0.0.1 -p "${a##*:}" cluster info | grep -q '^cluster_state:ok' || return 1
  done
}
wait_for "cluster_state:ok" cluster_ok

# The master and its Sentinel.
master=$(free_port)
start_server "$master"
sentinel=$(free_port)
cat >"$tmp/sentinel.conf" <<CONF
port $sentinel
bind 127.0.0.1
daemonize yes
dir $tmp
pidfile $tmp/$sentinel.pid
logfile $tmp/$sentinel.log
sentinel monitor mymaster 127.0.0.1 $master 1
sentinel down-after-milliseconds mymaster 5000
CONF
redis-server "$tmp/sentinel.conf" --sentinel
ports+=("$sentinel")
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
