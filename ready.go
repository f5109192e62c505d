package socketio

import (
	"context"
	"errors"
	"fmt"
)

// Pinger is an optional interface of a Storage: Ping reports whether the
// backend answers, within ctx. Server.Ready calls it when the Storage has
// it; a Storage without it is taken to be ready. RedisStorage and
// MemoryStorage implement it. It is a separate interface so that adding
// it broke no Storage written before it.
type Pinger interface {
	Ping(ctx context.Context) error
}

// Ping reports whether Redis answers.
func (s *RedisStorage) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: redis: %w", ErrUnavailable, err)
	}
	return nil
}

// Ping reports nil: the in-memory store is always there.
func (s *MemoryStorage) Ping(context.Context) error { return nil }

// Ping reports whether the store of the Auth's limits, blocklist and
// connection counts answers: Redis when AuthOptions.Redis is set; the
// in-memory store always does.
func (a *Auth) Ping(ctx context.Context) error {
	if a.opts.Redis == nil {
		return nil
	}
	if err := a.opts.Redis.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: redis: %w", ErrUnavailable, err)
	}
	return nil
}

// Ready reports whether the Server can serve requests: nil when it is not
// shutting down and its Storage (when it implements Pinger) and its Auth
// store answer within ctx; otherwise an error whose text names each part
// that is down ("storage: …", "auth: …", "server: shutting down"). It is
// meant for a readiness probe (see the README); the two checks run
// concurrently, so one slow backend does not eat the other's time.
func (s *Server) Ready(ctx context.Context) error {
	if s.closed.Load() {
		return fmt.Errorf("server: shutting down: %w", ErrUnavailable)
	}
	storageErr := make(chan error, 1)
	go func() {
		p, ok := s.storage.(Pinger)
		if !ok {
			storageErr <- nil
			return
		}
		storageErr <- p.Ping(ctx)
	}()
	var errs []error
	if err := s.auth.Ping(ctx); err != nil {
		errs = append(errs, fmt.Errorf("auth: %w", err))
	}
	if err := <-storageErr; err != nil {
		errs = append([]error{fmt.Errorf("storage: %w", err)}, errs...)
	}
	return errors.Join(errs...)
}
