package socketio

// This file and conn.go are the seam to github.com/zishang520/socket.io/v2:
// the rest of the package does not import it.

import (
	"errors"
	"net/http"
	"reflect"
	"sync"
	"unsafe"

	"github.com/zishang520/socket.io-go-parser/v2/parser"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio/internal/seqparser"
)

// seamMu serialises the few calls into v2 that are not safe for concurrent
// use (installing the parser, creating the engine).
var seamMu sync.Mutex

// installParser makes sio decode with a seqparser.Parser (see that package
// for the v2.5.0 defects it shields from) and returns it. v2.5.0 reads its
// parser from an unexported field when each connection starts and offers no
// setter once the server exists, so the field is replaced in place; the
// module is pinned at v2.5.0 and a test checks the field is still there.
// Connections made before Register keep the parser they started with.
func installParser(sio *socket.Server) (*seqparser.Parser, error) {
	seamMu.Lock()
	defer seamMu.Unlock()
	field := reflect.ValueOf(sio).Elem().FieldByName("_parser")
	want := reflect.TypeOf((*parser.Parser)(nil)).Elem()
	if !field.IsValid() || field.Type() != want {
		return nil, errors.New("socketio: Register: unsupported github.com/zishang520/socket.io/v2 version (no parser field)")
	}
	field = reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem()
	current, _ := field.Interface().(parser.Parser)
	if p, ok := current.(*seqparser.Parser); ok {
		return p, nil
	}
	p := seqparser.New(current)
	field.Set(reflect.ValueOf(parser.Parser(p)))
	return p, nil
}

// defaultMaxHTTPBody is Engine.IO's default maxHttpBufferSize.
const defaultMaxHTTPBody = 1_000_000

// Handler returns the HTTP handler of the Socket.IO endpoint (mount it at
// the server's path, "/socket.io/" by default). It is sio.ServeHandler with
// protections v2.5.0 lacks: the polling transport's body limit is enforced
// on the bytes actually read, not on the Content-Length the client claims,
// and a panic while serving one request is recovered and logged. Every call
// returns the same handler, backed by one engine.
func (s *Server) Handler() http.Handler {
	seamMu.Lock()
	defer seamMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handler != nil {
		return s.handler
	}
	engine := s.sio.ServeHandler(nil)
	limit := int64(defaultMaxHTTPBody)
	if eng := s.sio.Engine(); eng != nil {
		if n := eng.Opts().MaxHttpBufferSize(); n > 0 {
			limit = n
		}
	}
	s.handler = &httpGuard{next: engine, maxBody: limit, srv: s}
	return s.handler
}

// httpGuard protects the engine's HTTP handler.
type httpGuard struct {
	next    http.Handler
	maxBody int64
	srv     *Server
}

func (g *httpGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			g.srv.logger.Error("socketio: panic serving HTTP request", "path", r.URL.Path, "panic", v)
			http.Error(w, "internal error", http.StatusInternalServerError)
		}
	}()
	if r.Method == http.MethodPost && r.Body != nil {
		if r.ContentLength > g.maxBody {
			http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, g.maxBody)
	}
	g.next.ServeHTTP(w, r)
}
