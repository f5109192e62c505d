package socketio

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

var _ authState = (*memoryAuthState)(nil)

// memoryAuthState is the single-node authState. Each concern has its own
// lock, held only for map and slice work; ctx is not consulted.
type memoryAuthState struct {
	blockMu sync.RWMutex
	singles map[netip.Addr]blockEntry // single addresses: O(1) lookup
	cidrs   []cidrEntry               // longest prefix first
	nblocks atomic.Int64              // len(singles)+len(cidrs): lets lookups skip the lock

	connMu   sync.Mutex
	bySocket map[string]string // socket id → address
	perAddr  map[string]int

	rateMu   sync.Mutex
	sessions map[string]*rateWindow
	addrs    map[string]*rateWindow
	nextID   uint64
}

type blockEntry struct {
	reason  string
	expires time.Time // zero: never
}

func (e blockEntry) live(now time.Time) bool {
	return e.expires.IsZero() || now.Before(e.expires)
}

type cidrEntry struct {
	prefix netip.Prefix
	blockEntry
}

func newMemoryAuthState() *memoryAuthState {
	return &memoryAuthState{
		singles:  map[netip.Addr]blockEntry{},
		bySocket: map[string]string{},
		perAddr:  map[string]int{},
		sessions: map[string]*rateWindow{},
		addrs:    map[string]*rateWindow{},
	}
}

// Connections.

func (m *memoryAuthState) acquireConn(ctx context.Context, socketID, addr string, limit int, now time.Time) error {
	if ip, ok := parseIP(addr); ok {
		if reason, blocked, _ := m.lookup(ctx, ip, now); blocked {
			return blockedError(reason)
		}
	}
	m.connMu.Lock()
	defer m.connMu.Unlock()
	if old, ok := m.bySocket[socketID]; ok {
		if old == addr {
			return nil
		}
		m.releaseLocked(socketID, old)
	}
	if m.perAddr[addr] >= limit {
		return &Error{Code: CodeTooManyConnections, Message: fmt.Sprintf("at most %d connections per address", limit)}
	}
	m.bySocket[socketID] = addr
	m.perAddr[addr]++
	return nil
}

func (m *memoryAuthState) releaseConn(_ context.Context, socketID string) error {
	m.connMu.Lock()
	defer m.connMu.Unlock()
	if addr, ok := m.bySocket[socketID]; ok {
		m.releaseLocked(socketID, addr)
	}
	return nil
}

func (m *memoryAuthState) releaseLocked(socketID, addr string) {
	delete(m.bySocket, socketID)
	if n := m.perAddr[addr] - 1; n > 0 {
		m.perAddr[addr] = n
	} else {
		delete(m.perAddr, addr)
	}
}

// Question windows.

// rateWindow is a sliding-window log: the accepted questions of one key,
// oldest first. A record counts while now < at+window.
type rateWindow struct {
	recs []rateRecord
}

type rateRecord struct {
	at time.Time
	id uint64
}

// prune drops the records that have left the window ending at now.
func (w *rateWindow) prune(now time.Time, window time.Duration) {
	cutoff := now.Add(-window)
	i := 0
	for i < len(w.recs) && !w.recs[i].at.After(cutoff) {
		i++
	}
	if i > 0 {
		n := copy(w.recs, w.recs[i:])
		clear(w.recs[n:])
		w.recs = w.recs[:n]
	}
}

// wait prunes w and returns how long until it accepts one more under
// limit; 0 when it accepts now. A nil window is empty.
func (w *rateWindow) wait(now time.Time, window time.Duration, limit int) time.Duration {
	if w == nil {
		return 0
	}
	w.prune(now, window)
	n := len(w.recs)
	if n < limit {
		return 0
	}
	// n-limit+1 records must leave; the last of them is recs[n-limit].
	return w.recs[n-limit].at.Add(window).Sub(now)
}

// add inserts r in time order (callers' clocks may interleave slightly).
func (w *rateWindow) add(r rateRecord) {
	w.recs = append(w.recs, r)
	for i := len(w.recs) - 1; i > 0 && w.recs[i-1].at.After(r.at); i-- {
		w.recs[i], w.recs[i-1] = w.recs[i-1], w.recs[i]
	}
}

func (w *rateWindow) remove(id uint64) {
	for i, r := range w.recs {
		if r.id == id {
			w.recs = slices.Delete(w.recs, i, i+1)
			return
		}
	}
}

func (m *memoryAuthState) reserveQuestion(_ context.Context, sessionID, addr string, lim questionLimits, now time.Time) (func(), error) {
	m.rateMu.Lock()
	sw, aw := m.sessions[sessionID], m.addrs[addr]
	sWait := sw.wait(now, lim.window, lim.perSession)
	aWait := aw.wait(now, lim.window, lim.perAddr)
	if sWait > 0 || aWait > 0 {
		m.rateMu.Unlock()
		return nil, rateLimited(lim, sWait, aWait)
	}
	if sw == nil {
		sw = &rateWindow{recs: make([]rateRecord, 0, min(lim.perSession, 8))}
		m.sessions[sessionID] = sw
	}
	if aw == nil {
		aw = &rateWindow{recs: make([]rateRecord, 0, min(lim.perAddr, 8))}
		m.addrs[addr] = aw
	}
	m.nextID++
	rec := rateRecord{at: now, id: m.nextID}
	sw.add(rec)
	aw.add(rec)
	m.rateMu.Unlock()
	return func() { m.releaseQuestion(sessionID, addr, rec.id) }, nil
}

func (m *memoryAuthState) releaseQuestion(sessionID, addr string, id uint64) {
	m.rateMu.Lock()
	defer m.rateMu.Unlock()
	removeRecord(m.sessions, sessionID, id)
	removeRecord(m.addrs, addr, id)
}

// removeRecord removes one record. An emptied window stays, with its
// capacity, for the key's next question; the sweep drops it if none comes.
func removeRecord(windows map[string]*rateWindow, key string, id uint64) {
	if w := windows[key]; w != nil {
		w.remove(id)
	}
}

// Blocklist.

func (m *memoryAuthState) block(_ context.Context, p netip.Prefix, reason string, expires time.Time) error {
	e := blockEntry{reason: reason, expires: expires}
	m.blockMu.Lock()
	defer m.blockMu.Unlock()
	if p.IsSingleIP() {
		m.singles[p.Addr()] = e
	} else if i := slices.IndexFunc(m.cidrs, func(c cidrEntry) bool { return c.prefix == p }); i >= 0 {
		m.cidrs[i].blockEntry = e
	} else {
		m.cidrs = append(m.cidrs, cidrEntry{prefix: p, blockEntry: e})
		slices.SortStableFunc(m.cidrs, func(x, y cidrEntry) int { return cmp.Compare(y.prefix.Bits(), x.prefix.Bits()) })
	}
	m.nblocks.Store(int64(len(m.singles) + len(m.cidrs)))
	return nil
}

func (m *memoryAuthState) unblock(_ context.Context, p netip.Prefix, now time.Time) (bool, error) {
	m.blockMu.Lock()
	defer m.blockMu.Unlock()
	defer func() { m.nblocks.Store(int64(len(m.singles) + len(m.cidrs))) }()
	if p.IsSingleIP() {
		e, ok := m.singles[p.Addr()]
		delete(m.singles, p.Addr())
		return ok && e.live(now), nil
	}
	i := slices.IndexFunc(m.cidrs, func(c cidrEntry) bool { return c.prefix == p })
	if i < 0 {
		return false, nil
	}
	live := m.cidrs[i].live(now)
	m.cidrs = slices.Delete(m.cidrs, i, i+1)
	return live, nil
}

func (m *memoryAuthState) lookup(_ context.Context, ip netip.Addr, now time.Time) (string, bool, error) {
	if m.nblocks.Load() == 0 {
		return "", false, nil
	}
	m.blockMu.RLock()
	reason, blocked, stale := m.lookupLocked(ip, now)
	m.blockMu.RUnlock()
	if stale {
		m.blockMu.Lock()
		m.dropExpiredLocked(now)
		m.blockMu.Unlock()
	}
	return reason, blocked, nil
}

// lookupLocked finds the most specific live entry containing ip, and
// reports whether it passed an expired one.
func (m *memoryAuthState) lookupLocked(ip netip.Addr, now time.Time) (reason string, blocked, stale bool) {
	if e, ok := m.singles[ip]; ok {
		if e.live(now) {
			return e.reason, true, false
		}
		stale = true
	}
	for _, c := range m.cidrs {
		if c.prefix.Contains(ip) {
			if c.live(now) {
				return c.reason, true, stale
			}
			stale = true
		}
	}
	return "", false, stale
}

func (m *memoryAuthState) dropExpiredLocked(now time.Time) {
	for ip, e := range m.singles {
		if !e.live(now) {
			delete(m.singles, ip)
		}
	}
	m.cidrs = slices.DeleteFunc(m.cidrs, func(c cidrEntry) bool { return !c.live(now) })
	m.nblocks.Store(int64(len(m.singles) + len(m.cidrs)))
}

// Stats and sweeping.

func (m *memoryAuthState) stats(_ context.Context, now time.Time) (authStats, error) {
	var st authStats
	m.connMu.Lock()
	st.perAddress = make(map[string]int, len(m.perAddr))
	for a, n := range m.perAddr {
		st.perAddress[a] = n
	}
	m.connMu.Unlock()

	m.blockMu.RLock()
	for ip, e := range m.singles {
		if e.live(now) {
			st.blocked = append(st.blocked, BlockedAddress{Addr: ip.String(), Reason: e.reason, Expires: e.expires})
		}
	}
	for _, c := range m.cidrs {
		if c.live(now) {
			st.blocked = append(st.blocked, BlockedAddress{Addr: prefixString(c.prefix), Reason: c.reason, Expires: c.expires})
		}
	}
	m.blockMu.RUnlock()
	slices.SortFunc(st.blocked, func(x, y BlockedAddress) int { return cmp.Compare(x.Addr, y.Addr) })
	return st, nil
}

func (m *memoryAuthState) sweep(_ context.Context, now time.Time, window time.Duration) error {
	m.blockMu.Lock()
	m.dropExpiredLocked(now)
	m.blockMu.Unlock()

	m.rateMu.Lock()
	defer m.rateMu.Unlock()
	for _, windows := range []map[string]*rateWindow{m.sessions, m.addrs} {
		for k, w := range windows {
			w.prune(now, window)
			if len(w.recs) == 0 {
				delete(windows, k)
			}
		}
	}
	return nil
}

// windowCounts reports how many session and address windows are kept; for
// tests of the memory bound.
func (m *memoryAuthState) windowCounts() (sessions, addrs int) {
	m.rateMu.Lock()
	defer m.rateMu.Unlock()
	return len(m.sessions), len(m.addrs)
}
