package sioclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

var _ transport = (*pollTransport)(nil)

// pollTransport is the Engine.IO HTTP long-polling transport: one GET is
// always outstanding to receive, and each write is one POST. POSTs are
// serialized because the server rejects overlapping data requests.
type pollTransport struct {
	hc       *http.Client
	rt       *http.Transport // owned, so closing it leaks no idle connections
	url      string          // includes EIO, transport and sid
	header   http.Header
	timeout  time.Duration // per POST
	liveness time.Duration // per GET; 0 disables it
	pending  []string      // packets that followed the open packet

	ctx    context.Context // cancelled by close; aborts every request
	cancel context.CancelFunc

	wmu       sync.Mutex
	closeOnce sync.Once
	runDone   chan struct{} // closed when run returns
}

// dialPolling performs the Engine.IO handshake GET.
func dialPolling(ctx context.Context, u *url.URL, header http.Header, timeout time.Duration) (*pollTransport, handshake, error) {
	rt := http.DefaultTransport.(*http.Transport).Clone()
	rt.Proxy = nil // like the websocket dialer: always talk to the server itself
	t := &pollTransport{
		hc:      &http.Client{Transport: rt},
		rt:      rt,
		header:  header,
		timeout: timeout,
		runDone: make(chan struct{}),
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())

	body, err := t.do(ctx, http.MethodGet, u.String(), "")
	if err != nil {
		t.close(false)
		return nil, handshake{}, fmt.Errorf("sioclient: polling handshake: %w", err)
	}
	packets := strings.Split(body, payloadSeparator)
	h, err := parseOpen(packets[0])
	if err != nil {
		t.close(false)
		return nil, h, err
	}
	t.pending = packets[1:]
	t.liveness = h.liveness()
	q := u.Query()
	q.Set("sid", h.SID)
	withSID := *u
	withSID.RawQuery = q.Encode()
	t.url = withSID.String()
	return t, h, nil
}

// do sends one request and returns the body of a 200 response.
func (t *pollTransport) do(ctx context.Context, method, rawURL, body string) (string, error) {
	var rd io.Reader
	if method == http.MethodPost {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, rawURL, rd)
	if err != nil {
		return "", err
	}
	for k, vs := range t.header {
		req.Header[k] = append([]string(nil), vs...)
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, truncate(string(b)))
	}
	return string(b), nil
}

func (t *pollTransport) write(packet string) error {
	t.wmu.Lock()
	defer t.wmu.Unlock()
	ctx, cancel := context.WithTimeout(t.ctx, t.timeout)
	defer cancel()
	_, err := t.do(ctx, http.MethodPost, t.url, packet)
	return err
}

func (t *pollTransport) run(handle func(string) error) error {
	defer close(t.runDone)
	for _, p := range t.pending {
		if err := handlePolled(p, handle); err != nil {
			return err
		}
	}
	t.pending = nil
	for {
		body, err := t.poll()
		if err != nil {
			return err
		}
		for _, p := range strings.Split(body, payloadSeparator) {
			if err := handlePolled(p, handle); err != nil {
				return err
			}
		}
	}
}

// poll performs one long-polling GET.
func (t *pollTransport) poll() (string, error) {
	ctx, cancel := t.ctx, context.CancelFunc(func() {})
	if t.liveness > 0 {
		ctx, cancel = context.WithTimeout(t.ctx, t.liveness)
	}
	defer cancel()
	return t.do(ctx, http.MethodGet, t.url, "")
}

// handlePolled skips empty and base64 binary ("b...") packets.
func handlePolled(p string, handle func(string) error) error {
	if p == "" || p[0] == 'b' {
		return nil
	}
	return handle(p)
}

// close, when graceful, sends the Engine.IO close packet and lets run poll
// until the server has closed the session (a close packet, or an error for
// the unknown sid) instead of aborting the outstanding GET. zishang520 v2.5.0
// races writing a poll response against an aborted request's handler
// returning, and, when it closed the session itself, keeps a 30s timer until
// one more GET collects the close packet.
func (t *pollTransport) close(graceful bool) {
	t.closeOnce.Do(func() {
		if graceful {
			if t.write(string(engineClose)) == nil {
				awaitOrTimeout(t.runDone, t.timeout)
			}
		}
		t.cancel()
	})
	// Every call: the reader may have parked a connection since the last one.
	t.rt.CloseIdleConnections()
}
