package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

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
		{"defaults", []string{"-redis-url", "redis://127.0.0.1:6379"}, nil, func(t *testing.T, c config) {
			assert.Equal(t, "qa:", c.redisPrefix)
			assert.Equal(t, 30*time.Second, c.claimAfter)
			assert.Equal(t, 16, c.concurrency)
			assert.Equal(t, 2*time.Minute, c.answerTimeout)
			assert.Equal(t, 10*time.Second, c.shutdownTimeout)
		}, false},
		{"qa-server's env names", nil, map[string]string{
			"REDIS_URL": "redis://127.0.0.1:6379/1", "QA_REDIS_PREFIX": "p:", "QA_ANSWER_DELAY": "20ms",
			"QA_CLAIM_AFTER": "2s", "QA_WORKER_CONCURRENCY": "4", "QA_WORKER_NAME": "w1",
		}, func(t *testing.T, c config) {
			assert.Equal(t, "redis://127.0.0.1:6379/1", c.redisURL)
			assert.Equal(t, "p:", c.redisPrefix)
			assert.Equal(t, 20*time.Millisecond, c.answerDelay)
			assert.Equal(t, 2*time.Second, c.claimAfter)
			assert.Equal(t, 4, c.concurrency)
			assert.Equal(t, "w1", c.name)
		}, false},
		{"flags win", []string{"-redis-url", "redis://a:1", "-concurrency", "2"}, map[string]string{"REDIS_URL": "redis://b:2", "QA_WORKER_CONCURRENCY": "4"}, func(t *testing.T, c config) {
			assert.Equal(t, "redis://a:1", c.redisURL)
			assert.Equal(t, 2, c.concurrency)
		}, false},
		{"no Redis", nil, nil, nil, true},
		{"no concurrency", []string{"-redis-url", "redis://a:1", "-concurrency", "0"}, nil, nil, true},
		{"bad env duration", []string{"-redis-url", "redis://a:1"}, map[string]string{"QA_CLAIM_AFTER": "soon"}, nil, true},
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

// TestNewWorker starts the worker qa-worker runs on a miniredis, and stops
// it; a model server setting without a model is refused.
func TestNewWorker(t *testing.T) {
	mr := miniredis.RunT(t)
	cfg, err := parseConfig([]string{"-redis-url", "redis://" + mr.Addr()}, func(string) string { return "" })
	require.NoError(t, err)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, closeAll, err := newWorker(cfg, func(string) string { return "" }, logger)
	require.NoError(t, err)
	assert.NotEmpty(t, w.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, w.Close(ctx))
	closeAll()

	_, _, err = newWorker(cfg, func(k string) string {
		if k == "QA_LLM_BASE_URL" {
			return "http://127.0.0.1:1/v1"
		}
		return ""
	}, logger)
	assert.ErrorContains(t, err, "QA_LLM_MODEL")
}
