package socketio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// authTestClock is a manual clock for rate-limit and expiry tests.
type authTestClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *authTestClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *authTestClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestAuth returns an Auth on a manual clock, without a sweeper.
func newTestAuth(t *testing.T, opts AuthOptions) (*Auth, *authTestClock) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	clk := &authTestClock{t: time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)}
	a, err := newAuth(opts, authConfig{now: clk.Now, sweepEvery: -1})
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, a.Close()) })
	return a, clk
}

func requireCode(t *testing.T, err error, code Code) *Error {
	t.Helper()
	require.Error(t, err)
	var e *Error
	require.True(t, errors.As(err, &e), "error %v carries no code", err)
	require.Equal(t, code, e.Code, "error: %v", err)
	return e
}

func TestAuthDefaults(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, err := NewAuth(AuthOptions{})
	require.NoError(t, err)
	defer a.Close()
	o := a.Options()
	assert.Equal(t, 10, o.MaxConnectionsPerIP)
	assert.Equal(t, 5, o.MaxQuestionsPerMinute)
	assert.Equal(t, 60, o.MaxQuestionsPerMinutePerIP)
	assert.Equal(t, time.Minute, o.QuestionWindow)
	assert.Equal(t, 2000, o.MaxQuestionLength)
	assert.Equal(t, 8000, o.MaxContextLength)
	assert.Equal(t, 50, o.MaxRoomsPerSocket)
	assert.Same(t, slog.Default(), o.Logger)
	assert.Nil(t, o.RoomPolicy)
	assert.Nil(t, o.TokenVerifier)

	b, err := NewAuth(AuthOptions{MaxConnectionsPerIP: -1, QuestionWindow: -time.Second, MaxQuestionsPerMinute: 7})
	require.NoError(t, err)
	defer b.Close()
	assert.Equal(t, 10, b.Options().MaxConnectionsPerIP)
	assert.Equal(t, time.Minute, b.Options().QuestionWindow)
	assert.Equal(t, 7, b.Options().MaxQuestionsPerMinute)

	for _, bad := range []string{"", "not-an-ip", "10.0.0.0/33", "10.0.0.1/", "1.2.3.4:80"} {
		_, err := NewAuth(AuthOptions{TrustedProxies: []string{"10.0.0.0/8", bad}})
		assert.Error(t, err, "TrustedProxies entry %q", bad)
	}
}

func TestAuthCheckConnectOrder(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	const (
		blocked = "198.51.100.1"
		full    = "198.51.100.2"
		free    = "198.51.100.3"
	)
	verifier := func(_ context.Context, token string) (string, error) {
		switch token {
		case "good":
			return "u42", nil
		case "down":
			return "", fmt.Errorf("jwks: %w", ErrUnavailable)
		}
		return "", errors.New("bad signature")
	}
	a, _ := newTestAuth(t, AuthOptions{MaxConnectionsPerIP: 1, TokenVerifier: verifier})
	ctx := context.Background()
	require.NoError(t, a.BlockIP(ctx, blocked, "abuse", 0))
	_, err := a.CheckConnect(ctx, "filler", full, "good")
	require.NoError(t, err)

	tests := []struct {
		name, addr, token string
		code              Code // "" = admitted
		user              string
	}{
		{"blocked beats missing token", blocked, "", CodeIPBlocked, ""},
		{"blocked beats bad token", blocked, "bad", CodeIPBlocked, ""},
		{"blocked with good token", blocked, "good", CodeIPBlocked, ""},
		{"missing token beats full", full, "", CodeUnauthorized, ""},
		{"bad token beats full", full, "bad", CodeUnauthorized, ""},
		{"full", full, "good", CodeTooManyConnections, ""},
		{"verifier down", free, "down", CodeUnavailable, ""},
		{"bad token", free, "bad", CodeUnauthorized, ""},
		{"admitted", free, "good", "", "u42"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, err := a.CheckConnect(ctx, "sock"+strconv.Itoa(i), tt.addr, tt.token)
			if tt.code == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.user, user)
				return
			}
			e := requireCode(t, err, tt.code)
			assert.Empty(t, user)
			assert.True(t, refusalCounted(err))
			if tt.code == CodeIPBlocked {
				assert.Contains(t, e.Message, "abuse")
			}
		})
	}
	assert.Equal(t, map[Code]uint64{
		CodeIPBlocked: 3, CodeUnauthorized: 3, CodeTooManyConnections: 1,
		CodeUnavailable: 1, CodeRejected: 0,
	}, stats(t, a).Refusals)

	// Without a verifier, tokens are ignored and the blocklist still applies.
	b, _ := newTestAuth(t, AuthOptions{})
	user, err := b.CheckConnect(ctx, "s1", free, "whatever")
	require.NoError(t, err)
	assert.Empty(t, user)
	require.NoError(t, b.BlockIP(ctx, "198.51.100.0/24", "range", 0))
	_, err = b.CheckConnect(ctx, "s2", free, "")
	requireCode(t, err, CodeIPBlocked)

	_, err = b.CheckConnect(ctx, "", free, "")
	assert.Error(t, err)
}

func TestAuthReleaseConnection(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, _ := newTestAuth(t, AuthOptions{MaxConnectionsPerIP: 2})
	ctx := context.Background()
	const addr = "203.0.113.9"
	for _, id := range []string{"a", "b"} {
		_, err := a.CheckConnect(ctx, id, addr, "")
		require.NoError(t, err)
	}
	_, err := a.CheckConnect(ctx, "a", addr, "") // same id: no second slot
	require.NoError(t, err)
	_, err = a.CheckConnect(ctx, "c", addr, "")
	requireCode(t, err, CodeTooManyConnections)

	a.ReleaseConnection(ctx, "a")
	a.ReleaseConnection(ctx, "a")       // idempotent
	a.ReleaseConnection(ctx, "unknown") // no-op
	_, err = a.CheckConnect(ctx, "c", addr, "")
	require.NoError(t, err)
	_, err = a.CheckConnect(ctx, "d", addr, "")
	requireCode(t, err, CodeTooManyConnections)

	// The key is the normalised address: a mapped form shares the slots.
	_, err = a.CheckConnect(ctx, "e", "::ffff:"+addr, "")
	requireCode(t, err, CodeTooManyConnections)

	a.ReleaseConnection(ctx, "b")
	a.ReleaseConnection(ctx, "c")
	st := stats(t, a)
	assert.Zero(t, st.Total)
	assert.Empty(t, st.PerAddress)
}

func TestAuthCheckConnectConcurrent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, _ := newTestAuth(t, AuthOptions{MaxConnectionsPerIP: 10})
	ctx := context.Background()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if _, err := a.CheckConnect(ctx, "sock"+strconv.Itoa(i), "192.0.2.50", ""); err == nil {
				admitted.Add(1)
			} else {
				requireCode(t, err, CodeTooManyConnections)
			}
		}()
	}
	close(start)
	wg.Wait()
	assert.EqualValues(t, 10, admitted.Load())
	st := stats(t, a)
	assert.Equal(t, 10, st.Total)
	assert.Equal(t, map[string]int{"192.0.2.50": 10}, st.PerAddress)
	assert.EqualValues(t, 40, st.Refusals[CodeTooManyConnections])
}

func TestAuthBlocklist(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, clk := newTestAuth(t, AuthOptions{})
	ctx := context.Background()
	blocks := []struct {
		addr, reason string
		ttl          time.Duration
	}{
		{"10.0.0.0/8", "wide", 0},
		{"10.1.0.0/16", "narrow", 0},
		{"10.1.2.3", "single", 0},
		{"10.9.9.9/8", "ignored: same prefix, replaced below", 0},
		{"2001:db8::/32", "v6 range", 0},
		{"2001:db8:1:2::/64", "v6 subnet", time.Hour},
		{"2001:DB8::7", "v6 single", 0},
		{"::ffff:192.0.2.0/120", "mapped range", 0},
		{"203.0.113.7", "short", time.Minute},
	}
	for _, b := range blocks {
		require.NoError(t, a.BlockIP(ctx, b.addr, b.reason, b.ttl), b.addr)
	}
	require.NoError(t, a.BlockIP(ctx, "10.0.0.0/8", "wide", 0)) // replace

	lookups := []struct {
		name, ip, reason string
		blocked          bool
	}{
		{"single beats ranges", "10.1.2.3", "single", true},
		{"/16 beats /8", "10.1.9.9", "narrow", true},
		{"/8", "10.200.0.1", "wide", true},
		{"mapped query", "::ffff:10.1.2.3", "single", true},
		{"outside", "11.0.0.1", "", false},
		{"v6 /64 beats /32", "2001:db8:1:2::99", "v6 subnet", true},
		{"v6 /32", "2001:db8:ffff::1", "v6 range", true},
		{"v6 single", "2001:db8::7", "v6 single", true},
		{"v6 outside", "2001:db9::1", "", false},
		{"mapped block form", "192.0.2.200", "mapped range", true},
		{"ttl not yet expired", "203.0.113.7", "short", true},
	}
	for _, tt := range lookups {
		t.Run(tt.name, func(t *testing.T) {
			reason, blocked, err := a.BlockedReason(ctx, tt.ip)
			require.NoError(t, err)
			assert.Equal(t, tt.blocked, blocked)
			assert.Equal(t, tt.reason, reason)
		})
	}

	// Expiry: the minute-long block lapses, the hour-long one still holds.
	clk.Advance(time.Minute)
	_, blocked, err := a.BlockedReason(ctx, "203.0.113.7")
	require.NoError(t, err)
	assert.False(t, blocked)
	m := a.st().(*memoryAuthState)
	m.blockMu.RLock()
	_, kept := m.singles[netipMust(t, "203.0.113.7")]
	m.blockMu.RUnlock()
	assert.False(t, kept, "expired entry should be dropped on lookup")
	reason, _, _ := a.BlockedReason(ctx, "2001:db8:1:2::1")
	assert.Equal(t, "v6 subnet", reason)
	clk.Advance(time.Hour)
	reason, _, _ = a.BlockedReason(ctx, "2001:db8:1:2::1")
	assert.Equal(t, "v6 range", reason, "expired /64 falls back to /32")

	// Unblock removes exactly one entry; the wider one still applies.
	ok, err := a.UnblockIP(ctx, "10.1.0.0/16")
	require.NoError(t, err)
	assert.True(t, ok)
	reason, _, _ = a.BlockedReason(ctx, "10.1.9.9")
	assert.Equal(t, "wide", reason)
	ok, err = a.UnblockIP(ctx, "10.1.0.0/16")
	require.NoError(t, err)
	assert.False(t, ok)
	ok, _ = a.UnblockIP(ctx, "2001:db8:0:0:0:0:0:7")
	assert.True(t, ok)
	ok, _ = a.UnblockIP(ctx, "203.0.113.7") // expired and dropped
	assert.False(t, ok)

	// Errors.
	for _, bad := range []string{"", "nope", "10.0.0.0/40", "1.2.3"} {
		assert.Error(t, a.BlockIP(ctx, bad, "x", 0), bad)
		_, err := a.UnblockIP(ctx, bad)
		assert.Error(t, err, bad)
	}
	assert.Error(t, a.BlockIP(ctx, "1.2.3.4", "x", -time.Second))
	_, _, err = a.BlockedReason(ctx, "10.0.0.0/8")
	assert.Error(t, err)

	// Expired entries are also dropped by the sweep, without a lookup.
	require.NoError(t, a.BlockIP(ctx, "198.51.100.0/24", "temp", time.Second))
	clk.Advance(time.Second)
	a.sweep()
	m.blockMu.RLock()
	for _, c := range m.cidrs {
		assert.NotEqual(t, "198.51.100.0/24", c.prefix.String())
	}
	m.blockMu.RUnlock()
}

func TestAuthClientAddress(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, _ := newTestAuth(t, AuthOptions{TrustedProxies: []string{"10.0.0.0/8", "192.0.2.1", "2001:db8:ffff::/48"}})
	tests := []struct {
		name   string
		remote string
		xff    []string
		realIP string
		want   string
	}{
		{"no proxy", "203.0.113.5:1234", nil, "", "203.0.113.5"},
		{"untrusted peer: XFF ignored", "203.0.113.5:1234", []string{"198.51.100.7"}, "198.51.100.8", "203.0.113.5"},
		{"trusted peer", "10.0.0.1:80", []string{"198.51.100.7"}, "", "198.51.100.7"},
		{"chain: right-most untrusted", "10.0.0.1:80", []string{"1.1.1.1, 198.51.100.7, 10.0.0.2"}, "", "198.51.100.7"},
		{"chain over several lines", "10.0.0.1:80", []string{"1.1.1.1, 198.51.100.7", "10.0.0.2"}, "", "198.51.100.7"},
		{"all trusted: left-most", "10.0.0.1:80", []string{"10.0.0.3, 10.0.0.2"}, "", "10.0.0.3"},
		{"trusted single address", "192.0.2.1:80", []string{"198.51.100.7"}, "", "198.51.100.7"},
		{"garbage left of client", "10.0.0.1:80", []string{"garbage, 198.51.100.7"}, "", "198.51.100.7"},
		{"garbage on the right: X-Real-IP", "10.0.0.1:80", []string{"198.51.100.7, garbage"}, "198.51.100.9", "198.51.100.9"},
		{"garbage XFF and X-Real-IP: peer", "10.0.0.1:80", []string{"unknown"}, "nope", "10.0.0.1"},
		{"X-Real-IP", "10.0.0.1:80", nil, " 198.51.100.9 ", "198.51.100.9"},
		{"XFF entry with port", "10.0.0.1:80", []string{"198.51.100.7:5555"}, "", "198.51.100.7"},
		{"XFF v6 with port", "10.0.0.1:80", []string{"[2001:db8::9]:80"}, "", "2001:db8::9"},
		{"XFF mapped", "10.0.0.1:80", []string{"::ffff:198.51.100.7"}, "", "198.51.100.7"},
		{"v6 peer", "[2001:db8::1]:443", nil, "", "2001:db8::1"},
		{"v6 peer upper case", "[2001:DB8::1]:443", nil, "", "2001:db8::1"},
		{"v6 trusted peer", "[2001:db8:ffff::1]:443", []string{"2001:db8:1::5"}, "", "2001:db8:1::5"},
		{"mapped peer", "[::ffff:203.0.113.5]:80", nil, "", "203.0.113.5"},
		{"mapped trusted peer", "[::ffff:10.0.0.1]:80", []string{"198.51.100.7"}, "", "198.51.100.7"},
		{"zone dropped", "[fe80::1%eth0]:80", nil, "", "fe80::1"},
		{"peer without port", "203.0.113.5", nil, "", "203.0.113.5"},
		{"unix socket peer", "@", []string{"198.51.100.7"}, "", "0.0.0.0"},
		{"empty peer", "", nil, "", "0.0.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/socket.io/", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if tt.realIP != "" {
				r.Header.Set("X-Real-IP", tt.realIP)
			}
			assert.Equal(t, tt.want, a.ClientAddress(r))
		})
	}
}

func TestAuthReserveQuestionWindow(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, clk := newTestAuth(t, AuthOptions{MaxQuestionsPerMinute: 5})
	ctx := context.Background()
	const addr = "203.0.113.1"
	for range 5 { // at 0s, 10s, … 40s
		_, err := a.ReserveQuestion(ctx, "s1", addr)
		require.NoError(t, err)
		clk.Advance(10 * time.Second)
	}
	steps := []struct {
		advance   time.Duration // before the attempt
		ok        bool
		wantRetry time.Duration
	}{
		{0, false, 10 * time.Second}, // at 50s: the 0s record leaves at 60s
		{9 * time.Second, false, time.Second},
		{time.Second - time.Nanosecond, false, time.Nanosecond},
		{time.Nanosecond, true, 0},   // at 60s: exactly one slot
		{0, false, 10 * time.Second}, // refusals did not count
		{10 * time.Second, true, 0},  // at 70s
		{5 * time.Second, false, 5 * time.Second},
	}
	for i, st := range steps {
		clk.Advance(st.advance)
		release, err := a.ReserveQuestion(ctx, "s1", addr)
		if st.ok {
			require.NoError(t, err, "step %d", i)
			require.NotNil(t, release)
			continue
		}
		e := requireCode(t, err, CodeRateLimited)
		assert.Nil(t, release)
		assert.Equal(t, st.wantRetry, e.RetryAfter, "step %d", i)
		assert.ErrorIs(t, err, ErrRateLimited)
	}
}

func TestAuthReserveQuestionRelease(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, clk := newTestAuth(t, AuthOptions{MaxQuestionsPerMinute: 2})
	ctx := context.Background()
	r1, err := a.ReserveQuestion(ctx, "s1", "203.0.113.1")
	require.NoError(t, err)
	clk.Advance(time.Second)
	r2, err := a.ReserveQuestion(ctx, "s1", "203.0.113.1")
	require.NoError(t, err)
	_, err = a.ReserveQuestion(ctx, "s1", "203.0.113.1")
	requireCode(t, err, CodeRateLimited)

	// Releasing the newer record frees its slot and only that one: the
	// older record still decides RetryAfter.
	r2()
	r2()
	r3, err := a.ReserveQuestion(ctx, "s1", "203.0.113.1")
	require.NoError(t, err)
	e := requireCode(t, func() error { _, err := a.ReserveQuestion(ctx, "s1", "203.0.113.1"); return err }(), CodeRateLimited)
	assert.Equal(t, 59*time.Second, e.RetryAfter)

	r1()
	r3()
	a.sweep()
	s, ad := a.st().(*memoryAuthState).windowCounts()
	assert.Zero(t, s, "emptied windows are dropped by the sweep")
	assert.Zero(t, ad)

	// A release after the record has left the window is harmless.
	r4, err := a.ReserveQuestion(ctx, "s1", "203.0.113.1")
	require.NoError(t, err)
	clk.Advance(time.Minute)
	r5, err := a.ReserveQuestion(ctx, "s1", "203.0.113.1")
	require.NoError(t, err)
	r4()
	_, err = a.ReserveQuestion(ctx, "s1", "203.0.113.1")
	require.NoError(t, err)
	_, err = a.ReserveQuestion(ctx, "s1", "203.0.113.1")
	requireCode(t, err, CodeRateLimited)
	r5()
}

func TestAuthReserveQuestionPerAddress(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, clk := newTestAuth(t, AuthOptions{MaxQuestionsPerMinute: 2, MaxQuestionsPerMinutePerIP: 3})
	ctx := context.Background()
	const ip = "198.51.100.4"
	ask := func(session, addr string) error {
		_, err := a.ReserveQuestion(ctx, session, addr)
		return err
	}
	require.NoError(t, ask("A", ip)) // 0s
	clk.Advance(10 * time.Second)
	require.NoError(t, ask("B", ip)) // 10s
	clk.Advance(10 * time.Second)
	require.NoError(t, ask("B", "::ffff:"+ip)) // 20s, same address
	clk.Advance(10 * time.Second)              // 30s

	tests := []struct {
		name, session, addr string
		code                Code
		retry               time.Duration
	}{
		// A's own window has room; the address is full until 0s+60s.
		{"address limit across sessions", "A", ip, CodeRateLimited, 30 * time.Second},
		{"new session, same address", "C", ip, CodeRateLimited, 30 * time.Second},
		// B: its session frees at 10s+60s, the address at 60s: the max.
		{"retry is max over both", "B", ip, CodeRateLimited, 40 * time.Second},
		{"other address", "D", "198.51.100.5", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ask(tt.session, tt.addr)
			if tt.code == "" {
				require.NoError(t, err)
				return
			}
			e := requireCode(t, err, tt.code)
			assert.Equal(t, tt.retry, e.RetryAfter)
		})
	}
	clk.Advance(30 * time.Second) // 60s: A's record left
	require.NoError(t, ask("C", ip))
	assert.Error(t, ask("", ip))
}

func TestAuthReserveQuestionConcurrent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	tests := []struct {
		name    string
		session func(i int) string
		want    int64
	}{
		{"one session", func(int) string { return "s" }, 5},
		{"many sessions, one address", func(i int) string { return "s" + strconv.Itoa(i) }, 60},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := newTestAuth(t, AuthOptions{})
			var ok atomic.Int64
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range 200 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if _, err := a.ReserveQuestion(context.Background(), tt.session(i), "192.0.2.77"); err == nil {
						ok.Add(1)
					}
				}()
			}
			close(start)
			wg.Wait()
			assert.Equal(t, tt.want, ok.Load())
		})
	}
}

func TestAuthSweepBoundsMemory(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, clk := newTestAuth(t, AuthOptions{})
	ctx := context.Background()
	for i := range 100 {
		_, err := a.ReserveQuestion(ctx, "s"+strconv.Itoa(i), "192.0.2."+strconv.Itoa(i))
		require.NoError(t, err)
	}
	m := a.st().(*memoryAuthState)
	s, ad := m.windowCounts()
	require.Equal(t, 100, s)
	require.Equal(t, 100, ad)
	clk.Advance(time.Minute - time.Nanosecond)
	a.sweep()
	s, _ = m.windowCounts()
	assert.Equal(t, 100, s, "windows still in use are kept")
	clk.Advance(time.Nanosecond)
	a.sweep()
	s, ad = m.windowCounts()
	assert.Zero(t, s)
	assert.Zero(t, ad)
}

func TestAuthCheckRoom(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	caller := Caller{SocketID: "k1", SessionID: "s1", UserID: "u1"}
	ctx := context.Background()
	def, _ := newTestAuth(t, AuthOptions{MaxRoomsPerSocket: 3})
	custom, _ := newTestAuth(t, AuthOptions{RoomPolicy: func(_ context.Context, c Caller, room string) error {
		switch room {
		case "team:" + c.UserID, "private:ok":
			return nil
		case "plain":
			return errors.New("db says no")
		case "coded":
			return NewError(CodeUnavailable, "policy store down")
		}
		return ErrForbidden
	}})
	tests := []struct {
		name   string
		a      *Auth
		room   string
		joined int
		code   Code
	}{
		{"public room", def, "lobby", 0, ""},
		{"below the limit", def, "lobby", 2, ""},
		{"at the limit", def, "lobby", 3, CodeLimitExceeded},
		{"limit before policy", def, "private:x", 3, CodeLimitExceeded},
		{"private forbidden", def, "private:x", 0, CodeForbidden},
		{"private prefix only", def, "x-private:x", 0, ""},
		{"custom allows", custom, "team:u1", 0, ""},
		{"custom allows private", custom, "private:ok", 0, ""},
		{"custom refuses", custom, "team:u2", 0, CodeForbidden},
		{"plain error becomes forbidden", custom, "plain", 0, CodeForbidden},
		{"coded error keeps its code", custom, "coded", 0, CodeUnavailable},
		{"default limit", custom, "team:u1", 50, CodeLimitExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.a.CheckRoom(ctx, caller, tt.room, tt.joined)
			if tt.code == "" {
				assert.NoError(t, err)
				return
			}
			requireCode(t, err, tt.code)
		})
	}
	// A plain error's text stays out of the wire error.
	err := custom.CheckRoom(ctx, caller, "plain", 0)
	assert.NotContains(t, toWireError(err, CodeInternal).Message, "db says no")
}

func TestAuthCheckQuestion(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	var calls atomic.Int64
	a, _ := newTestAuth(t, AuthOptions{QuestionRules: []func(string) error{
		func(q string) error {
			calls.Add(1)
			if q == "spam" {
				return errors.New("looks like spam")
			}
			return nil
		},
		func(q string) error {
			if q == "long" {
				return NewError(CodeQuestionTooLong, "too long for us")
			}
			return nil
		},
	}})
	assert.NoError(t, a.CheckQuestion("what is Go?"))
	requireCode(t, a.CheckQuestion("spam"), CodeQuestionInvalid)
	e := requireCode(t, a.CheckQuestion("long"), CodeQuestionTooLong)
	assert.Equal(t, "too long for us", e.Message)
	assert.EqualValues(t, 3, calls.Load())

	b, _ := newTestAuth(t, AuthOptions{})
	assert.NoError(t, b.CheckQuestion("anything"))
}

func TestAuthCanReadHistory(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, _ := newTestAuth(t, AuthOptions{})
	anon := Caller{SessionID: "s1"}
	user := Caller{SessionID: "s1", UserID: "u1"}
	tests := []struct {
		name   string
		caller Caller
		owner  string
		want   bool
	}{
		{"own session", anon, "s:s1", true},
		{"other session", anon, "s:s2", false},
		{"no user: user scope", anon, "u:", false},
		{"user: own user", user, "u:u1", true},
		{"user: own session", user, "s:s1", true},
		{"user: other user", user, "u:u2", false},
		{"prefix is not enough", user, "u:u10", false},
		{"bare id", anon, "s1", false},
		{"empty owner", anon, "", false},
		{"empty session", Caller{}, "s:", false},
		{"session id as user", anon, "u:s1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, a.CanReadHistory(tt.caller, tt.owner))
		})
	}
}

func TestAuthConnectionStats(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	a, clk := newTestAuth(t, AuthOptions{MaxConnectionsPerIP: 1})
	ctx := context.Background()
	require.NoError(t, a.BlockIP(ctx, "10.0.0.0/8", "range", 0))
	require.NoError(t, a.BlockIP(ctx, "2001:db8::1", "v6", time.Hour))
	require.NoError(t, a.BlockIP(ctx, "192.0.2.9", "gone soon", time.Second))
	for i, addr := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.2", "2001:db8::2", "10.1.1.1"} {
		_, _ = a.CheckConnect(ctx, "k"+strconv.Itoa(i), addr, "")
	}
	a.countRefusal(CodeRejected)
	a.countRefusal(CodeForbidden) // not a connect code: counts as rejected
	a.countRefusal(CodeInternal)  // not counted
	clk.Advance(time.Second)

	st := stats(t, a)
	assert.Equal(t, 3, st.Total)
	assert.Equal(t, map[string]int{"192.0.2.1": 1, "192.0.2.2": 1, "2001:db8::2": 1}, st.PerAddress)
	start := time.Date(2026, 11, 27, 5, 0, 0, 0, time.UTC)
	assert.Equal(t, []BlockedAddress{
		{Addr: "10.0.0.0/8", Reason: "range"},
		{Addr: "2001:db8::1", Reason: "v6", Expires: start.Add(time.Hour)},
	}, st.Blocked)
	assert.Equal(t, map[Code]uint64{
		CodeIPBlocked: 1, CodeTooManyConnections: 1, CodeUnauthorized: 0,
		CodeRejected: 2, CodeUnavailable: 0,
	}, st.Refusals)

	// The snapshot is a copy.
	st.PerAddress["192.0.2.1"] = 99
	assert.Equal(t, 1, stats(t, a).PerAddress["192.0.2.1"])
}

func TestAuthClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	// The real constructor starts a sweeper; Close stops it, twice over.
	a, err := NewAuth(AuthOptions{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	require.NoError(t, a.Close())
	require.NoError(t, a.Close())
	_, err = a.ReserveQuestion(context.Background(), "s", "192.0.2.1")
	assert.NoError(t, err, "an Auth keeps answering after Close")

	// A running sweeper drops idle windows on its own.
	clk := &authTestClock{t: time.Unix(1_800_000_000, 0)}
	swept := make(chan struct{}, 1)
	b, err := newAuth(AuthOptions{Logger: slog.New(slog.DiscardHandler)}, authConfig{
		now:        clk.Now,
		sweepEvery: time.Millisecond,
		afterSweep: func() {
			select {
			case swept <- struct{}{}:
			default:
			}
		},
	})
	require.NoError(t, err)
	defer b.Close()
	_, err = b.ReserveQuestion(context.Background(), "s", "192.0.2.1")
	require.NoError(t, err)
	clk.Advance(time.Minute)
	m := b.st().(*memoryAuthState)
	deadline := time.After(5 * time.Second)
	for {
		if s, _ := m.windowCounts(); s == 0 {
			break
		}
		select {
		case <-deadline:
			t.Fatal("sweeper did not drop the idle window")
		case <-swept:
		}
	}
}

// failingAuthState is a state whose backend is down.
type failingAuthState struct{}

var errStateDown = errors.New("state backend down")

func (failingAuthState) acquireConn(context.Context, string, string, int, time.Time) error {
	return errStateDown
}
func (failingAuthState) releaseConn(context.Context, string) error { return errStateDown }
func (failingAuthState) reserveQuestion(context.Context, string, string, questionLimits, time.Time) (func(), error) {
	return nil, errStateDown
}
func (failingAuthState) block(context.Context, netip.Prefix, string, time.Time) error {
	return errStateDown
}
func (failingAuthState) unblock(context.Context, netip.Prefix, time.Time) (bool, error) {
	return false, errStateDown
}
func (failingAuthState) lookup(context.Context, netip.Addr, time.Time) (string, bool, error) {
	return "", false, errStateDown
}
func (failingAuthState) stats(context.Context, time.Time) (authStats, error) {
	return authStats{}, errStateDown
}
func (failingAuthState) sweep(context.Context, time.Time, time.Duration) error { return errStateDown }

func TestAuthStateUnavailable(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	ok := func(context.Context, string) (string, error) { return "u", nil }
	for _, verifier := range []func(context.Context, string) (string, error){nil, ok} {
		a, err := newAuth(AuthOptions{TokenVerifier: verifier, Logger: slog.New(slog.DiscardHandler)},
			authConfig{state: failingAuthState{}, sweepEvery: -1})
		require.NoError(t, err)
		ctx := context.Background()

		_, err = a.CheckConnect(ctx, "k", "192.0.2.1", "t")
		requireCode(t, err, CodeUnavailable)
		assert.ErrorIs(t, err, errStateDown, "the cause is kept for the log")
		assert.Equal(t, "service unavailable", toWireError(err, CodeRejected).Message)
		_, err = a.ReserveQuestion(ctx, "s", "192.0.2.1")
		requireCode(t, err, CodeUnavailable)
		assert.ErrorIs(t, a.BlockIP(ctx, "192.0.2.1", "", 0), ErrUnavailable)
		_, err = a.UnblockIP(ctx, "192.0.2.1")
		assert.ErrorIs(t, err, ErrUnavailable)
		_, _, err = a.BlockedReason(ctx, "192.0.2.1")
		assert.ErrorIs(t, err, ErrUnavailable)
		a.ReleaseConnection(ctx, "k") // logged, no panic
		a.sweep()
		st, err := a.ConnectionStats(ctx)
		assert.ErrorIs(t, err, ErrUnavailable)
		assert.Zero(t, st.Total)
		assert.NotNil(t, st.PerAddress)
		assert.EqualValues(t, 1, st.Refusals[CodeUnavailable])
		require.NoError(t, a.Close())
	}
}

func BenchmarkAuthCheckConnect(b *testing.B) {
	a, err := NewAuth(AuthOptions{MaxConnectionsPerIP: 1 << 30, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(b, err)
	defer a.Close()
	ctx := context.Background()
	require.NoError(b, a.BlockIP(ctx, "10.0.0.0/8", "range", 0))
	require.NoError(b, a.BlockIP(ctx, "198.51.100.1", "single", 0))
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := n.Add(1)
		id := "sock" + strconv.FormatInt(i, 10)
		addr := "203.0.113." + strconv.FormatInt(i%250, 10)
		for pb.Next() {
			if _, err := a.CheckConnect(ctx, id, addr, ""); err != nil {
				b.Error(err)
				return
			}
			a.ReleaseConnection(ctx, id)
		}
	})
}

func BenchmarkAuthReserveQuestion(b *testing.B) {
	a, err := NewAuth(AuthOptions{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(b, err)
	defer a.Close()
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := n.Add(1)
		session := "s" + strconv.FormatInt(i, 10)
		addr := "203.0.113." + strconv.FormatInt(i%250, 10)
		for pb.Next() {
			release, err := a.ReserveQuestion(ctx, session, addr)
			if err != nil {
				b.Error(err)
				return
			}
			release()
		}
	})
}

func netipMust(t *testing.T, s string) netip.Addr {
	t.Helper()
	ip, err := netip.ParseAddr(s)
	require.NoError(t, err)
	return ip
}

func TestAuthRateWindowOutOfOrder(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	// Callers read the clock before taking the lock, so records may arrive
	// slightly out of order; the window keeps them sorted.
	t0 := time.Unix(1_800_000_000, 0)
	var w rateWindow
	for i, s := range []int{0, 3, 1, 2} {
		w.add(rateRecord{at: t0.Add(time.Duration(s) * time.Second), id: uint64(i)})
	}
	var ids []uint64
	for _, r := range w.recs {
		ids = append(ids, r.id)
	}
	assert.Equal(t, []uint64{0, 2, 3, 1}, ids)
	// Four records, limit 3: two must leave; the second (1s) leaves at 61s.
	assert.Equal(t, 56*time.Second, w.wait(t0.Add(5*time.Second), time.Minute, 3))
	w.prune(t0.Add(61*time.Second), time.Minute)
	assert.Len(t, w.recs, 2)
}

// stats reads a's connection statistics.
func stats(t *testing.T, a *Auth) ConnectionStats {
	t.Helper()
	st, err := a.ConnectionStats(context.Background())
	require.NoError(t, err)
	return st
}

// TestAuthFailOpenConnects: with the shared state down, FailOpenConnects
// admits connections uncounted, but a token verifier still decides.
func TestAuthFailOpenConnects(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	verify := func(_ context.Context, token string) (string, error) {
		if token == "good" {
			return "u1", nil
		}
		return "", errors.New("bad token")
	}
	cases := []struct {
		name     string
		verifier func(context.Context, string) (string, error)
		token    string
		user     string
		code     Code
	}{
		{"no verifier: admitted", nil, "", "", ""},
		{"verified token: admitted as its user", verify, "good", "u1", ""},
		{"rejected token: still refused", verify, "bad", "", CodeUnauthorized},
		{"missing token: still refused", verify, "", "", CodeUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := newAuth(AuthOptions{TokenVerifier: tc.verifier, FailOpenConnects: true, Logger: slog.New(slog.DiscardHandler)},
				authConfig{state: failingAuthState{}, sweepEvery: -1})
			require.NoError(t, err)
			defer a.Close()
			user, err := a.CheckConnect(context.Background(), "k", "192.0.2.1", tc.token)
			if tc.code != "" {
				requireCode(t, err, tc.code)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.user, user)
		})
	}
}
