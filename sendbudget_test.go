package socketio_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/socket.io/v2/socket"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// rawWS is a websocket Engine.IO client that does only what a test tells
// it: it reads when asked, answers no ping by itself, and can send any
// frame.
type rawWS struct {
	t    *testing.T
	conn *websocket.Conn
}

// dialRawWS connects to the default namespace over a websocket and reads
// up to the service's "connected" event.
func dialRawWS(t *testing.T, serverURL string, d websocket.Dialer) *rawWS {
	t.Helper()
	u, err := url.Parse(serverURL)
	require.NoError(t, err)
	u.Scheme = "ws"
	u.Path = "/socket.io/"
	u.RawQuery = "EIO=4&transport=websocket"
	conn, resp, err := d.Dial(u.String(), nil)
	require.NoError(t, err)
	resp.Body.Close()
	t.Cleanup(func() { conn.Close() })
	c := &rawWS{t: t, conn: conn}
	require.True(t, strings.HasPrefix(c.read(), "0{"), "open packet")
	c.write("40")
	require.True(t, strings.HasPrefix(c.read(), "40{"), "CONNECT reply")
	require.True(t, strings.HasPrefix(c.read(), `42["connected"`), "connected event")
	return c
}

func (c *rawWS) write(frame string) {
	c.t.Helper()
	require.NoError(c.t, c.conn.WriteMessage(websocket.TextMessage, []byte(frame)))
}

func (c *rawWS) read() string {
	c.t.Helper()
	require.NoError(c.t, c.conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, p, err := c.conn.ReadMessage()
	require.NoError(c.t, err)
	return string(p)
}

// readUntilClosed reads and discards frames until the connection ends, and
// returns how it ended. A connection still open after wait ends with a
// timeout.
func (c *rawWS) readUntilClosed(wait time.Duration) error {
	require.NoError(c.t, c.conn.SetReadDeadline(time.Now().Add(wait)))
	for {
		if _, _, err := c.conn.ReadMessage(); err != nil {
			return err
		}
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// TestWebsocketMessageOverMaxPayload checks that a websocket message larger
// than the advertised maxPayload (1,000,000 bytes) closes that connection
// before it is buffered whole, sent plain in fragments or, as a client
// may offer, compressed (a few kilobytes on the wire that would inflate to
// megabytes), and that other clients go on being served.
func TestWebsocketMessageOverMaxPayload(t *testing.T) {
	ts := startServer(t, socketio.Options{})
	other, _ := ts.dial(t, sioclient.TransportWebsocket)

	event := func(size int) string {
		head := `421["get_history",{"limit":1,"pad":"`
		tail := `"}]`
		return head + strings.Repeat("a", size-len(head)-len(tail)) + tail
	}
	tests := []struct {
		name     string
		size     int
		compress bool
	}{
		{"plain, one byte over", 1_000_001, false},
		{"deflated, 64 MB inflated", 64 << 20, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRawWS(t, ts.URL, websocket.Dialer{EnableCompression: tt.compress})
			c.conn.EnableWriteCompression(tt.compress)
			// NextWriter sends the message in frames of the write buffer's
			// size: the limit must hold across fragments.
			w, err := c.conn.NextWriter(websocket.TextMessage)
			require.NoError(t, err)
			msg := event(tt.size)
			for len(msg) > 0 {
				n := min(len(msg), 64<<10)
				if _, err := io.WriteString(w, msg[:n]); err != nil {
					break // the server may close before the last fragment
				}
				msg = msg[n:]
			}
			_ = w.Close()

			err = c.readUntilClosed(5 * time.Second)
			require.False(t, isTimeout(err), "connection still open after an oversized message: %v", err)
			assert.True(t, websocket.IsCloseError(err, websocket.CloseMessageTooBig), "close: %v", err)

			okReply(t, "get_history", call(t, other, "get_history", map[string]any{}))
		})
	}

	t.Run("at the limit", func(t *testing.T) {
		c := dialRawWS(t, ts.URL, websocket.Dialer{})
		c.write(event(1_000_000))
		for {
			f := c.read()
			if strings.HasPrefix(f, "431") {
				break
			}
		}
	})
}

// TestSlowWebsocketConsumerIsClosed has one member of a room stop reading
// while the room gets a steady flow of messages: the node closes it once
// its send budget is spent, counts it, and the member that reads gets
// every message.
func TestSlowWebsocketConsumerIsClosed(t *testing.T) {
	const budget = 64 << 10
	ts := startServer(t, socketio.Options{MaxQueuedBytes: budget})
	reader, _ := ts.dial(t, sioclient.TransportWebsocket)
	okReply(t, "join_room", call(t, reader, "join_room", map[string]any{"room": "busy"}))
	slow := dialRawWS(t, ts.URL, websocket.Dialer{})
	slow.write(`421["join_room",{"room":"busy"}]`)
	require.True(t, strings.HasPrefix(slow.read(), "431"), "join_room reply")
	// slow reads nothing from here on.

	payload := strings.Repeat("x", 4<<10)
	const maxMessages = 5000 // 20 MB: far past the budget and the socket buffers
	sent := 0
	for ; sent < maxMessages && ts.QA.Metrics().SlowConsumers == 0; sent++ {
		ts.IO.To("busy").Emit("note", map[string]any{"n": sent, "text": payload})
		// One at a time: the reader sees each before the next is sent.
		args, err := reader.Next(context.Background(), "note")
		require.NoError(t, err)
		require.EqualValues(t, sent, args[0].(map[string]any)["n"])
	}
	require.EqualValues(t, 1, ts.QA.Metrics().SlowConsumers, "no connection closed after %d messages of 4 KiB", sent)
	require.Eventually(t, func() bool { return ts.QA.Metrics().Connections == 1 },
		5*time.Second, 10*time.Millisecond, "the slow member is still connected")
	t.Logf("closed after %d messages (%d KiB sent to a client reading nothing)", sent, sent*4)

	// The reader stays in the room and is served.
	ts.IO.To("busy").Emit("note", map[string]any{"n": -1})
	args, err := reader.Next(context.Background(), "note")
	require.NoError(t, err)
	assert.EqualValues(t, -1, args[0].(map[string]any)["n"])
}

// TestUnsolicitedPongCloses checks that a pong the server did not ask for
// (a client that reads nothing keeping itself alive) ends the connection.
func TestUnsolicitedPongCloses(t *testing.T) {
	ts := startServer(t, socketio.Options{})

	t.Run("websocket", func(t *testing.T) {
		c := dialRawWS(t, ts.URL, websocket.Dialer{})
		c.write("3")
		err := c.readUntilClosed(5 * time.Second)
		assert.False(t, isTimeout(err), "connection still open after a blind pong: %v", err)
	})

	t.Run("polling", func(t *testing.T) {
		base := ts.URL + "/socket.io/?EIO=4&transport=polling"
		body := httpDo(t, http.MethodGet, base, "")
		require.True(t, strings.HasPrefix(body, "0{"), body)
		sid := between(t, body, `"sid":"`, `"`)
		u := base + "&sid=" + url.QueryEscape(sid)
		require.Equal(t, "ok", httpDo(t, http.MethodPost, u, "40"))
		// No GET: no ping was delivered. The reply to the pong itself may
		// already find the session closed.
		resp, err := http.Post(u, "text/plain;charset=UTF-8", strings.NewReader("3"))
		require.NoError(t, err)
		resp.Body.Close()
		require.Eventually(t, func() bool {
			resp, err := http.Post(u, "text/plain", strings.NewReader("3"))
			if err != nil {
				return false
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusBadRequest // the session is gone
		}, 5*time.Second, 10*time.Millisecond)
	})
	assert.EqualValues(t, 2, ts.QA.Metrics().SlowConsumers)
}

// TestSolicitedPongsKeepTheConnection answers the server's pings, several
// rounds of them, and stays connected and served.
func TestSolicitedPongsKeepTheConnection(t *testing.T) {
	sio := newSIOWithPing(50*time.Millisecond, 5*time.Second)
	ts := startServerOn(t, sio, socketio.Options{})
	c := dialRawWS(t, ts.URL, websocket.Dialer{})
	for range 5 {
		for c.read() != "2" {
		}
		c.write("3")
	}
	c.write(`421["get_history",{}]`)
	for {
		if f := c.read(); strings.HasPrefix(f, "431") {
			assert.Contains(t, f, `"ok":true`)
			break
		}
	}
	assert.Zero(t, ts.QA.Metrics().SlowConsumers)
}

func httpDo(t *testing.T, method, u, body string) string {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s %s: %s", method, u, b)
	return string(b)
}

func between(t *testing.T, s, from, to string) string {
	t.Helper()
	i := strings.Index(s, from)
	require.GreaterOrEqual(t, i, 0, fmt.Sprintf("%q in %q", from, s))
	s = s[i+len(from):]
	j := strings.Index(s, to)
	require.GreaterOrEqual(t, j, 0)
	return s[:j]
}

// newSIOWithPing is a v2 server that pings every interval and waits
// timeout for the pong.
func newSIOWithPing(interval, timeout time.Duration) *socket.Server {
	o := socket.DefaultServerOptions()
	o.SetPingInterval(interval)
	o.SetPingTimeout(timeout)
	return socket.NewServer(nil, o)
}
