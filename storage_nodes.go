package socketio

import "time"

// taskTTLer is implemented by the stores that know how long a task lives
// after its last write.
type taskTTLer interface {
	taskTTL() time.Duration
}

func (s *MemoryStorage) taskTTL() time.Duration { return s.opts.HistoryTTL }
func (s *RedisStorage) taskTTL() time.Duration  { return s.opts.HistoryTTL }

// taskTTL is how long the store keeps a task after its last write: the
// store's HistoryTTL, or the default one when the store does not say.
func (s *Server) taskTTL() time.Duration {
	if st, ok := s.storage.(taskTTLer); ok {
		return st.taskTTL()
	}
	return StorageOptions{}.withDefaults().HistoryTTL
}
