package main

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServiceOnSentinelAndCluster starts the demo on the deployments of
// testdata/redis-topologies/run.sh, named in the documented URL forms.
func TestServiceOnSentinelAndCluster(t *testing.T) {
	tests := []struct {
		name string
		url  func(t *testing.T) string
	}{
		{"sentinel", func(t *testing.T) string {
			addrs := envAddrs(t, "REDIS_SENTINEL_ADDRS")
			master := os.Getenv("REDIS_SENTINEL_MASTER")
			if master == "" {
				master = "mymaster"
			}
			u := "redis+sentinel://" + addrs[0] + "?master_name=" + master
			for _, a := range addrs[1:] {
				u += "&addr=" + a
			}
			return u
		}},
		{"cluster", func(t *testing.T) string {
			addrs := envAddrs(t, "REDIS_CLUSTER_ADDRS")
			u := "redis+cluster://" + addrs[0]
			for i, a := range addrs[1:] {
				sep := "&"
				if i == 0 {
					sep = "?"
				}
				u += sep + "addr=" + a
			}
			return u
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := tt.url(t)
			prefix := "qa-server-test:" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "") + ":"
			cfg, err := parseConfig([]string{"-redis-url", url, "-redis-prefix", prefix, "-cluster-key", prefix + "sio"},
				func(string) string { return "" })
			require.NoError(t, err)
			hs := serve(t, cfg)
			require.Eventually(t, func() bool {
				resp, err := http.Get(hs.URL + "/healthz")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == http.StatusOK
			}, 10*time.Second, 50*time.Millisecond, "/healthz")
			resp, err := http.Get(hs.URL + "/socket.io/?EIO=4&transport=polling")
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Contains(t, string(body), `"sid"`)
		})
	}
}

// envAddrs returns the comma-separated addresses in the environment
// variable name, or skips t when it is unset.
func envAddrs(t *testing.T, name string) []string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Skip(name + " is not set: testdata/redis-topologies/run.sh sets it")
	}
	return strings.Split(v, ",")
}
