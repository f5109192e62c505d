package socketio_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/zishang520/socket.io/v2/socket"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio/internal/redistest"
)

// childEnv names the bare-server mode a re-executed test binary runs in;
// see runChild.
const childEnv = "SOCKETIO_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		runChild(mode)
		return
	}
	if spec := os.Getenv(workerChildEnv); spec != "" {
		runWorkerChild(spec)
		return
	}
	// v2.5.0 arms timers of its own (a socket.io client's connect timeout,
	// an engine's close timeout) in goroutines that end when the timer
	// fires or is cleared; one may still be pending when the last test
	// ends. The library never calls utils.SetTimeout itself, so ignoring
	// exactly that function hides none of its goroutines.
	// The Sentinel tests' failover clients resolve a placeholder address
	// (see redistest.IgnoreDNSLookups).
	goleak.VerifyTestMain(m, append(redistest.IgnoreDNSLookups(),
		goleak.IgnoreTopFunction("github.com/zishang520/engine.io/v2/utils.SetTimeout.func1"))...)
}

// runChild serves a bare v2 server (no library) in this process, prints its
// URL and serves until killed. Tests run it to show defects of v2.5.0 that
// take the whole process down.
func runChild(mode string) {
	io := socket.NewServer(nil, nil)
	io.On("connection", func(args ...any) {
		s := args[0].(*socket.Socket)
		if mode == "listener-panic" {
			s.On("boom", func(...any) { panic("a bug in a listener") })
		}
		s.On("ping", func(args ...any) {
			if ack, ok := args[len(args)-1].(socket.Ack); ok {
				ack([]any{"pong"}, nil)
			}
		})
	})
	mux := http.NewServeMux()
	mux.Handle("/socket.io/", io.ServeHandler(nil))
	hs := httptest.NewServer(mux)
	fmt.Printf("URL=%s\n", hs.URL)
	select {}
}
