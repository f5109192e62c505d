package socketio

import (
	"context"
	"errors"
	"time"
)

// Test seams for package socketio_test.

// WithSecretRefresh returns opts with a secret shared through Redis re-read
// every d instead of every 10 s.
func WithSecretRefresh(opts Options, d time.Duration) Options {
	opts.secretRefresh = d
	return opts
}

// WithLeaseRenewal returns opts with the connection leases of an Auth in
// Redis that Register creates (or moves there) renewed every d instead of
// every LeaseTTL/3.
func WithLeaseRenewal(opts Options, d time.Duration) Options {
	opts.leaseRenewal = d
	return opts
}

// RefreshSharedSecret runs one refresh of s's shared resume secret now, as
// its periodic refresh does.
func RefreshSharedSecret(ctx context.Context, s *Server) error {
	return s.shared.refresh(ctx, true)
}

// ResumeKeyIDs returns the key id of the secret that signs s's new resume
// tokens and those of the secrets it accepts besides.
func ResumeKeyIDs(s *Server) (current string, previous []string) {
	k := s.resumeKeys()
	for _, p := range k.previous {
		previous = append(previous, p.kid)
	}
	return k.current.kid, previous
}

// StopNodeLease makes s look dead to the other nodes: it stops renewing its
// lease and drops it, but keeps running.
func StopNodeLease(s *Server) {
	s.leaseOff.Store(true)
	ctx, cancel := s.storageCtx()
	defer cancel()
	if err := s.nodes.dropNode(ctx, s.node); err != nil {
		panic(err)
	}
}

// ParserSwapped reports whether Register replaced the server's parser in
// place rather than finding it set by SetParser.
func ParserSwapped(s *Server) bool { return s.parserSwapped }

// FrozenCreate is a RedisStorage (leases included) whose CreateTask stores
// the task and then blocks until frozen is closed, as if its node died
// right after storing it.
func FrozenCreate(s *RedisStorage, frozen <-chan struct{}) Storage {
	return frozenCreate{s, frozen}
}

type frozenCreate struct {
	*RedisStorage
	frozen <-chan struct{}
}

func (f frozenCreate) CreateTask(ctx context.Context, t Task, maxOpen int) error {
	if err := f.RedisStorage.CreateTask(ctx, t, maxOpen); err != nil {
		return err
	}
	<-f.frozen
	return errors.New("frozen")
}
