package socketio_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// resumes reports whether token resumes session on ts.
func resumes(t *testing.T, ts *testServer, token, session any) bool {
	t.Helper()
	c, got := ts.dial(t, sioclient.TransportWebsocket, withAuth(map[string]any{"resume": token}))
	require.NoError(t, c.Close())
	ok := got["resumed"] == true
	assert.Equal(t, ok, got["session_id"] == session, "resumed %v with session %v, want %v", got["resumed"], got["session_id"], session)
	return ok
}

func TestWireResumeSecretRotation(t *testing.T) {
	store := socketio.NewMemoryStorage(socketio.StorageOptions{})
	t.Cleanup(func() { store.Close() })
	s1, s2 := []byte("the old secret, thirty-two bytes"), []byte("the new secret, thirty-two bytes")
	old := startServer(t, socketio.Options{Storage: store, Secret: s1})
	rotated := startServer(t, socketio.Options{Storage: store, Secret: s2, PreviousSecrets: [][]byte{s1}})
	newOnly := startServer(t, socketio.Options{Storage: store, Secret: s2})

	_, first := old.dial(t, sioclient.TransportWebsocket)
	// A token of the previous secret still resumes where it is accepted…
	c, again := rotated.dial(t, sioclient.TransportPolling, withAuth(map[string]any{"resume": first["resume_token"]}))
	require.NoError(t, c.Close())
	assert.Equal(t, true, again["resumed"])
	assert.Equal(t, first["session_id"], again["session_id"])
	assert.False(t, resumes(t, newOnly, first["resume_token"], first["session_id"]), "the old secret is not accepted here")
	// …and the token issued in its place is signed by the current one.
	assert.True(t, resumes(t, newOnly, again["resume_token"], first["session_id"]))
	assert.False(t, resumes(t, old, again["resume_token"], first["session_id"]))
}

func TestWireResumeTokenExpires(t *testing.T) {
	// Tokens carry their expiry in whole seconds, rounded down: a lifetime
	// of a nanosecond has run out when the token comes back.
	short := startServer(t, socketio.Options{ResumeTokenTTL: time.Nanosecond})
	_, first := short.dial(t, sioclient.TransportWebsocket)
	assert.False(t, resumes(t, short, first["resume_token"], first["session_id"]))

	long := startServer(t, socketio.Options{})
	_, first = long.dial(t, sioclient.TransportWebsocket)
	assert.True(t, resumes(t, long, first["resume_token"], first["session_id"]))
}

// TestRedisSharedSecretConverges is issue 8 item 5: after Redis lost its
// data, a node started afterwards stored a new shared secret while the
// older nodes kept theirs, and tokens did not cross between them.
func TestRedisSharedSecretConverges(t *testing.T) {
	for name, backend := range redisBackends(t) {
		t.Run(name, func(t *testing.T) {
			r := backend(t)
			manual := socketio.WithSecretRefresh(socketio.Options{}, time.Hour) // refreshed by hand below
			a, b := r.node(t, manual), r.node(t, manual)
			kidA, _ := socketio.ResumeKeyIDs(a.QA)
			kidB, _ := socketio.ResumeKeyIDs(b.QA)
			require.Equal(t, kidA, kidB, "nodes started on one Redis share a secret")

			r.lose(t)
			c := r.node(t, manual)
			kidC, _ := socketio.ResumeKeyIDs(c.QA)
			require.NotEqual(t, kidA, kidC, "the node started after the loss stored a secret of its own")

			nodes := []*testServer{a, b, c}
			type issued struct{ token, session any }
			var tokens []issued
			for _, n := range nodes {
				_, hello := n.dial(t, sioclient.TransportWebsocket)
				tokens = append(tokens, issued{hello["resume_token"], hello["session_id"]})
			}
			require.False(t, resumes(t, c, tokens[0].token, tokens[0].session), "before converging, the new node refuses the old nodes' tokens")

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for _, n := range nodes {
				require.NoError(t, socketio.RefreshSharedSecret(ctx, n.QA))
			}
			for _, n := range nodes {
				kid, previous := socketio.ResumeKeyIDs(n.QA)
				assert.Equal(t, kidC, kid, "every node signs with the stored secret")
				assert.Contains(t, previous, kidA, "and accepts the one it replaced")
			}
			for i, tok := range tokens {
				for j, n := range nodes {
					assert.True(t, resumes(t, n, tok.token, tok.session), "token of node %d on node %d", i, j)
				}
			}
			// Tokens issued after converging cross too.
			_, hello := a.dial(t, sioclient.TransportPolling)
			assert.True(t, resumes(t, c, hello["resume_token"], hello["session_id"]))
		})
	}
}

// TestRedisSharedSecretReasserted checks the periodic refresh: a node puts
// its secret back when Redis lost it, and a node started afterwards adopts
// it, so tokens issued before the loss keep working on both.
func TestRedisSharedSecretReasserted(t *testing.T) {
	for name, backend := range redisBackends(t) {
		t.Run(name, func(t *testing.T) {
			r := backend(t)
			a := r.node(t, socketio.WithSecretRefresh(socketio.Options{}, 5*time.Millisecond))
			kidA, _ := socketio.ResumeKeyIDs(a.QA)
			rdb := r.client(t)
			key := r.prefix + "resume-secret"
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			stored, err := rdb.Get(ctx, key).Result()
			require.NoError(t, err)

			r.lose(t)
			require.Eventually(t, func() bool {
				v, err := rdb.Get(ctx, key).Result()
				return err == nil && v == stored
			}, 5*time.Second, 5*time.Millisecond, "the node stores its secret again")

			_, hello := a.dial(t, sioclient.TransportWebsocket)
			c := r.node(t, socketio.WithSecretRefresh(socketio.Options{}, 5*time.Millisecond))
			kidC, _ := socketio.ResumeKeyIDs(c.QA)
			assert.Equal(t, kidA, kidC)
			assert.True(t, resumes(t, c, hello["resume_token"], hello["session_id"]))
		})
	}
}

// lose empties the Redis of r's keys, as a restart without persistence
// does: FLUSHALL on miniredis, the test's own keys on a shared server.
func (r *sharedRedis) lose(t *testing.T) {
	t.Helper()
	if r.mr != nil {
		r.mr.FlushAll()
		return
	}
	cleanPrefix(r.client(t), r.prefix)
}
