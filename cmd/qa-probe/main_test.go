package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    []string
		wantErr string
	}{
		{"defaults", []string{"-server", "/bin/qa"}, order, ""},
		{"some", []string{"-server", "/bin/qa", "-scenarios", "never-read,frame-100mb"}, []string{"never-read", "frame-100mb"}, ""},
		{"no server", nil, nil, "-server is required"},
		{"unknown", []string{"-server", "/bin/qa", "-scenarios", "nope"}, nil, `unknown scenario "nope"`},
		{"bad duration", []string{"-server", "/bin/qa", "-duration", "0s"}, nil, "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parse(tt.args)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, c.scenarios)
			assert.Equal(t, 30*time.Second, c.duration)
		})
	}
}

func TestRSSOfThisProcess(t *testing.T) {
	n, err := rss(selfPID())
	require.NoError(t, err)
	assert.Greater(t, n, int64(1<<20))
}
