package redisadapter_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// v2's ClusterAdapter.BroadcastWithAck arms a cleanup timer for the
	// whole ack timeout and never stops it early; it ends on its own.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/zishang520/engine.io/v2/utils.SetTimeout.func1"))
}
