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

// orphanEnds waits for the ends of the tasks ids on c, in any order: the
// final task_status (failed) before an answer_error (timeout) for each.
func orphanEnds(t *testing.T, c *sioclient.Client, ids []any) {
	t.Helper()
	failed := map[any]bool{}
	ended := map[any]bool{}
	for len(ended) < len(ids) {
		ev, err := c.NextFunc(context.Background(), func(ev sioclient.Event) bool {
			return ev.Name == "task_status" && ev.Args[0].(map[string]any)["status"] != "pending" && ev.Args[0].(map[string]any)["status"] != "processing" ||
				ev.Name == "answer_error" || ev.Name == "answer"
		})
		require.NoError(t, err, "waiting for the ends of the orphaned tasks (%d of %d came)", len(ended), len(ids))
		m := ev.Args[0].(map[string]any)
		require.Contains(t, ids, m["task_id"])
		switch ev.Name {
		case "task_status":
			assert.Equal(t, "failed", m["status"])
			failed[m["task_id"]] = true
		case "answer_error":
			assert.True(t, failed[m["task_id"]], "answer_error before the final task_status")
			assert.Equal(t, "timeout", m["code"])
			assert.False(t, ended[m["task_id"]], "a second end")
			ended[m["task_id"]] = true
		default:
			t.Fatalf("unexpected %s", ev.Name)
		}
	}
}

// TestWireOrphansSweptAndPushed: a node stops renewing its lease (it died,
// as far as the others can tell) with tasks unfinished; another node
// settles them without being asked, pushes their end, and the session may
// ask again.
func TestWireOrphansSweptAndPushed(t *testing.T) {
	store := socketio.NewMemoryStorage(socketio.StorageOptions{})
	t.Cleanup(func() { store.Close() })
	secret := []byte("a secret the two nodes share......")
	g := newGatedAnswerer()
	t.Cleanup(g.open)
	opts := socketio.Options{Storage: store, Secret: secret, Answerer: g, NodeTTL: 200 * time.Millisecond}
	a := startServer(t, opts)
	b := startServer(t, opts)
	ca, hello := a.dial(t, sioclient.TransportWebsocket)
	cb, _ := b.dial(t, sioclient.TransportWebsocket, withAuth(map[string]any{"resume": hello["resume_token"]}))
	var ids []any
	for range 3 {
		ids = append(ids, okReply(t, "ask", call(t, ca, "ask_question", "slow"))["task_id"])
	}
	<-g.started
	assert.Equal(t, "too_many_tasks", errCode(t, call(t, cb, "ask_question", "more")))

	socketio.StopNodeLease(a.QA)
	orphanEnds(t, cb, ids)
	task := okReply(t, "task", call(t, cb, "get_task", map[string]any{"task_id": ids[0]}))["task"].(map[string]any)
	assert.Equal(t, "failed", task["status"])
	assert.Equal(t, "timeout", task["error"].(map[string]any)["code"])
	again := okReply(t, "ask", call(t, cb, "ask_question", "again"))["task_id"]
	// The dead node's answers, should they end after all, push nothing.
	g.open()
	assert.Equal(t, again, next(t, cb, "answer")["task_id"])
	noEvent(t, cb, "answer")
}

// TestRedisOrphansSweptAndPushed: the same across three nodes on Redis:
// two of them sweep, the ends reach the sockets of every node, once.
func TestRedisOrphansSweptAndPushed(t *testing.T) {
	forEachRedis(t, func(t *testing.T, r *sharedRedis) {
		g := newGatedAnswerer()
		t.Cleanup(g.open)
		// The sweep of dead nodes' tasks is the in-process queue's: with
		// the Redis queue, tasks are not held by nodes.
		opts := socketio.Options{Answerer: g, NodeTTL: 300 * time.Millisecond, Queue: socketio.LocalQueue()}
		a := r.clusterNode(t, opts)
		b := r.clusterNode(t, opts)
		c := r.clusterNode(t, opts)
		ca, hello := a.dial(t, sioclient.TransportWebsocket)
		cb, _ := b.dial(t, sioclient.TransportWebsocket, withAuth(map[string]any{"resume": hello["resume_token"]}))
		cc, _ := c.dial(t, sioclient.TransportPolling, withAuth(map[string]any{"resume": hello["resume_token"]}))
		var ids []any
		for range 3 {
			ids = append(ids, okReply(t, "ask", call(t, ca, "ask_question", "slow"))["task_id"])
		}
		<-g.started
		socketio.StopNodeLease(a.QA)
		orphanEnds(t, cb, ids)
		orphanEnds(t, ca, ids)
		orphanEnds(t, cc, ids)
		for _, cl := range []*sioclient.Client{ca, cb, cc} {
			noEvent(t, cl, "answer_error")
		}
		again := okReply(t, "ask", call(t, cb, "ask_question", "again"))["task_id"]
		g.open()
		assert.Equal(t, again, next(t, cb, "answer")["task_id"])
		noEvent(t, cb, "answer")
	})
}
