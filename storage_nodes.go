package socketio

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

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

// taskRef names a task.
type taskRef struct{ owner, id string }

// nodeStore is implemented by the built-in stores: they keep a lease per
// node and which node holds which unfinished tasks, so that the nodes can
// find and settle the tasks of one that died (see Options.NodeTTL). It is
// unexported on purpose: another Storage gets the older floor, orphans
// settled when read.
type nodeStore interface {
	// renewNode (re)starts node's lease for ttl.
	renewNode(ctx context.Context, node string, ttl time.Duration) error
	// dropNode ends node's lease.
	dropNode(ctx context.Context, node string) error
	// holdTask records that node holds the task ref. It is called before
	// the task is created, so that no task is ever unfinished unheld.
	holdTask(ctx context.Context, node string, ref taskRef) error
	// releaseTask forgets that node holds ref.
	releaseTask(ctx context.Context, node string, ref taskRef) error
	// deadNodes returns the nodes other than self that hold tasks and
	// have no lease.
	deadNodes(ctx context.Context, self string) ([]string, error)
	// claimNode reserves the sweep of node for by, for ttl; it reports
	// false when another node holds the reservation.
	claimNode(ctx context.Context, node, by string, ttl time.Duration) (bool, error)
	// heldTasks returns up to limit of the tasks node holds. When it holds
	// none, node is forgotten.
	heldTasks(ctx context.Context, node string, limit int) ([]taskRef, error)
}

var (
	_ nodeStore = (*MemoryStorage)(nil)
	_ nodeStore = (*RedisStorage)(nil)
)

// memNodes is the node state of a MemoryStorage, guarded by its mutex.
type memNodes struct {
	leases map[string]time.Time            // node → lease expiry
	held   map[string]map[taskRef]struct{} // node → tasks it holds
	claims map[string]memClaim             // dead node → its sweeper
}

type memClaim struct {
	by    string
	until time.Time
}

// lockNodes locks s and returns its node state, or errMemoryClosed.
func (s *MemoryStorage) lockNodes(ctx context.Context) (*memNodes, error) {
	if err := memCheckContext(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errMemoryClosed
	}
	n := &s.nodes
	if n.leases == nil {
		n.leases = map[string]time.Time{}
		n.held = map[string]map[taskRef]struct{}{}
		n.claims = map[string]memClaim{}
	}
	return n, nil
}

func (s *MemoryStorage) renewNode(ctx context.Context, node string, ttl time.Duration) error {
	n, err := s.lockNodes(ctx)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	n.leases[node] = s.now().Add(ttl)
	return nil
}

func (s *MemoryStorage) dropNode(ctx context.Context, node string) error {
	n, err := s.lockNodes(ctx)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	delete(n.leases, node)
	return nil
}

func (s *MemoryStorage) holdTask(ctx context.Context, node string, ref taskRef) error {
	n, err := s.lockNodes(ctx)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	if n.held[node] == nil {
		n.held[node] = map[taskRef]struct{}{}
	}
	n.held[node][ref] = struct{}{}
	return nil
}

func (s *MemoryStorage) releaseTask(ctx context.Context, node string, ref taskRef) error {
	n, err := s.lockNodes(ctx)
	if err != nil {
		return err
	}
	defer s.mu.Unlock()
	delete(n.held[node], ref)
	return nil
}

func (s *MemoryStorage) deadNodes(ctx context.Context, self string) ([]string, error) {
	n, err := s.lockNodes(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	now := s.now()
	var dead []string
	for node := range n.held {
		if until, ok := n.leases[node]; node != self && (!ok || !now.Before(until)) {
			dead = append(dead, node)
		}
	}
	return dead, nil
}

func (s *MemoryStorage) claimNode(ctx context.Context, node, by string, ttl time.Duration) (bool, error) {
	n, err := s.lockNodes(ctx)
	if err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	now := s.now()
	if c, ok := n.claims[node]; ok && c.by != by && now.Before(c.until) {
		return false, nil
	}
	n.claims[node] = memClaim{by: by, until: now.Add(ttl)}
	return true, nil
}

func (s *MemoryStorage) heldTasks(ctx context.Context, node string, limit int) ([]taskRef, error) {
	n, err := s.lockNodes(ctx)
	if err != nil {
		return nil, err
	}
	defer s.mu.Unlock()
	var refs []taskRef
	for ref := range n.held[node] {
		if len(refs) == limit {
			break
		}
		refs = append(refs, ref)
	}
	if len(refs) == 0 {
		delete(n.held, node)
		delete(n.claims, node)
	}
	return refs, nil
}

// Redis layout of the node state: <prefix>node:{<id>} is a node's lease,
// <prefix>node:{<id>}:t the set of the tasks it holds (each the owner and
// the id as two fields), <prefix>node:{<id>}:sweep the node sweeping it
// after it died, and <prefix>nodes the set of the nodes holding tasks.
func (s *RedisStorage) nodeKey(node string) string { return s.prefix + "node:{" + node + "}" }
func (s *RedisStorage) nodesKey() string           { return s.prefix + "nodes" }

func redisEncodeRef(ref taskRef) string {
	return string(redisAppendField(redisAppendField(nil, ref.owner), ref.id))
}

// redisClaimNode sets KEYS[1] to ARGV[1] for ARGV[2] ms unless another
// value holds it; 1 when set.
var redisClaimNode = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

func (s *RedisStorage) renewNode(ctx context.Context, node string, ttl time.Duration) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.client.Set(ctx, s.nodeKey(node), "1", ttl).Err(); err != nil {
		return s.fail(ctx, "renew node lease", err)
	}
	return nil
}

func (s *RedisStorage) dropNode(ctx context.Context, node string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.client.Del(ctx, s.nodeKey(node)).Err(); err != nil {
		return s.fail(ctx, "drop node lease", err)
	}
	return nil
}

func (s *RedisStorage) holdTask(ctx context.Context, node string, ref taskRef) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	held := s.nodeKey(node) + ":t"
	_, err := s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, held, redisEncodeRef(ref))
		p.PExpire(ctx, held, s.opts.HistoryTTL)
		p.SAdd(ctx, s.nodesKey(), node)
		return nil
	})
	if err != nil {
		return s.fail(ctx, "hold task", err)
	}
	return nil
}

func (s *RedisStorage) releaseTask(ctx context.Context, node string, ref taskRef) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.client.SRem(ctx, s.nodeKey(node)+":t", redisEncodeRef(ref)).Err(); err != nil {
		return s.fail(ctx, "release task", err)
	}
	return nil
}

func (s *RedisStorage) deadNodes(ctx context.Context, self string) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	nodes, err := s.client.SMembers(ctx, s.nodesKey()).Result()
	if err != nil {
		return nil, s.fail(ctx, "list nodes", err)
	}
	others := nodes[:0]
	for _, n := range nodes {
		if n != self {
			others = append(others, n)
		}
	}
	if len(others) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.IntCmd, len(others))
	_, err = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range others {
			cmds[i] = p.Exists(ctx, s.nodeKey(n))
		}
		return nil
	})
	if err != nil {
		return nil, s.fail(ctx, "read node leases", err)
	}
	var dead []string
	for i, c := range cmds {
		if c.Val() == 0 {
			dead = append(dead, others[i])
		}
	}
	return dead, nil
}

func (s *RedisStorage) claimNode(ctx context.Context, node, by string, ttl time.Duration) (bool, error) {
	if err := s.check(ctx); err != nil {
		return false, err
	}
	n, err := redisClaimNode.Run(ctx, s.client, []string{s.nodeKey(node) + ":sweep"}, by, max(ttl.Milliseconds(), 1)).Int()
	if err != nil {
		return false, s.fail(ctx, "claim node", err)
	}
	return n == 1, nil
}

func (s *RedisStorage) heldTasks(ctx context.Context, node string, limit int) ([]taskRef, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	raw, err := s.client.SRandMemberN(ctx, s.nodeKey(node)+":t", int64(limit)).Result()
	if err != nil {
		return nil, s.fail(ctx, "held tasks", err)
	}
	if len(raw) == 0 {
		if err := s.client.SRem(ctx, s.nodesKey(), node).Err(); err != nil {
			return nil, s.fail(ctx, "forget node", err)
		}
		return nil, nil
	}
	refs := make([]taskRef, 0, len(raw))
	var corrupt []any
	for _, r := range raw {
		var f [2]string
		if err := redisSplitFields(r, f[:]); err != nil {
			corrupt = append(corrupt, r) // names no task: drop it
			continue
		}
		refs = append(refs, taskRef{owner: f[0], id: f[1]})
	}
	if len(corrupt) > 0 {
		if err := s.client.SRem(ctx, s.nodeKey(node)+":t", corrupt...).Err(); err != nil {
			return nil, s.fail(ctx, "held tasks", err)
		}
	}
	return refs, nil
}
