package redisadapter

import (
	"context"
	"time"

	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io/v2/socket"
)

// FetchSockets returns the sockets of nsp in any of rooms (all sockets
// when rooms is empty) on every node. It works with any adapter; with this
// package's, the deadline of ctx, if any, bounds how long the other nodes
// are waited for (else Options.RequestsTimeout). When some nodes do not
// answer in time it returns the sockets that did arrive and an error
// wrapping ErrTimeout; when ctx ends first, ctx.Err().
func FetchSockets(ctx context.Context, nsp socket.Namespace, rooms ...string) ([]socket.SocketDetails, error) {
	opts := &socket.BroadcastOptions{Rooms: types.NewSet[socket.Room](), Except: types.NewSet[socket.Room]()}
	for _, r := range rooms {
		opts.Rooms.Add(socket.Room(r))
	}
	if deadline, ok := ctx.Deadline(); ok {
		d := time.Until(deadline)
		if d <= 0 {
			return nil, context.DeadlineExceeded
		}
		opts.Flags = &socket.BroadcastFlags{Timeout: &d}
	}
	type result struct {
		sockets []socket.SocketDetails
		err     error
	}
	done := make(chan result, 1)
	nsp.Adapter().FetchSockets(opts)(func(s []socket.SocketDetails, err error) {
		done <- result{s, err}
	})
	select {
	case r := <-done:
		return r.sockets, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// RoomSize returns the number of sockets of nsp in room on every node, with
// the errors of FetchSockets; on ErrTimeout the count covers the nodes
// that answered. Every node sends the details of its members, so this
// costs in proportion to the size of the room.
func RoomSize(ctx context.Context, nsp socket.Namespace, room string) (int, error) {
	s, err := FetchSockets(ctx, nsp, room)
	return len(s), err
}

// SocketExists reports whether a socket with this id is connected to nsp on
// any node. Every socket is in the room named by its id, so a room name for
// which this returns true is a socket's private room.
func SocketExists(ctx context.Context, nsp socket.Namespace, id string) (bool, error) {
	s, err := FetchSockets(ctx, nsp, id)
	for _, d := range s {
		if string(d.Id()) == id {
			return true, err
		}
	}
	return false, err
}
