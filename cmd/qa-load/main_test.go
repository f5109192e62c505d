package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio/internal/sioclient"
)

func TestCompareInProcess(t *testing.T) {
	for _, tr := range []string{sioclient.TransportWebsocket, sioclient.TransportPolling} {
		t.Run(tr, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			cfg := config{clients: 4, duration: time.Second, rounds: 2, transport: tr, timeout: 5 * time.Second}
			rep, err := compare(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			require.NoError(t, err)
			for _, tg := range []target{rep.bare, rep.library} {
				assert.Positive(t, tg.stats.ok, tg.name)
				assert.Zero(t, tg.stats.errors, "%s: first error: %v", tg.name, tg.stats.firstErr)
				assert.Positive(t, tg.stats.hist.total, tg.name)
				assert.Positive(t, tg.stats.elapsed, tg.name)
			}
			var out bytes.Buffer
			require.NoError(t, rep.write(&out))
			assert.Contains(t, out.String(), "ratio library/bare: ")
			assert.Contains(t, out.String(), "requests/s")
		})
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"defaults", nil, true},
		{"loopback IPv4 target", []string{"-target", "http://127.0.0.1:8080"}, true},
		{"loopback IPv6 target", []string{"-target", "ws://[::1]:8080", "-bare-target", "http://localhost:9"}, true},
		{"polling", []string{"-transport", "polling", "-clients", "1", "-duration", "1s"}, true},
		{"remote target", []string{"-target", "http://example.com"}, false},
		{"private address", []string{"-bare-target", "http://10.0.0.1:8080"}, false},
		{"unspecified address", []string{"-target", "http://0.0.0.0:8080"}, false},
		{"bad scheme", []string{"-target", "ftp://127.0.0.1"}, false},
		{"too many clients", []string{"-clients", "1001"}, false},
		{"no clients", []string{"-clients", "0"}, false},
		{"too long", []string{"-duration", "11m"}, false},
		{"unknown transport", []string{"-transport", "webtransport"}, false},
		{"extra argument", []string{"now"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, io.Discard)
			if !tt.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Positive(t, cfg.clients)
		})
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	assert.Zero(t, h.quantile(0.5))
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		want := time.Duration(q*1000) * time.Microsecond
		got := h.quantile(q)
		assert.InEpsilon(t, float64(want), float64(got), 1.0/32, "q=%v: got %s, want %s", q, got, want)
	}
	for _, d := range []time.Duration{0, 1, 31, 32, 63, 64, 1000, time.Hour, 1<<63 - 1} {
		i := histBucket(d)
		require.Less(t, i, len(h.counts), d)
		assert.InEpsilon(t, float64(max(d, 1)), float64(max(histValue(i), 1)), 1.0/32, "d=%d", d)
	}
}
