package socketio_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

func TestWireConnected(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{})
		_, c := ts.dial(t, tr)
		assert.Regexp(t, `^s_`, c["session_id"])
		assert.NotEmpty(t, c["resume_token"])
		assert.Equal(t, false, c["resumed"])
		assert.True(t, isRFC3339Millis(c["server_time"]), "server_time %v", c["server_time"])
		assert.NotContains(t, c, "user_id")
		assert.Equal(t, map[string]any{
			"max_questions_per_minute":        5.0,
			"max_questions_per_minute_per_ip": 60.0,
			"max_question_length":             2000.0,
		}, c["limits"])
	})
}

func TestWireResume(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		ts := startServer(t, socketio.Options{})
		c1, first := ts.dial(t, tr)
		task := okReply(t, "ask", call(t, c1, "ask_question", "What is Socket.IO?"))
		next(t, c1, "answer")
		require.NoError(t, c1.Close())

		_, again := ts.dial(t, tr, withAuth(map[string]any{"resume": first["resume_token"]}))
		assert.Equal(t, first["session_id"], again["session_id"])
		assert.Equal(t, true, again["resumed"])

		c3, _ := ts.dial(t, tr, withAuth(map[string]any{"resume": first["resume_token"]}))
		got := okReply(t, "get_task", call(t, c3, "get_task", map[string]any{"task_id": task["task_id"]}))
		assert.Equal(t, "completed", got["task"].(map[string]any)["status"])

		for _, forged := range []any{"s_x.forged", first["session_id"], "", 42} {
			_, fresh := ts.dial(t, tr, withAuth(map[string]any{"resume": forged}))
			assert.NotEqual(t, first["session_id"], fresh["session_id"], "forged %v", forged)
			assert.Equal(t, false, fresh["resumed"])
		}
	})
}

func TestWireTooManyConnections(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		auth, err := socketio.NewAuth(socketio.AuthOptions{MaxConnectionsPerIP: 3})
		require.NoError(t, err)
		t.Cleanup(func() { auth.Close() })
		ts := startServer(t, socketio.Options{Auth: auth})
		var open []*sioclient.Client
		for range 3 {
			c, _ := ts.dial(t, tr)
			open = append(open, c)
		}
		_, err = ts.dialErr(t, tr)
		requireConnectError(t, err, "too_many_connections")
		assert.Equal(t, 3, stats(t, auth).PerAddress["127.0.0.1"])
		assert.EqualValues(t, 1, stats(t, auth).Refusals[socketio.CodeTooManyConnections])

		// A closed connection frees its slot.
		require.NoError(t, open[0].Close())
		require.Eventually(t, func() bool { return stats(t, auth).PerAddress["127.0.0.1"] == 2 }, 5*time.Second, 5*time.Millisecond)
		ts.dial(t, tr)
	})
}

func requireConnectError(t *testing.T, err error, code string) {
	t.Helper()
	var ce *sioclient.ConnectError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, code, ce.Message)
	require.NotNil(t, ce.Data, "connect_error data")
	assert.Equal(t, code, ce.Data["code"])
	assert.NotEmpty(t, ce.Data["message"])
}

func TestWireBlockedAddress(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		auth, err := socketio.NewAuth(socketio.AuthOptions{TrustedProxies: []string{"127.0.0.1/32"}})
		require.NoError(t, err)
		t.Cleanup(func() { auth.Close() })
		ts := startServer(t, socketio.Options{Auth: auth})
		require.NoError(t, auth.BlockIP(context.Background(), "203.0.113.0/24", "abuse", 0))

		_, err = ts.dialErr(t, tr, withHeader("X-Forwarded-For", "203.0.113.7"))
		requireConnectError(t, err, "ip_blocked")
		// The peer itself is not blocked, and another forwarded address
		// gets through.
		ts.dial(t, tr, withHeader("X-Forwarded-For", "198.51.100.1"))
		assert.Equal(t, 1, stats(t, auth).PerAddress["198.51.100.1"])
	})
}

func TestWireTokens(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr string) {
		auth, err := socketio.NewAuth(socketio.AuthOptions{
			TokenVerifier: func(_ context.Context, token string) (string, error) {
				if user, ok := map[string]string{"tok-alice": "alice", "tok-bob": "bob"}[token]; ok {
					return user, nil
				}
				return "", errors.New("bad token")
			},
		})
		require.NoError(t, err)
		t.Cleanup(func() { auth.Close() })
		ts := startServer(t, socketio.Options{Auth: auth})

		_, err = ts.dialErr(t, tr)
		requireConnectError(t, err, "unauthorized")
		_, err = ts.dialErr(t, tr, withAuth(map[string]any{"token": "nope"}))
		requireConnectError(t, err, "unauthorized")

		a1, c1 := ts.dial(t, tr, withAuth(map[string]any{"token": "tok-alice"}))
		assert.Equal(t, "alice", c1["user_id"])
		task := okReply(t, "ask", call(t, a1, "ask_question", "What is Socket.IO?"))
		next(t, a1, "answer")

		// Another session of the same user reads the user's tasks.
		a2, c2 := ts.dial(t, tr, withAuth(map[string]any{"token": "tok-alice"}))
		assert.NotEqual(t, c1["session_id"], c2["session_id"])
		okReply(t, "get_task", call(t, a2, "get_task", map[string]any{"task_id": task["task_id"]}))
		hist := okReply(t, "history", call(t, a2, "get_history"))
		assert.Len(t, hist["items"], 1)

		// Bob does not, and Bob presenting Alice's resume token gets a new
		// session.
		b, cb := ts.dial(t, tr, withAuth(map[string]any{"token": "tok-bob", "resume": c1["resume_token"]}))
		assert.NotEqual(t, c1["session_id"], cb["session_id"])
		assert.Equal(t, false, cb["resumed"])
		assert.Equal(t, "not_found", errCode(t, call(t, b, "get_task", map[string]any{"task_id": task["task_id"]})))
	})
}

// refuser is a custom hook that refuses what it is told to.
type refuser struct {
	socketio.BaseHook
	connectErr, joinErr error
	panicOn             string
}

func (h *refuser) BeforeConnect(context.Context, *socketio.ConnectEvent) error {
	if h.panicOn == "connect" {
		panic("boom")
	}
	return h.connectErr
}

func (h *refuser) BeforeJoinRoom(_ context.Context, e *socketio.RoomEvent) error {
	if h.panicOn == "join" {
		panic("boom")
	}
	return h.joinErr
}

func TestWireHookRefusals(t *testing.T) {
	cases := []struct {
		name        string
		hook        *refuser
		connectCode string
		joinCode    string
	}{
		{"plain error on connect is rejected", &refuser{connectErr: errors.New("no")}, "rejected", ""},
		{"coded error on connect keeps its code", &refuser{connectErr: socketio.ErrUnauthorized}, "unauthorized", ""},
		{"panic on connect is internal", &refuser{panicOn: "connect"}, "internal", ""},
		{"plain error elsewhere is forbidden", &refuser{joinErr: errors.New("no")}, "", "forbidden"},
		{"coded error elsewhere keeps its code", &refuser{joinErr: socketio.NewError(socketio.CodeLimitExceeded, "full")}, "", "limit_exceeded"},
		{"panic elsewhere is internal", &refuser{panicOn: "join"}, "", "internal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, socketio.Options{})
			tc.hook.BaseHook = socketio.NewBaseHook("custom", 50)
			require.NoError(t, ts.QA.Hooks().Register(tc.hook))
			c, err := ts.dialErr(t, sioclient.TransportWebsocket)
			if tc.connectCode != "" {
				requireConnectError(t, err, tc.connectCode)
			} else {
				require.NoError(t, err)
				assert.Equal(t, tc.joinCode, errCode(t, call(t, c, "join_room", "lobby")))
				// The server goes on serving this client and others.
				okReply(t, "history", call(t, c, "get_history"))
			}
			if tc.hook.panicOn != "" {
				info := hookInfo(t, ts.QA, "custom")
				assert.EqualValues(t, 1, info.Panics)
			}
			// Another client is served once the hook is gone.
			require.True(t, ts.QA.Hooks().Unregister("custom"))
			other, _ := ts.dial(t, sioclient.TransportPolling)
			okReply(t, "room_joined", call(t, other, "join_room", "lobby"))
		})
	}
}

func hookInfo(t *testing.T, qa *socketio.Server, name string) socketio.HookInfo {
	t.Helper()
	for _, h := range qa.Hooks().HooksInfo() {
		if h.Name == name {
			return h
		}
	}
	t.Fatalf("no hook %q", name)
	return socketio.HookInfo{}
}

func TestWireDisabledAuthHookLiftsLimits(t *testing.T) {
	auth, err := socketio.NewAuth(socketio.AuthOptions{MaxConnectionsPerIP: 1})
	require.NoError(t, err)
	t.Cleanup(func() { auth.Close() })
	ts := startServer(t, socketio.Options{Auth: auth})
	ts.dial(t, sioclient.TransportWebsocket)
	_, err = ts.dialErr(t, sioclient.TransportWebsocket)
	requireConnectError(t, err, "too_many_connections")

	require.True(t, ts.QA.Hooks().Disable("auth"))
	ts.dial(t, sioclient.TransportWebsocket)
	require.True(t, ts.QA.Hooks().Enable("auth"))
	_, err = ts.dialErr(t, sioclient.TransportWebsocket)
	requireConnectError(t, err, "too_many_connections")
}

func TestWireRegisterTwice(t *testing.T) {
	ts := startServer(t, socketio.Options{})
	_, err := socketio.Register(ts.IO, socketio.Options{})
	require.Error(t, err)
	// Another namespace of the same server is fine.
	qa2, err := socketio.Register(ts.IO, socketio.Options{Namespace: "/other"})
	require.NoError(t, err)
	require.NoError(t, qa2.Close(context.Background()))
}

func TestWireManyClientsEachGetTheirOwnSession(t *testing.T) {
	ts := startServer(t, socketio.Options{})
	seen := map[any]bool{}
	for i := range 6 {
		_, c := ts.dial(t, transports[i%2])
		require.False(t, seen[c["session_id"]], fmt.Sprint(c["session_id"]))
		seen[c["session_id"]] = true
	}
}
