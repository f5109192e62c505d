package sioclient

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDecodeSIO(t *testing.T) {
	cases := []struct {
		in   string
		want sioPacket
	}{
		{`0{"sid":"x"}`, sioPacket{typ: '0', nsp: "/", data: `{"sid":"x"}`}},
		{`0/admin,{"sid":"x"}`, sioPacket{typ: '0', nsp: "/admin", data: `{"sid":"x"}`}},
		{`1`, sioPacket{typ: '1', nsp: "/"}},
		{`1/admin,`, sioPacket{typ: '1', nsp: "/admin"}},
		{`1/admin`, sioPacket{typ: '1', nsp: "/admin"}},
		{`2["a",1]`, sioPacket{typ: '2', nsp: "/", data: `["a",1]`}},
		{`212["a"]`, sioPacket{typ: '2', nsp: "/", id: 12, hasID: true, data: `["a"]`}},
		{`2/admin,7["a"]`, sioPacket{typ: '2', nsp: "/admin", id: 7, hasID: true, data: `["a"]`}},
		{`30[]`, sioPacket{typ: '3', nsp: "/", id: 0, hasID: true, data: `[]`}},
		{`51-["a",{"_placeholder":true,"num":0}]`, sioPacket{typ: '5', attachments: 1, nsp: "/", data: `["a",{"_placeholder":true,"num":0}]`}},
		{`62-/admin,3[]`, sioPacket{typ: '6', attachments: 2, nsp: "/admin", id: 3, hasID: true, data: `[]`}},
		{`4{"message":"no"}`, sioPacket{typ: '4', nsp: "/", data: `{"message":"no"}`}},
	}
	for _, tc := range cases {
		got, err := decodeSIO(tc.in)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
	for _, bad := range []string{"", "7", "x", "5[]", "5x-[]", "5-1-[]", "299999999999999999999999[]"} {
		_, err := decodeSIO(bad)
		assert.Error(t, err, bad)
	}
}

func TestEncodeSIO(t *testing.T) {
	assert.Equal(t, `40`, encodeSIO(sioConnect, "/", -1, nil))
	assert.Equal(t, `40/admin,{"token":"x"}`, encodeSIO(sioConnect, "/admin", -1, []byte(`{"token":"x"}`)))
	assert.Equal(t, `41/admin,`, encodeSIO(sioDisconnect, "/admin", -1, nil))
	assert.Equal(t, `4212["a"]`, encodeSIO(sioEvent, "/", 12, []byte(`["a"]`)))
	assert.Equal(t, `43/a,0[]`, encodeSIO(sioAck, "/a", 0, []byte(`[]`)))

	name := "ev"
	b, err := encodeArgs(&name, []any{1, "x"})
	require.NoError(t, err)
	assert.Equal(t, `["ev",1,"x"]`, string(b))
	b, err = encodeArgs(nil, nil)
	require.NoError(t, err)
	assert.Equal(t, `[]`, string(b))
	_, err = encodeArgs(&name, []any{func() {}})
	assert.Error(t, err)
}

func TestParseOpen(t *testing.T) {
	h, err := parseOpen(`0{"sid":"abc","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`)
	require.NoError(t, err)
	assert.Equal(t, handshake{SID: "abc", Upgrades: []string{"websocket"}, PingInterval: 25000, PingTimeout: 20000, MaxPayload: 1000000}, h)
	assert.Equal(t, 46*time.Second, h.liveness())
	for _, bad := range []string{"", "4x", "0{", `0{"sid":""}`} {
		_, err := parseOpen(bad)
		assert.Error(t, err, bad)
	}
}

// fakeTransport records writes; run blocks until close.
type fakeTransport struct {
	mu      sync.Mutex
	written []string
	stop    chan struct{}
	once    sync.Once
}

func newFakeTransport() *fakeTransport { return &fakeTransport{stop: make(chan struct{})} }

func (f *fakeTransport) write(p string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.written = append(f.written, p)
	return nil
}

func (f *fakeTransport) run(func(string) error) error {
	<-f.stop
	return errors.New("fake transport closed")
}

func (f *fakeTransport) close(bool) { f.once.Do(func() { close(f.stop) }) }

func (f *fakeTransport) writes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.written...)
}

// newOfflineClient is a connected Client whose packets are fed by hand.
func newOfflineClient(t *testing.T, nsp string) (*Client, *fakeTransport) {
	t.Helper()
	f := newFakeTransport()
	c := &Client{
		tr: f, nsp: nsp, timeout: time.Second,
		acks: make(map[uint64]chan []any), wake: make(chan struct{}),
		connected: make(chan connectReply, 1), done: make(chan struct{}),
	}
	c.wg.Add(1)
	go c.read()
	t.Cleanup(func() { _ = c.Close() })
	return c, f
}

func TestHandleEngine(t *testing.T) {
	c, f := newOfflineClient(t, "/admin")
	ctx := context.Background()
	feed := func(p string) error { t.Helper(); return c.handleEngine(p) }

	require.NoError(t, feed("2"))
	require.NoError(t, feed("2probe"))
	assert.Equal(t, []string{"3", "3probe"}, f.writes(), "pings are answered with pongs")

	for _, ignored := range []string{
		`42["for","root"]`,       // another namespace
		`42/admin,[1]`,           // no event name
		`42/admin,["x"`,          // malformed JSON
		`42/admin,{}`,            // not an array
		`43/admin,[1]`,           // ack without id
		`43/admin,99[1]`,         // unknown ack id
		`4x`, `4`, "6", "3", "5", // junk and packets with nothing to deliver
	} {
		require.NoError(t, feed(ignored), ignored)
	}
	require.NoError(t, feed(`42/admin,["a",1]`))
	require.NoError(t, feed(`42/admin,5["b"]`))
	require.NoError(t, feed(`451-/admin,["bin",{"_placeholder":true,"num":0}]`))

	e, err := c.NextAny(ctx)
	require.NoError(t, err)
	assert.Equal(t, Event{Name: "a", Args: []any{float64(1)}}, e)
	e, err = c.NextAny(ctx)
	require.NoError(t, err)
	id, ok := e.AckID()
	assert.True(t, ok)
	assert.Equal(t, uint64(5), id)
	require.NoError(t, c.Ack(e, "ok"))
	assert.Equal(t, `43/admin,5["ok"]`, f.writes()[2])
	args, err := c.Next(ctx, "bin")
	require.NoError(t, err)
	assert.Equal(t, []any{map[string]any{"_placeholder": true, "num": float64(0)}}, args)

	require.NoError(t, feed(`41/admin,`), "the reader reads on until the server closes")
	<-c.Done()
	assert.ErrorIs(t, c.Err(), ErrServerDisconnect)
	assert.ErrorIs(t, feed("1"), errEngineClosed)
}

func TestEmitWithAckOffline(t *testing.T) {
	c, f := newOfflineClient(t, "/")
	results := make(chan []any, 1)
	go func() {
		got, err := c.EmitWithAck(context.Background(), "q", 1)
		assert.NoError(t, err)
		results <- got
	}()
	require.Eventually(t, func() bool { return len(f.writes()) == 1 }, time.Second, time.Millisecond)
	assert.Equal(t, `420["q",1]`, f.writes()[0])
	require.NoError(t, c.handleEngine(`430["r"]`))
	assert.Equal(t, []any{"r"}, <-results)

	c.mu.Lock()
	assert.Empty(t, c.acks, "answered acks are forgotten")
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	_, err := c.EmitWithAck(ctx, "q")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	c.mu.Lock()
	assert.Empty(t, c.acks, "timed-out acks are forgotten")
	c.mu.Unlock()
}

func TestEventsKeptAfterDone(t *testing.T) {
	c, _ := newOfflineClient(t, "/")
	require.NoError(t, c.handleEngine(`42["late",1]`))
	require.NoError(t, c.Close())
	args, err := c.Next(context.Background(), "late")
	require.NoError(t, err, "events queued before the end stay readable")
	assert.Equal(t, []any{float64(1)}, args)
	_, err = c.NextAny(context.Background())
	assert.ErrorIs(t, err, ErrClosed)
}

func TestTransportError(t *testing.T) {
	cause := errors.New("boom")
	err := transportError(cause)
	assert.ErrorIs(t, err, ErrTransportClosed)
	assert.ErrorIs(t, err, cause)
	assert.Equal(t, err, transportError(err), "not wrapped twice")
	assert.NoError(t, transportError(nil))
}

// FuzzHandleEngine feeds arbitrary server packets to a client: it must never
// panic, whatever the server sends.
func FuzzHandleEngine(f *testing.F) {
	for _, seed := range []string{
		`40{"sid":"x"}`, `44{"message":"m","data":{"a":1}}`, `42["a",1]`, `43/x,1[2]`,
		`451-["a",{"_placeholder":true,"num":0}]`, `41`, "1", "2", "6", `0{"sid":"s"}`,
		`42/admin,`, `4`, `45-`, `42999999999999999999999["a"]`, "4\xff",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if p == "" {
			return // transports never hand over empty packets
		}
		c, _ := newOfflineClient(t, "/")
		_ = c.handleEngine(p)
		_, _ = decodeSIO(p)
	})
}
