package socketio

// This file and conn.go are the seam to github.com/zishang520/socket.io/v2:
// the rest of the package does not import it.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"reflect"
	"sync"
	"unsafe"

	"github.com/gorilla/websocket"
	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io-go-parser/v2/parser"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio/internal/seqparser"
)

// seamMu serialises the few calls into v2 that are not safe for concurrent
// use (installing the parser, creating the engine).
var seamMu sync.Mutex

// SetParser sets the library's ordering parser on opts, wrapping the
// parser opts already had (v2's default when none), and returns opts; nil
// opts means socket.DefaultServerOptions(). Build the Socket.IO server from
// the result and Register uses that parser as it is:
//
//	sio := socket.NewServer(nil, socketio.SetParser(socket.DefaultServerOptions()))
//	qa, err := socketio.Register(sio, socketio.Options{})
//
// This is the recommended way. Without it, Register replaces the built
// server's parser in place, through an unexported field of v2.5.0 (see
// Register). Calling SetParser again on the same options changes nothing.
func SetParser(opts *socket.ServerOptions) *socket.ServerOptions {
	if opts == nil {
		opts = socket.DefaultServerOptions()
	}
	current := opts.GetRawParser()
	if _, ok := current.(*seqparser.Parser); ok {
		return opts
	}
	if current == nil {
		current = parser.NewParser()
	}
	opts.SetParser(seqparser.New(current))
	return opts
}

// installParser makes sio decode with a seqparser.Parser (see that package
// for the v2.5.0 defects it shields from) and returns it. A server built
// from options passed through SetParser has it already. Otherwise: v2.5.0
// reads its parser from an unexported field when each connection starts
// and offers no setter once the server exists, so the field is replaced in
// place; the module is pinned at v2.5.0 and a test checks the field is
// still there. Connections made before Register keep the parser they
// started with. swapped reports whether the field was written.
func installParser(sio *socket.Server) (p *seqparser.Parser, swapped bool, err error) {
	seamMu.Lock()
	defer seamMu.Unlock()
	if p, ok := sio.Opts().GetRawParser().(*seqparser.Parser); ok {
		return p, false, nil
	}
	field := reflect.ValueOf(sio).Elem().FieldByName("_parser")
	want := reflect.TypeOf((*parser.Parser)(nil)).Elem()
	if !field.IsValid() || field.Type() != want {
		return nil, false, errors.New("socketio: Register: unsupported github.com/zishang520/socket.io/v2 version (no parser field)")
	}
	field = reflect.NewAt(field.Type(), unsafe.Pointer(field.UnsafeAddr())).Elem()
	current, _ := field.Interface().(parser.Parser)
	if p, ok := current.(*seqparser.Parser); ok {
		return p, false, nil
	}
	p = seqparser.New(current)
	field.Set(reflect.ValueOf(parser.Parser(p)))
	return p, true, nil
}

// defaultMaxHTTPBody is Engine.IO's default maxHttpBufferSize.
const defaultMaxHTTPBody = 1_000_000

// Handler returns the HTTP handler of the Socket.IO endpoint (mount it at
// the server's path, "/socket.io/" by default). It is sio.ServeHandler with
// protections v2.5.0 lacks: the polling transport's body limit is enforced
// on the bytes actually read, not on the Content-Length the client claims;
// a websocket message is read up to the same limit and no further (a
// larger one closes that connection: per-message compression is not
// offered, as it would inflate a message whole before the limit applies);
// every connection has a send budget (Options.MaxQueuedBytes); a handshake
// is held until the server listens to the new connection, so a CONNECT
// sent at once is not lost; websocket broadcasts are not cut short; and a
// panic while serving one request is recovered and logged.
// Every call returns the same handler, backed by one engine, also when
// called concurrently.
func (s *Server) Handler() http.Handler {
	seamMu.Lock()
	defer seamMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handler != nil {
		return s.handler
	}
	// v2.5.0's websocket transport stops sending a batch after its first
	// pre-encoded frame, losing broadcast deliveries under load. Frames are
	// pre-encoded only when per-message deflate is off, so it is turned on
	// with a threshold no message reaches: nothing is compressed, nothing is
	// lost. Options the user set on sio take precedence.
	opts := socket.DefaultServerOptions()
	opts.SetPerMessageDeflate(&types.PerMessageDeflate{Threshold: math.MaxInt32})
	engine := s.sio.ServeHandler(opts)
	limit := int64(defaultMaxHTTPBody)
	if eng := s.sio.Engine(); eng != nil {
		if n := eng.Opts().MaxHttpBufferSize(); n > 0 {
			limit = n
		}
		eng.On("connection", s.guardEngineConnection)
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
	if r.Method == http.MethodPost && r.Body != nil && r.Body != http.NoBody {
		// Read the body here, up to the limit, so that what counts is the
		// bytes sent, not the length the client declared.
		if r.ContentLength > g.maxBody {
			http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, g.maxBody+1))
		if err != nil {
			http.Error(w, "bad request body", http.StatusBadRequest)
			return
		}
		if int64(len(body)) > g.maxBody {
			http.Error(w, "payload too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	if websocket.IsWebSocketUpgrade(r) {
		// Offer no per-message deflate. The engine has it switched on (see
		// Handler), and the websocket read limit, maxPayload, counts the
		// bytes on the wire: a small compressed message would be inflated
		// whole, whatever its size. Without the extension every message is
		// read up to maxPayload and no further.
		r.Header.Del("Sec-Websocket-Extensions")
	}
	if r.URL.Query().Get("sid") != "" {
		g.next.ServeHTTP(w, r)
		return
	}
	// A handshake. v2.5.0 sends the open packet before the Socket.IO layer
	// listens to the new connection, so a client's CONNECT that follows at
	// once can be lost. Hold back what the client could answer to until the
	// engine has announced the connection, which it does before the
	// handshake's handler returns: a websocket is not read, and a polling
	// handshake's response not sent, until then.
	if websocket.IsWebSocketUpgrade(r) {
		hw := &heldReader{ResponseWriter: w, open: make(chan struct{})}
		defer close(hw.open)
		g.next.ServeHTTP(hw, r)
		return
	}
	bw := &bufferedResponse{header: w.Header()}
	g.next.ServeHTTP(bw, r)
	bw.flushTo(w)
}

// heldReader hands the websocket upgrade a connection whose reads wait
// until open is closed.
type heldReader struct {
	http.ResponseWriter
	open chan struct{}
}

func (h *heldReader) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	hj, ok := h.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("socketio: response writer cannot be hijacked")
	}
	c, rw, err := hj.Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &heldConn{Conn: c, open: h.open}, rw, nil
}

type heldConn struct {
	net.Conn
	open chan struct{}
}

func (c *heldConn) Read(p []byte) (int, error) {
	<-c.open
	return c.Conn.Read(p)
}

// bufferedResponse keeps a handshake's response until the handler returns.
type bufferedResponse struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

func (b *bufferedResponse) flushTo(w http.ResponseWriter) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	w.WriteHeader(b.status)
	_, _ = w.Write(b.body.Bytes())
}
