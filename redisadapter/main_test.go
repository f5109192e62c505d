package redisadapter_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/qaplatform/socketio/internal/redistest"
)

func TestMain(m *testing.M) {
	// v2's ClusterAdapter.BroadcastWithAck arms a cleanup timer for the
	// whole ack timeout and never stops it early; it ends on its own.
	// The Sentinel tests' failover clients resolve a placeholder address
	// (see redistest.IgnoreDNSLookups).
	goleak.VerifyTestMain(m, append(redistest.IgnoreDNSLookups(),
		goleak.IgnoreAnyFunction("github.com/zishang520/engine.io/v2/utils.SetTimeout.func1"))...)
}
