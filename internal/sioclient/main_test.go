package sioclient

import (
	"testing"

	"go.uber.org/goleak"
)

// serverTimer is the goroutine behind every zishang520 timer. The server
// leaves one running after some closes (polling: a close it started while no
// GET was pending keeps a 30s timer for a GET that never comes), so it is
// ignored; the client uses no such timer.
const serverTimer = "github.com/zishang520/engine.io/v2/utils.SetTimeout.func1"

// TestMain fails the run if any test leaves a goroutine behind, the server's
// included, but for serverTimer.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(serverTimer))
}
