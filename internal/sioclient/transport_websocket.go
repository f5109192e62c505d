package sioclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

var _ transport = (*wsTransport)(nil)

// wsTransport is the Engine.IO websocket transport: one text frame per packet.
type wsTransport struct {
	conn     *websocket.Conn
	timeout  time.Duration // per write
	liveness time.Duration // read deadline; 0 disables it

	wmu       sync.Mutex // gorilla allows one concurrent writer
	closeOnce sync.Once
	runDone   chan struct{} // closed when run returns
}

// dialWebsocket opens the websocket and reads the Engine.IO open packet.
func dialWebsocket(ctx context.Context, rawURL string, header http.Header, timeout time.Duration) (*wsTransport, handshake, error) {
	d := websocket.Dialer{HandshakeTimeout: timeout}
	conn, resp, err := d.DialContext(ctx, rawURL, header)
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			return nil, handshake{}, fmt.Errorf("sioclient: websocket handshake: %w (HTTP %d: %s)", err, resp.StatusCode, body)
		}
		return nil, handshake{}, fmt.Errorf("sioclient: websocket handshake: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	var h handshake
	for {
		typ, data, err := conn.ReadMessage()
		if err != nil {
			conn.Close()
			return nil, h, fmt.Errorf("sioclient: reading Engine.IO open packet: %w", err)
		}
		if typ != websocket.TextMessage {
			continue
		}
		if h, err = parseOpen(string(data)); err != nil {
			conn.Close()
			return nil, h, err
		}
		break
	}
	_ = conn.SetReadDeadline(time.Time{})
	t := &wsTransport{conn: conn, timeout: timeout, liveness: h.liveness(), runDone: make(chan struct{})}
	return t, h, nil
}

func (t *wsTransport) write(packet string) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	_ = t.conn.SetWriteDeadline(time.Now().Add(t.timeout))
	return t.conn.WriteMessage(websocket.TextMessage, []byte(packet))
}

func (t *wsTransport) run(handle func(string) error) error {
	defer close(t.runDone)
	for {
		if t.liveness > 0 {
			_ = t.conn.SetReadDeadline(time.Now().Add(t.liveness))
		}
		typ, data, err := t.conn.ReadMessage()
		if err != nil {
			return err
		}
		if typ != websocket.TextMessage || len(data) == 0 {
			continue // binary attachments are not supported; skip them
		}
		if err := handle(string(data)); err != nil {
			return err
		}
	}
}

// close, when graceful, sends a close frame and waits for the server's
// reply to end run, as the websocket closing handshake asks.
func (t *wsTransport) close(graceful bool) {
	t.closeOnce.Do(func() {
		if graceful {
			// WriteControl may run concurrently with write.
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			if t.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(t.timeout)) == nil {
				awaitOrTimeout(t.runDone, t.timeout)
			}
		}
		t.conn.Close()
	})
}
