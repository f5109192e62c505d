#!/usr/bin/env bash
# Runs the Node interop tests of redisadapter against real Redis.
#
#   REDIS_URL=redis://127.0.0.1:6379/0 testdata/interop/run.sh
#
# from the root of the module. It installs the pinned npm packages
# (package-lock.json) and runs the Go tests whose names contain Interop.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund
cd ../..
: "${REDIS_URL:?set REDIS_URL, e.g. redis://127.0.0.1:6379/0}"
REDIS_URL="$REDIS_URL" go test -race -count=1 -run Interop ./redisadapter/
