package envflag

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestEnv(t *testing.T) {
	vars := map[string]string{"S": "x", "I": "7", "D": "2s", "BAD_I": "seven", "BAD_D": "soon"}
	e := &Env{Getenv: func(k string) string { return vars[k] }}
	assert.Equal(t, "x", e.String("S", "def"))
	assert.Equal(t, "def", e.String("UNSET", "def"))
	assert.Equal(t, 7, e.Int("I", 1))
	assert.Equal(t, 1, e.Int("UNSET", 1))
	assert.Equal(t, 2*time.Second, e.Duration("D", time.Second))
	assert.Equal(t, time.Second, e.Duration("UNSET", time.Second))
	assert.NoError(t, e.Err())
	assert.Equal(t, 1, e.Int("BAD_I", 1))
	assert.Equal(t, time.Second, e.Duration("BAD_D", time.Second))
	assert.ErrorContains(t, e.Err(), "BAD_I")
	assert.ErrorContains(t, e.Err(), "BAD_D")
}
