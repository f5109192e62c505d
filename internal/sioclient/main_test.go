package sioclient

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind, the server's
// included.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
