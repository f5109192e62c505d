package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
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

// buildBinaries builds qa-server and qa-worker into a temporary directory,
// or skips the test when this tree has no qa-worker yet.
func buildBinaries(t *testing.T) (server, worker string) {
	t.Helper()
	if _, err := os.Stat("../qa-worker"); err != nil {
		t.Skip("cmd/qa-worker is not in this tree yet: ", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build the binaries: ", err)
	}
	dir := t.TempDir()
	for _, name := range []string{"qa-server", "qa-worker"} {
		out, err := exec.Command(goBin, "build", "-o", filepath.Join(dir, name), "../"+name).CombinedOutput()
		require.NoError(t, err, "go build %s: %s", name, out)
	}
	return filepath.Join(dir, "qa-server"), filepath.Join(dir, "qa-worker")
}

func TestAnswersMode(t *testing.T) {
	server, worker := buildBinaries(t)
	redises := map[string]func(t *testing.T) string{
		"miniredis": func(t *testing.T) string { return "redis://" + miniredis.RunT(t).Addr() },
		"real": func(t *testing.T) string {
			u := os.Getenv("REDIS_URL")
			if u == "" {
				t.Skip("REDIS_URL is not set: skipping the real Redis pass")
			}
			if err := checkRedisLoopback(u); err != nil {
				t.Skip("qa-load loads only a loopback Redis: ", err)
			}
			return u
		},
	}
	for name, redisURL := range redises {
		t.Run(name, func(t *testing.T) {
			// Registered before miniredis's, so checked after it stopped.
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
			u := redisURL(t)
			args := []string{"-mode", "answers", "-server", server, "-worker", worker, "-redis-url", u,
				"-answer-delay", "5ms", "-clients", "4", "-worker-counts", "1", "-rounds", "1",
				"-duration", "1500ms", "-latency-duration", "2s", "-latency-clients", "2", "-warmup", "300ms"}
			cfg, err := parseConfig(args, io.Discard)
			require.NoError(t, err)
			rep, err := runAnswers(context.Background(), cfg)
			require.NoError(t, err)
			require.Len(t, rep.throughput, 1)
			for _, p := range []*phaseResult{rep.throughput[0], &rep.baseline, &rep.queued} {
				assert.Positive(t, p.stats.ok, "answers with %d workers", p.workers)
				assert.Zero(t, p.stats.errors, "%d workers: first error: %v", p.workers, p.stats.firstErr)
			}
			assert.Positive(t, rep.throughput[0].workCPU+rep.throughput[0].nodeCPU, "CPU time of the node and the worker")

			for _, markdown := range []bool{false, true} {
				rep.cfg.answers.markdown = markdown
				var out bytes.Buffer
				require.NoError(t, rep.write(&out))
				m := regexp.MustCompile(`(\d+\.\d+)×`).FindStringSubmatch(out.String())
				require.NotNil(t, m, "no ratio in:\n%s", out.String())
				ratio, err := strconv.ParseFloat(m[1], 64)
				require.NoError(t, err)
				assert.InDelta(t, 1, ratio, 1e-9, "one worker against itself")
				assert.Regexp(t, `queue adds: p50 [+-]\S+, p99 [+-]\S+`, out.String())
			}
			require.NotEmpty(t, rep.prefix)
			// The run deleted its keys.
			opts, err := redis.ParseURL(u)
			require.NoError(t, err)
			rdb := redis.NewClient(opts)
			defer rdb.Close()
			keys, err := rdb.Keys(context.Background(), rep.prefix+"*").Result()
			require.NoError(t, err)
			assert.Empty(t, keys)
		})
	}
}

func TestParseAnswersConfig(t *testing.T) {
	base := []string{"-mode", "answers", "-server", "/bin/s", "-worker", "/bin/w", "-redis-url", "redis://127.0.0.1:6379"}
	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"minimal", nil, true},
		{"localhost redis", []string{"-redis-url", "redis://localhost:6379/2"}, true},
		{"worker counts", []string{"-worker-counts", "1, 2,4"}, true},
		{"remote redis", []string{"-redis-url", "redis://10.1.2.3:6379"}, false},
		{"cluster redis", []string{"-redis-url", "redis+cluster://127.0.0.1:7000"}, false},
		{"too many workers", []string{"-worker-counts", "1,9"}, false},
		{"no workers", []string{"-worker-counts", "0"}, false},
		{"bad counts", []string{"-worker-counts", "one"}, false},
		{"four open", []string{"-open-per-client", "4"}, false},
		{"no concurrency", []string{"-concurrency", "0"}, false},
		{"target", []string{"-target", "http://127.0.0.1:1"}, false},
		{"unknown mode", []string{"-mode", "fast"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(append(append([]string(nil), base...), tt.args...), io.Discard)
			if tt.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
	_, err := parseConfig([]string{"-mode", "answers"}, io.Discard)
	require.Error(t, err, "binaries and Redis are required")
}

func TestParseStatCPU(t *testing.T) {
	// Fields 14 and 15 are utime 250 and stime 50 ticks; the name holds
	// a space and a parenthesis.
	stat := "4242 (qa (srv) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 0 0\n"
	d, err := parseStatCPU([]byte(stat))
	require.NoError(t, err)
	assert.Equal(t, 3*time.Second, d)
	_, err = parseStatCPU([]byte("4242 (x) S 1"))
	require.Error(t, err)

	self, err := procCPU(os.Getpid())
	if err != nil {
		t.Skip("no /proc: ", err)
	}
	assert.GreaterOrEqual(t, self, time.Duration(0))
}

func TestPhaseQuantile(t *testing.T) {
	var p phaseResult
	assert.Zero(t, p.quantile(0.5))
	for _, ms := range []int{5, 1, 4, 2, 3} {
		var one phaseResult
		one.samples = []time.Duration{time.Duration(ms) * time.Millisecond}
		p.add(one)
	}
	assert.Equal(t, 3*time.Millisecond, p.quantile(0.5))
	assert.Equal(t, 5*time.Millisecond, p.quantile(0.99))
	assert.Equal(t, time.Millisecond, p.quantile(0.01))
	assert.Equal(t, []time.Duration{5e6, 1e6, 4e6, 2e6, 3e6}, p.samples, "quantile does not reorder the samples")
}
