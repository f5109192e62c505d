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

func TestParseRedisURL(t *testing.T) {
	tests := []struct {
		url  string
		want func(t *testing.T, r redisTarget)
		err  string
	}{
		{"redis://127.0.0.1:6379/2", func(t *testing.T, r redisTarget) {
			require.NotNil(t, r.single)
			assert.Equal(t, "127.0.0.1:6379", r.single.Addr)
			assert.Equal(t, 2, r.single.DB)
		}, ""},
		{"rediss://:pw@redis.example:6380", func(t *testing.T, r redisTarget) {
			require.NotNil(t, r.single)
			assert.Equal(t, "pw", r.single.Password)
			assert.NotNil(t, r.single.TLSConfig)
		}, ""},
		{"redis+sentinel://:spw@10.0.0.1:26379/1?master_name=mymaster&addr=10.0.0.2:26379&password=mpw", func(t *testing.T, r redisTarget) {
			require.NotNil(t, r.sentinel)
			assert.Equal(t, "mymaster", r.sentinel.MasterName)
			assert.Equal(t, []string{"10.0.0.1:26379", "10.0.0.2:26379"}, r.sentinel.SentinelAddrs)
			assert.Equal(t, 1, r.sentinel.DB)
			assert.Equal(t, "spw", r.sentinel.SentinelPassword)
			assert.Equal(t, "mpw", r.sentinel.Password)
			assert.Nil(t, r.sentinel.TLSConfig)
		}, ""},
		{"rediss+sentinel://10.0.0.1:26379?master_name=m", func(t *testing.T, r redisTarget) {
			require.NotNil(t, r.sentinel)
			assert.NotNil(t, r.sentinel.TLSConfig)
		}, ""},
		{"redis+cluster://u:pw@10.0.0.1:7000?addr=10.0.0.2:7001&addr=10.0.0.3:7002&read_timeout=2s", func(t *testing.T, r redisTarget) {
			require.NotNil(t, r.cluster)
			assert.Equal(t, []string{"10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:7002"}, r.cluster.Addrs)
			assert.Equal(t, "u", r.cluster.Username)
			assert.Equal(t, "pw", r.cluster.Password)
			assert.Equal(t, 2*time.Second, r.cluster.ReadTimeout)
		}, ""},
		{"rediss+cluster://10.0.0.1:7000", func(t *testing.T, r redisTarget) {
			require.NotNil(t, r.cluster)
			assert.NotNil(t, r.cluster.TLSConfig)
		}, ""},
		{"redis+sentinel://10.0.0.1:26379", nil, "master_name"},
		{"redis+cluster://10.0.0.1:7000?nope=1", nil, "unexpected option"},
		{"redis+ring://10.0.0.1:7000", nil, "unknown scheme"},
		{"http://10.0.0.1:7000", nil, "unknown scheme"},
		{"127.0.0.1:6379", nil, "not a URL"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			r, err := parseRedisURL(tt.url)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			tt.want(t, r)
		})
	}
}

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
