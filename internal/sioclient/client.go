package sioclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Transport names accepted in Options.Transport.
const (
	TransportWebsocket = "websocket"
	TransportPolling   = "polling"
)

// Options configure Dial. The zero value of every field but URL means its
// default.
type Options struct {
	// URL of the server, e.g. "http://127.0.0.1:8080"; http, https, ws and
	// wss are accepted. Query parameters are sent with every request.
	URL string
	// Path of the Engine.IO endpoint. default: "/socket.io/"
	Path string
	// Transport is TransportWebsocket or TransportPolling; the client never
	// upgrades from one to the other. default: TransportWebsocket
	Transport string
	// Namespace to join. default: "/"
	Namespace string
	// Auth is the payload of the Socket.IO CONNECT packet. default: none
	Auth map[string]any
	// Header is sent with the websocket handshake, or with every polling
	// request (e.g. X-Forwarded-For). default: none
	Header http.Header
	// Timeout bounds Dial and every write, and every wait whose context has
	// no deadline. default: 5s
	Timeout time.Duration
	// ConnectRetry is how long Dial waits for the reply to CONNECT before it
	// closes the session and starts over with a new one, doubling the wait
	// each time, until Timeout. zishang520/socket.io v2.5.0 drops a CONNECT
	// that arrives before its connection handler is registered, which can
	// happen right after the open packet. A retry runs the server's connect
	// middleware again. Negative disables retries. default: 250ms
	ConnectRetry time.Duration
	// Settle is a pause after the open packet and after the CONNECT reply.
	// zishang520/socket.io v2.5.0 finishes setting up a session and a socket
	// asynchronously after sending those packets: a CONNECT sent too early
	// is dropped (see ConnectRetry), and an event sent too early makes it
	// close the connection ("invalid state"). No packet tells when it is
	// done, so Dial waits. Negative disables the pause. default: 5ms
	Settle time.Duration

	// retryTimer, when set (by tests), replaces the ConnectRetry timer of
	// attempt n (from 0), whose wait would be d; a nil channel waits for
	// the reply until the dial's context ends.
	retryTimer func(n int, d time.Duration) <-chan time.Time
}

// Event is one event pushed by the server.
type Event struct {
	Name string
	Args []any

	ackID  uint64
	hasAck bool
}

// AckID reports the ack id the server attached to the event, if any; answer
// it with Client.Ack.
func (e Event) AckID() (id uint64, ok bool) { return e.ackID, e.hasAck }

type connectReply struct {
	sid string
	err error // *ConnectError
}

// Client is one Socket.IO connection to one namespace. All methods may be
// called concurrently. Always call Close, even after Done is closed.
type Client struct {
	tr        transport
	nsp       string
	timeout   time.Duration
	engineSID string
	sid       string // set once by Dial

	ackSeq atomic.Uint64
	mu     sync.Mutex
	acks   map[uint64]chan []any
	events []Event
	wake   chan struct{} // closed and replaced on every new event
	err    error

	connected chan connectReply // first CONNECT or CONNECT_ERROR reply

	sendMu    sync.RWMutex // held for reading by send, for writing by Close
	closing   atomic.Bool
	done      chan struct{}
	endOnce   sync.Once
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// Dial performs the Engine.IO handshake on the chosen transport, then the
// Socket.IO CONNECT to the namespace, and returns once the server accepted
// it. A CONNECT_ERROR reply is returned as *ConnectError. ctx bounds the
// dial only, not the life of the Client; without a deadline Options.Timeout
// applies. See Options.ConnectRetry for when Dial starts over.
func Dial(ctx context.Context, o Options) (*Client, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	u, err := endpoint(o)
	if err != nil {
		return nil, err
	}
	var auth []byte
	if o.Auth != nil {
		if auth, err = json.Marshal(o.Auth); err != nil {
			return nil, fmt.Errorf("sioclient: encoding auth: %w", err)
		}
	}
	ctx, cancel := withTimeout(ctx, o.Timeout)
	defer cancel()
	for n, retry := 0, o.ConnectRetry; ; n, retry = n+1, retry*2 {
		c, err := dialOnce(ctx, o, u, auth, n, retry)
		if !errors.Is(err, errNoConnectReply) {
			return c, err
		}
	}
}

// errNoConnectReply: the CONNECT got no reply within Options.ConnectRetry.
var errNoConnectReply = errors.New("sioclient: no CONNECT reply yet")

// dialOnce opens one Engine.IO session, attempt n of Dial, and sends
// CONNECT; retry <= 0 waits for the reply until ctx ends.
func dialOnce(ctx context.Context, o Options, u *url.URL, auth []byte, n int, retry time.Duration) (*Client, error) {
	var (
		tr  transport
		h   handshake
		err error
	)
	switch o.Transport {
	case TransportWebsocket:
		tr, h, err = dialWebsocket(ctx, u.String(), o.Header, o.Timeout)
	case TransportPolling:
		tr, h, err = dialPolling(ctx, u, o.Header, o.Timeout)
	}
	if err != nil {
		return nil, err
	}

	c := &Client{
		tr:        tr,
		nsp:       o.Namespace,
		timeout:   o.Timeout,
		engineSID: h.SID,
		acks:      make(map[uint64]chan []any),
		wake:      make(chan struct{}),
		connected: make(chan connectReply, 1),
		done:      make(chan struct{}),
	}
	c.wg.Add(1)
	go c.read()

	if err := pause(ctx, o.Settle); err != nil {
		c.shutdown(true)
		return nil, err
	}
	if err := c.tr.write(encodeSIO(sioConnect, c.nsp, -1, auth)); err != nil {
		c.shutdown(false)
		return nil, transportError(err)
	}
	var retryC <-chan time.Time
	switch {
	case o.retryTimer != nil:
		retryC = o.retryTimer(n, retry)
	case retry > 0:
		t := time.NewTimer(retry)
		defer t.Stop()
		retryC = t.C
	}
	select {
	case r := <-c.connected:
		if r.err != nil {
			c.shutdown(true)
			return nil, r.err
		}
		c.sid = r.sid
		if err := pause(ctx, o.Settle); err != nil {
			_ = c.Close()
			return nil, err
		}
		return c, nil
	case <-c.done:
		err := c.Err()
		c.shutdown(false)
		return nil, err
	case <-retryC:
		c.shutdown(true)
		return nil, errNoConnectReply
	case <-ctx.Done():
		c.shutdown(true)
		return nil, fmt.Errorf("sioclient: waiting for CONNECT reply: %w", ctx.Err())
	}
}

func (o Options) withDefaults() (Options, error) {
	if o.URL == "" {
		return o, errors.New("sioclient: Options.URL is required")
	}
	if o.Path == "" {
		o.Path = "/socket.io/"
	}
	if o.Transport == "" {
		o.Transport = TransportWebsocket
	}
	if o.Transport != TransportWebsocket && o.Transport != TransportPolling {
		return o, fmt.Errorf("sioclient: unknown transport %q", o.Transport)
	}
	if o.Namespace == "" {
		o.Namespace = "/"
	}
	if !strings.HasPrefix(o.Namespace, "/") {
		o.Namespace = "/" + o.Namespace
	}
	if strings.ContainsRune(o.Namespace, ',') {
		return o, fmt.Errorf("sioclient: namespace %q contains a comma", o.Namespace)
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.ConnectRetry == 0 {
		o.ConnectRetry = 250 * time.Millisecond
	}
	if o.Settle == 0 {
		o.Settle = 5 * time.Millisecond
	}
	return o, nil
}

// endpoint builds the Engine.IO URL for the chosen transport.
func endpoint(o Options) (*url.URL, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("sioclient: bad URL: %w", err)
	}
	secure := false
	switch u.Scheme {
	case "http", "ws":
	case "https", "wss":
		secure = true
	default:
		return nil, fmt.Errorf("sioclient: unsupported URL scheme %q", u.Scheme)
	}
	switch {
	case o.Transport == TransportWebsocket && secure:
		u.Scheme = "wss"
	case o.Transport == TransportWebsocket:
		u.Scheme = "ws"
	case secure:
		u.Scheme = "https"
	default:
		u.Scheme = "http"
	}
	u.Path = o.Path
	u.RawPath = ""
	q := u.Query()
	q.Set("EIO", "4")
	q.Set("transport", o.Transport)
	u.RawQuery = q.Encode()
	return u, nil
}

// SID is the Socket.IO session id from the CONNECT reply.
func (c *Client) SID() string { return c.sid }

// EngineSID is the Engine.IO session id from the open packet.
func (c *Client) EngineSID() string { return c.engineSID }

// Done is closed when the connection is gone: the transport failed or was
// closed by the server, the server disconnected the socket, or Close was
// called. Err then tells which.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is nil while the connection is up, then ErrClosed,
// ErrServerDisconnect, or an error wrapping ErrTransportClosed.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Emit sends an event without an ack. It returns once the packet is written
// (websocket) or POSTed (polling).
func (c *Client) Emit(event string, args ...any) error {
	data, err := encodeArgs(&event, args)
	if err != nil {
		return fmt.Errorf("sioclient: encoding %q: %w", event, err)
	}
	return c.send(encodeSIO(sioEvent, c.nsp, -1, data))
}

// EmitWithAck sends an event with the next ack id (0, 1, 2, ...) and waits
// for the server's ack, returning its arguments. Without a deadline on ctx,
// Options.Timeout applies. It starts no goroutine.
func (c *Client) EmitWithAck(ctx context.Context, event string, args ...any) ([]any, error) {
	data, err := encodeArgs(&event, args)
	if err != nil {
		return nil, fmt.Errorf("sioclient: encoding %q: %w", event, err)
	}
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()

	id := c.ackSeq.Add(1) - 1
	ch := make(chan []any, 1)
	c.mu.Lock()
	c.acks[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.acks, id)
		c.mu.Unlock()
	}()

	if err := c.send(encodeSIO(sioEvent, c.nsp, int64(id), data)); err != nil {
		return nil, err
	}
	select {
	case v := <-ch:
		return v, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("sioclient: waiting for ack %d of %q: %w", id, event, ctx.Err())
	case <-c.done:
		select {
		case v := <-ch: // the ack raced the shutdown
			return v, nil
		default:
			return nil, c.Err()
		}
	}
}

// Ack answers an event the server emitted with an ack callback.
func (c *Client) Ack(e Event, args ...any) error {
	if !e.hasAck {
		return fmt.Errorf("sioclient: event %q has no ack id", e.Name)
	}
	data, err := encodeArgs(nil, args)
	if err != nil {
		return fmt.Errorf("sioclient: encoding ack: %w", err)
	}
	return c.send(encodeSIO(sioAck, c.nsp, int64(e.ackID), data))
}

// SendRaw sends one Engine.IO text packet verbatim, e.g. `42["x"` or "2probe".
// When polling it is POSTed as the whole payload, so a "\x1e" in it splits it
// into several packets.
func (c *Client) SendRaw(frame string) error { return c.send(frame) }

func (c *Client) send(packet string) error {
	// The read lock keeps Close from slipping "41" in between the check and
	// the write: nothing may follow our own DISCONNECT, the server closes
	// the connection on it.
	c.sendMu.RLock()
	defer c.sendMu.RUnlock()
	if c.closing.Load() {
		return ErrClosed
	}
	select {
	case <-c.done:
		return c.Err()
	default:
	}
	if err := c.tr.write(packet); err != nil {
		if e := c.Err(); e != nil {
			return e
		}
		return transportError(err)
	}
	return nil
}

// Next returns the arguments of the oldest queued event with that name,
// waiting for one if needed. Without a deadline on ctx, Options.Timeout
// applies. Events queued before the connection ended can still be read.
func (c *Client) Next(ctx context.Context, event string) ([]any, error) {
	e, err := c.take(ctx, event, true, nil)
	return e.Args, err
}

// NextAny returns the oldest queued event of any name, waiting for one if
// needed; use it to assert the order of different events.
func (c *Client) NextAny(ctx context.Context) (Event, error) {
	return c.take(ctx, "", false, nil)
}

// NextFunc returns the oldest queued event for which match reports true,
// waiting for one if needed; events it passes over stay queued. match is
// called with the client's lock held, so it must not call the Client.
// Without a deadline on ctx, Options.Timeout applies.
func (c *Client) NextFunc(ctx context.Context, match func(Event) bool) (Event, error) {
	return c.take(ctx, "", false, match)
}

func (c *Client) take(ctx context.Context, name string, byName bool, match func(Event) bool) (Event, error) {
	ctx, cancel := withTimeout(ctx, c.timeout)
	defer cancel()
	for {
		c.mu.Lock()
		for i, e := range c.events {
			if (!byName || e.Name == name) && (match == nil || match(e)) {
				c.events = append(c.events[:i], c.events[i+1:]...)
				c.mu.Unlock()
				return e, nil
			}
		}
		wake, err := c.wake, c.err
		c.mu.Unlock()
		if err != nil {
			return Event{}, err // the reader has stopped: nothing more will come
		}
		select {
		case <-wake:
		case <-c.done:
		case <-ctx.Done():
			if byName {
				return Event{}, fmt.Errorf("sioclient: waiting for event %q: %w", name, ctx.Err())
			}
			return Event{}, fmt.Errorf("sioclient: waiting for an event: %w", ctx.Err())
		}
	}
}

// Close disconnects from the namespace ("41") unless the connection already
// ended, closes the transport gracefully and waits for the reader goroutine
// to exit. It always returns nil; calling it again does nothing.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.sendMu.Lock()
		c.closing.Store(true)
		if c.Err() == nil {
			_ = c.tr.write(encodeSIO(sioDisconnect, c.nsp, -1, nil)) // best effort
		}
		c.sendMu.Unlock()
		c.shutdown(true)
	})
	return nil
}

// shutdown stops the client and waits for the reader.
func (c *Client) shutdown(graceful bool) {
	c.closing.Store(true)
	c.fail(ErrClosed, graceful)
	c.wg.Wait()
	c.tr.close(false) // releases what the reader left behind
}

// end records why the connection ended, once, and wakes every waiter. It
// leaves the transport alone.
func (c *Client) end(err error) {
	c.endOnce.Do(func() {
		if c.closing.Load() {
			err = ErrClosed
		}
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	})
}

// fail ends the connection and tears the transport down.
func (c *Client) fail(err error, graceful bool) {
	c.end(err)
	c.tr.close(graceful)
}

// read is the reader goroutine.
func (c *Client) read() {
	defer c.wg.Done()
	c.fail(transportError(c.tr.run(c.handleEngine)), false)
}

var errEngineClosed = errors.New("server sent an Engine.IO close packet")

// handleEngine processes one Engine.IO packet; an error stops the reader.
func (c *Client) handleEngine(p string) error {
	switch p[0] {
	case enginePing:
		return c.tr.write(string(enginePong) + p[1:])
	case engineClose:
		return errEngineClosed
	case engineMessage:
		return c.handleSIO(p[1:])
	}
	return nil // open, pong, upgrade, noop and unknown types carry nothing for us
}

// handleSIO processes one Socket.IO packet. Malformed packets and packets for
// other namespaces are ignored.
func (c *Client) handleSIO(s string) error {
	p, err := decodeSIO(s)
	if err != nil || p.nsp != c.nsp {
		return nil
	}
	switch p.typ {
	case sioConnect:
		var reply struct {
			SID string `json:"sid"`
		}
		if json.Unmarshal([]byte(p.data), &reply) == nil && reply.SID != "" {
			select {
			case c.connected <- connectReply{sid: reply.SID}:
			default: // a later reply; the first one counts
			}
		}
	case sioConnectError:
		ce := &ConnectError{Raw: p.data}
		var reply struct {
			Message string `json:"message"`
			Data    any    `json:"data"`
		}
		if json.Unmarshal([]byte(p.data), &reply) == nil {
			ce.Message = reply.Message
			ce.Data, _ = reply.Data.(map[string]any)
		}
		select {
		case c.connected <- connectReply{err: ce}:
		default:
		}
	case sioDisconnect:
		// The reader keeps going: when the server also closes the
		// connection, it must be read to its end, or a polling server waits
		// for a GET that never comes. Close, or the server, ends it.
		c.end(ErrServerDisconnect)
	case sioEvent, sioBinaryEvent:
		args, err := decodeArray(p.data)
		if err != nil || len(args) == 0 {
			return nil
		}
		name, ok := args[0].(string)
		if !ok {
			return nil
		}
		c.mu.Lock()
		c.events = append(c.events, Event{Name: name, Args: args[1:], ackID: p.id, hasAck: p.hasID})
		close(c.wake)
		c.wake = make(chan struct{})
		c.mu.Unlock()
	case sioAck, sioBinaryAck:
		if !p.hasID {
			return nil
		}
		args, err := decodeArray(p.data)
		if err != nil {
			return nil
		}
		c.mu.Lock()
		ch := c.acks[p.id]
		delete(c.acks, p.id)
		c.mu.Unlock()
		if ch != nil {
			ch <- args // buffered, and each id is delivered once
		}
	}
	return nil
}

// pause waits d, or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sioclient: dial: %w", ctx.Err())
	}
}

// withTimeout applies d when ctx has no deadline.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}
