package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio/internal/redistest"
)

// The Sentinel test's failover client resolves a placeholder address (see
// redistest.IgnoreDNSLookups).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, redistest.IgnoreDNSLookups()...) }

func TestParseConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string {
		return func(k string) string { return m[k] }
	}
	cases := []struct {
		name string
		args []string
		env  map[string]string
		want func(t *testing.T, c config)
		err  bool
	}{
		{"defaults", nil, nil, func(t *testing.T, c config) {
			assert.Equal(t, "127.0.0.1:8080", c.addr)
			assert.Equal(t, 10, c.maxConnsPerIP)
			assert.Equal(t, 5, c.maxQPerMin)
			assert.Equal(t, 60, c.maxQPerMinPerIP)
			assert.Zero(t, c.answerDelay)
			assert.Empty(t, c.redisURL)
		}, false},
		{"env twins", nil, map[string]string{
			"QA_ADDR": "127.0.0.1:9", "QA_MAX_CONNECTIONS_PER_IP": "3", "QA_MAX_QUESTIONS_PER_MINUTE": "7",
			"QA_MAX_QUESTIONS_PER_MINUTE_PER_IP": "70", "QA_SECRET": "s3", "QA_ANSWER_DELAY": "30ms",
			"REDIS_URL": "redis://127.0.0.1:6379/2",
		}, func(t *testing.T, c config) {
			assert.Equal(t, "127.0.0.1:9", c.addr)
			assert.Equal(t, 3, c.maxConnsPerIP)
			assert.Equal(t, 7, c.maxQPerMin)
			assert.Equal(t, 70, c.maxQPerMinPerIP)
			assert.Equal(t, []byte("s3"), c.secrets.resume)
			assert.Equal(t, 30*time.Millisecond, c.answerDelay)
			assert.Equal(t, "redis://127.0.0.1:6379/2", c.redisURL)
		}, false},
		{"flags win over env", []string{"-addr", "127.0.0.1:1", "-answer-delay", "1s"},
			map[string]string{"QA_ADDR": "127.0.0.1:9", "QA_ANSWER_DELAY": "30ms"}, func(t *testing.T, c config) {
				assert.Equal(t, "127.0.0.1:1", c.addr)
				assert.Equal(t, time.Second, c.answerDelay)
			}, false},
		{"bad env number", nil, map[string]string{"QA_MAX_CONNECTIONS_PER_IP": "ten"}, nil, true},
		{"bad env duration", nil, map[string]string{"QA_ANSWER_DELAY": "soon"}, nil, true},
		{"unknown flag", []string{"-nope"}, nil, nil, true},
		{"queue: memory without Redis", nil, nil, func(t *testing.T, c config) {
			assert.Equal(t, "memory", c.queue)
			assert.Equal(t, 16, c.workers)
		}, false},
		{"queue: redis with Redis", []string{"-redis-url", "redis://127.0.0.1:6379"}, map[string]string{"QA_WORKERS": "0", "QA_CLAIM_AFTER": "2s"}, func(t *testing.T, c config) {
			assert.Equal(t, "redis", c.queue)
			assert.Zero(t, c.workers)
			assert.Equal(t, 2*time.Second, c.claimAfter)
		}, false},
		{"queue: memory asked for with Redis", []string{"-redis-url", "redis://127.0.0.1:6379", "-queue", "memory"}, nil, func(t *testing.T, c config) {
			assert.Equal(t, "memory", c.queue)
		}, false},
		{"no workers without the Redis queue", []string{"-workers", "0"}, nil, nil, true},
		{"the Redis queue without Redis", []string{"-queue", "redis"}, nil, nil, true},
		{"an unknown queue", []string{"-queue", "kafka"}, nil, nil, true},
		{"negative workers", []string{"-workers", "-1", "-redis-url", "redis://127.0.0.1:6379"}, nil, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args, env(tc.env))
			if tc.err {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			tc.want(t, c)
		})
	}
}

// serve runs the demo service built from cfg on an httptest server, closed
// (and the service shut down) when the test ends.
func serve(t *testing.T, cfg config) *httptest.Server {
	t.Helper()
	svc, handler, err := newService(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	hs := httptest.NewServer(handler)
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		assert.NoError(t, svc.Close(ctx))
	})
	return hs
}

// TestServiceServesPageClientAndEndpoint checks the demo serves its page,
// the Socket.IO client script (from the binary) and the endpoint.
func TestServiceServesPageClientAndEndpoint(t *testing.T) {
	cfg, err := parseConfig(nil, func(string) string { return "" })
	require.NoError(t, err)
	hs := serve(t, cfg)
	for path, want := range map[string]string{
		"/":                                   "<html",
		"/static/socket.io.min.js":            "Socket.IO",
		"/healthz":                            "ok",
		"/socket.io/?EIO=4&transport=polling": `"sid"`,
	} {
		resp, err := http.Get(hs.URL + path)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.Contains(t, string(body), want, path)
	}
}

func TestBadRedisURLFailsAtStart(t *testing.T) {
	cfg, err := parseConfig([]string{"-redis-url", "redis://127.0.0.1:1/0"}, func(string) string { return "" })
	require.NoError(t, err)
	_, _, err = newService(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.ErrorContains(t, err, "does not answer")
}

// TestStaticBadPaths: a static path that cannot name a file (invalid
// UTF-8, a NUL) is a client error, never a 500.
func TestStaticBadPaths(t *testing.T) {
	cfg, err := parseConfig(nil, func(string) string { return "" })
	require.NoError(t, err)
	hs := serve(t, cfg)
	for _, path := range []string{"/static/%ff", "/static/a%ffb.js", "/static/%c3", "/static/%00", "/static/x%00.js", "/static/nope.js"} {
		resp, err := http.Get(hs.URL + path)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Contains(t, []int{http.StatusBadRequest, http.StatusNotFound}, resp.StatusCode, path)
	}
}

// TestReadyz: /readyz is 200 while storage, auth and the cluster answer,
// and 503 naming what is down while Redis is stopped; /healthz stays the
// liveness check.
func TestReadyz(t *testing.T) {
	mr := miniredis.RunT(t)
	cfg, err := parseConfig([]string{"-redis-url", "redis://" + mr.Addr() + "/0"}, func(string) string { return "" })
	require.NoError(t, err)
	svc, handler, err := newService(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	hs := httptest.NewServer(handler)
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Close(ctx) // Redis may have been down: closing may report it
	})
	get := func(path string) (int, string) {
		resp, err := http.Get(hs.URL + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	require.Eventually(t, func() bool { code, _ := get("/readyz"); return code == http.StatusOK }, 5*time.Second, 20*time.Millisecond)
	_, body := get("/readyz")
	assert.Equal(t, "ok\n", body)

	mr.Close()
	code, body := get("/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "storage: ")
	assert.Contains(t, body, "auth: ")

	// Once Redis is back, the storage, the auth store and the cluster
	// adapter's stream reader answer again (redistest.Restart: a plain
	// miniredis Restart leaves blocking reads unanswered).
	require.NoError(t, redistest.Restart(mr))
	require.Eventually(t, func() bool {
		code, _ := get("/readyz")
		return code == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "/readyz is 200 again")
}
