package redisurl

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseRedisURL(t *testing.T) {
	tests := []struct {
		url  string
		want func(t *testing.T, r Target)
		err  string
	}{
		{"redis://127.0.0.1:6379/2", func(t *testing.T, r Target) {
			require.NotNil(t, r.single)
			assert.Equal(t, "127.0.0.1:6379", r.single.Addr)
			assert.Equal(t, 2, r.single.DB)
		}, ""},
		{"rediss://:pw@redis.example:6380", func(t *testing.T, r Target) {
			require.NotNil(t, r.single)
			assert.Equal(t, "pw", r.single.Password)
			assert.NotNil(t, r.single.TLSConfig)
		}, ""},
		{"redis+sentinel://:spw@10.0.0.1:26379/1?master_name=mymaster&addr=10.0.0.2:26379&password=mpw", func(t *testing.T, r Target) {
			require.NotNil(t, r.sentinel)
			assert.Equal(t, "mymaster", r.sentinel.MasterName)
			assert.Equal(t, []string{"10.0.0.1:26379", "10.0.0.2:26379"}, r.sentinel.SentinelAddrs)
			assert.Equal(t, 1, r.sentinel.DB)
			assert.Equal(t, "spw", r.sentinel.SentinelPassword)
			assert.Equal(t, "mpw", r.sentinel.Password)
			assert.Nil(t, r.sentinel.TLSConfig)
		}, ""},
		{"rediss+sentinel://10.0.0.1:26379?master_name=m", func(t *testing.T, r Target) {
			require.NotNil(t, r.sentinel)
			assert.NotNil(t, r.sentinel.TLSConfig)
		}, ""},
		{"redis+cluster://u:pw@10.0.0.1:7000?addr=10.0.0.2:7001&addr=10.0.0.3:7002&read_timeout=2s", func(t *testing.T, r Target) {
			require.NotNil(t, r.cluster)
			assert.Equal(t, []string{"10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:7002"}, r.cluster.Addrs)
			assert.Equal(t, "u", r.cluster.Username)
			assert.Equal(t, "pw", r.cluster.Password)
			assert.Equal(t, 2*time.Second, r.cluster.ReadTimeout)
		}, ""},
		{"rediss+cluster://10.0.0.1:7000", func(t *testing.T, r Target) {
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
			r, err := Parse(tt.url)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			tt.want(t, r)
		})
	}
}
