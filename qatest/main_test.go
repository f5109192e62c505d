package qatest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/qaplatform/socketio/qatest"
)

// TestMain fails the run if any test or example leaves a goroutine behind:
// the harness's, its clients' or the service's; only zishang520's own
// timers are ignored (see the package doc).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(qatest.EngineTimerFunction))
}
