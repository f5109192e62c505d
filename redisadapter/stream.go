package redisadapter

import (
	"errors"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/zishang520/socket.io/v2/adapter"
)

// streamReader reads one stream with XREAD BLOCK, on a connection of its
// own, from the last id it has seen; after an error it reconnects and
// resumes from there, so entries written during an outage are delivered
// unless MAXLEN trimmed them meanwhile.
type streamReader struct {
	r      *run
	stream string
	client redis.UniversalClient
	own    bool // client was created for this reader and is closed with it
	comp   *component
	last   string
}

func newStreamReader(r *run, stream string) *streamReader {
	client, own := dedicatedClient(r.b.client)
	return &streamReader{
		r: r, stream: stream, client: client, own: own,
		comp: newComponent("stream reader "+stream, r.b.log),
	}
}

// dedicatedClient returns a single-connection client with the options of
// c, so that a blocked XREAD does not hold a connection of the application
// and Close can interrupt it. Other clients are shared.
func dedicatedClient(c redis.UniversalClient) (redis.UniversalClient, bool) {
	switch c := c.(type) {
	case *redis.Client:
		o := *c.Options()
		o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns = 1, 0, 1, 0
		// The loop retries by itself and must see a lost connection at
		// once (0 in initialised options means no retry, but 3 in new ones).
		o.MaxRetries = -1
		// State the client built for itself is not shared.
		o.PushNotificationProcessor, o.AutoPipelineOptions = nil, nil
		// With the endpoint type set, creating the copy resolves no name
		// (a failover client's address is the placeholder
		// "FailoverClient").
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled, EndpointType: maintnotifications.EndpointTypeNone}
		o.ClientSideCacheConfig, o.ClientSideCache = nil, nil
		return redis.NewClient(&o), true
	case *redis.ClusterClient:
		o := *c.Options()
		o.PoolSize, o.MinIdleConns, o.MaxIdleConns, o.MaxActiveConns = 1, 0, 1, 0
		o.MaxRetries = -1
		o.PushNotificationProcessor, o.AutoPipelineOptions = nil, nil
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		return redis.NewClusterClient(&o), true
	}
	return c, false
}

func (s *streamReader) close() {
	if s.own {
		_ = s.client.Close()
	}
}

func (s *streamReader) loop() {
	defer s.r.wg.Done()
	ctx := s.r.ctx
	var bo backoff
	for ctx.Err() == nil {
		if err := s.readOnce(); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.comp.setDown(err)
			if !s.r.sleep(bo.next()) {
				return
			}
			continue
		}
		bo.reset()
	}
}

func (s *streamReader) readOnce() error {
	ctx := s.r.ctx
	if s.last == "" {
		// Start after the newest entry, which "$" would not do across a
		// reconnection.
		entries, err := s.client.XRevRangeN(ctx, s.stream, "+", "-", 1).Result()
		if err != nil {
			return err
		}
		s.last = "0-0"
		if len(entries) > 0 {
			s.last = entries[0].ID
		}
		s.comp.setUp()
	}
	streams, err := s.client.XRead(ctx, &redis.XReadArgs{
		Streams: []string{s.stream, s.last},
		Count:   s.r.b.opts.ReadCount,
		Block:   s.r.b.opts.BlockTime,
	}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	s.comp.setUp()
	for _, st := range streams {
		for _, e := range st.Messages {
			s.last = e.ID
			s.dispatch(e)
		}
	}
	return nil
}

func (s *streamReader) dispatch(e redis.XMessage) {
	m, ok, err := decodeEntry(e.Values)
	if !ok {
		return
	}
	if err != nil {
		s.r.b.log.Debug("redisadapter: undecodable stream entry", "stream", s.stream, "id", e.ID, "err", err)
		return
	}
	a := s.r.b.adapter(m.Nsp)
	if a == nil || a.stream != s.stream {
		return
	}
	s.r.b.safely("stream entry", func() { a.receive(m, adapter.Offset(e.ID), s.r.queue.push) })
}
