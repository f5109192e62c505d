#!/usr/bin/env bash
# Runs the official-client conformance suite (testdata/conformance) against
# two demo-server nodes on the Redis Cluster (over websocket) and two on the
# Sentinel-watched master (over polling) that run.sh started, each named
# by -redis-url in its documented form (redis+cluster://, redis+sentinel://).
#
# Usage: testdata/redis-topologies/run.sh bash testdata/redis-topologies/conformance.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${REDIS_CLUSTER_ADDRS:?run me through testdata/redis-topologies/run.sh}"
: "${REDIS_SENTINEL_ADDRS:?run me through testdata/redis-topologies/run.sh}"

url_of() { # url_of SCHEME ADDRS [QUERY]: SCHEME://first?QUERY&addr=second&addr=…
  local scheme=$1 query=${3:-} first rest
  IFS=, read -r first rest <<<"$2"
  local url="$scheme://$first" sep="?"
  if [ -n "$query" ]; then url+="?$query"; sep="&"; fi
  local a
  for a in ${rest//,/ }; do url+="${sep}addr=$a"; sep="&"; done
  echo "$url"
}

cluster_url=$(url_of redis+cluster "$REDIS_CLUSTER_ADDRS")
sentinel_url=$(url_of redis+sentinel "$REDIS_SENTINEL_ADDRS" "master_name=${REDIS_SENTINEL_MASTER:-mymaster}")

echo "# conformance: two nodes on $cluster_url"
REDIS_URL=$cluster_url CONFORMANCE_NODES=2 bash testdata/conformance/run.sh websocket
echo "# conformance: two nodes on $sentinel_url"
REDIS_URL=$sentinel_url CONFORMANCE_NODES=2 bash testdata/conformance/run.sh polling
