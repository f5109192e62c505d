package socketio

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// A resume token is "<session id>.<kid>.<expiry>.<mac>": kid names the
// secret that signed it (see resumeKeyID), expiry is in Unix seconds, and
// mac is an HMAC-SHA256, under that secret, of everything before it.
// Session ids carry 128 random bits, so a token can be neither guessed nor
// forged; tokens of the earlier "<session id>.<mac>" form are refused.

// maxResumeToken bounds the tokens verify looks at.
const maxResumeToken = 256

// resumeKey is one secret that signs or verifies resume tokens.
type resumeKey struct {
	kid    string
	secret []byte
	// until, when set, is when the key stops verifying tokens: a secret
	// retired at t signed its last token at t, which expires by t+TTL.
	until time.Time
}

func newResumeKey(secret []byte) resumeKey {
	return resumeKey{kid: resumeKeyID(secret), secret: secret}
}

// resumeKeyID derives a key id from a secret: 48 bits of a hash of it,
// enough to tell a node's few secrets apart, and telling nothing about the
// secret that the tokens it signs do not already.
func resumeKeyID(secret []byte) string {
	h := sha256.New()
	h.Write([]byte("socketio resume key id\x00"))
	h.Write(secret)
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:6])
}

// resumeKeyring is the secrets a node accepts: the current one, which signs
// new tokens, and previous ones, which only verify. It is immutable; the
// Server swaps a new one in when the shared secret changes.
type resumeKeyring struct {
	current  resumeKey
	previous []resumeKey
	ttl      time.Duration // lifetime of a new token
}

// maxPreviousKeys bounds the previous secrets a keyring keeps.
const maxPreviousKeys = 16

func (k *resumeKeyring) mac(key resumeKey, signed string) string {
	m := hmac.New(sha256.New, key.secret)
	m.Write([]byte("resume:v2\x00"))
	m.Write([]byte(signed))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// sign returns a token for sessionID, signed by the current secret and
// valid until now+ttl.
func (k *resumeKeyring) sign(sessionID string, now time.Time) string {
	signed := sessionID + "." + k.current.kid + "." + strconv.FormatInt(now.Add(k.ttl).Unix(), 10)
	return signed + "." + k.mac(k.current, signed)
}

// verify returns the session id of a well-formed, authentic, unexpired
// token signed by a secret of the keyring.
func (k *resumeKeyring) verify(token string, now time.Time) (string, bool) {
	if len(token) > maxResumeToken {
		return "", false
	}
	parts := strings.Split(token, ".")
	if len(parts) != 4 || parts[0] == "" {
		return "", false
	}
	id, kid, expiry, mac := parts[0], parts[1], parts[2], parts[3]
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || now.Unix() >= exp {
		return "", false
	}
	key, ok := k.key(kid, now)
	if !ok {
		return "", false
	}
	if !hmac.Equal([]byte(mac), []byte(k.mac(key, id+"."+kid+"."+expiry))) {
		return "", false
	}
	return id, true
}

// key finds the secret named kid, if it still verifies at now.
func (k *resumeKeyring) key(kid string, now time.Time) (resumeKey, bool) {
	if kid == k.current.kid {
		return k.current, true
	}
	for _, p := range k.previous {
		if p.kid == kid && (p.until.IsZero() || now.Before(p.until)) {
			return p, true
		}
	}
	return resumeKey{}, false
}

// newKeyring builds a keyring from current and candidate previous keys:
// expired ones, the current one and duplicates (the latest until wins) are
// dropped, the most lasting are kept.
func newKeyring(current resumeKey, ttl time.Duration, now time.Time, previous ...resumeKey) *resumeKeyring {
	byKid := map[string]resumeKey{}
	for _, p := range previous {
		if p.kid == current.kid || (!p.until.IsZero() && !now.Before(p.until)) {
			continue
		}
		if q, ok := byKid[p.kid]; ok && (q.until.IsZero() || (!p.until.IsZero() && q.until.After(p.until))) {
			continue
		}
		byKid[p.kid] = p
	}
	keep := make([]resumeKey, 0, len(byKid))
	for _, p := range byKid {
		keep = append(keep, p)
	}
	// Those that never expire first, then the latest to expire.
	slices.SortFunc(keep, func(a, b resumeKey) int {
		switch {
		case a.until.Equal(b.until):
			return strings.Compare(a.kid, b.kid)
		case a.until.IsZero():
			return -1
		case b.until.IsZero():
			return 1
		}
		return b.until.Compare(a.until)
	})
	if len(keep) > maxPreviousKeys {
		keep = keep[:maxPreviousKeys]
	}
	return &resumeKeyring{current: current, previous: keep, ttl: ttl}
}

// randomSecret returns 32 random bytes.
func randomSecret() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return b, nil
}

// newID returns prefix followed by 128 random bits in URL-safe base64.
func newID(prefix string) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("socketio: crypto/rand failed: " + err.Error())
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// formatTime renders t as docs/protocol.md wants: RFC 3339, UTC, milliseconds.
func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// defaultSecretRefresh is how often a node re-reads the shared secret.
const defaultSecretRefresh = 10 * time.Second

// sharedSecret keeps a node's keyring in step with the secret the nodes
// share through Redis when Options.Secret is unset. The record at key holds
// the current secret (base64), stored with SETNX so that one node's wins;
// the sorted set at key+":previous" holds secrets nodes stopped signing
// with, scored by when (Unix ms), so that the tokens they signed verify on
// every node until they expire.
//
// Every refresh re-reads both. A missing record (Redis lost its data) is
// re-asserted with SETNX; a node that finds another current secret than its
// own adopts it and keeps its own as previous, here and in the sorted set.
// So after Redis restarts empty, nodes old and new converge on one secret
// within a refresh, and no token any of them issued stops working.
type sharedSecret struct {
	rdb     redis.UniversalClient
	key     string
	prevKey string
	ttl     time.Duration
	static  []resumeKey // Options.PreviousSecrets
	logger  *slog.Logger
	ring    atomic.Pointer[resumeKeyring]
}

func newSharedSecret(rdb redis.UniversalClient, key string, ttl time.Duration, static []resumeKey, logger *slog.Logger) (*sharedSecret, error) {
	fresh, err := randomSecret()
	if err != nil {
		return nil, err
	}
	s := &sharedSecret{rdb: rdb, key: key, prevKey: key + ":previous", ttl: ttl, static: static, logger: logger}
	s.ring.Store(newKeyring(newResumeKey(fresh), ttl, time.Now(), static...))
	return s, nil
}

func encodeSecret(secret []byte) string { return base64.RawStdEncoding.EncodeToString(secret) }

func decodeSecret(v string) ([]byte, bool) {
	b, err := base64.RawStdEncoding.DecodeString(v)
	return b, err == nil && len(b) >= 16
}

// refresh brings the keyring in step with Redis. When signed is false the
// node has signed nothing with its current secret yet (at Register), so a
// different shared one replaces it without keeping it.
func (s *sharedSecret) refresh(ctx context.Context, signed bool) error {
	ring := s.ring.Load()
	now := time.Now()
	since := strconv.FormatInt(now.Add(-s.ttl).UnixMilli(), 10)

	var get *redis.StringCmd
	var prev *redis.ZSliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, s.key)
		p.ZRemRangeByScore(ctx, s.prevKey, "-inf", "("+since)
		prev = p.ZRangeByScoreWithScores(ctx, s.prevKey, &redis.ZRangeBy{Min: since, Max: "+inf"})
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("%w: reading the shared secret: %w", ErrUnavailable, err)
	}
	v, err := get.Result()
	if errors.Is(err, redis.Nil) {
		// Missing (first node, or Redis lost its data): offer ours.
		if err := s.rdb.SetNX(ctx, s.key, encodeSecret(ring.current.secret), 0).Err(); err != nil {
			return fmt.Errorf("%w: storing the shared secret: %w", ErrUnavailable, err)
		}
		if v, err = s.rdb.Get(ctx, s.key).Result(); err != nil {
			return fmt.Errorf("%w: reading the shared secret: %w", ErrUnavailable, err)
		}
	}
	secret, ok := decodeSecret(v)
	if !ok {
		return fmt.Errorf("socketio: the shared secret at %q is not a base64 secret of 16 bytes or more", s.key)
	}

	keys := slices.Concat(s.static, ring.previous)
	if !bytes.Equal(secret, ring.current.secret) && signed {
		// Ours signed tokens: keep it, and tell the other nodes.
		old := ring.current
		if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.ZAdd(ctx, s.prevKey, redis.Z{Score: float64(now.UnixMilli()), Member: encodeSecret(old.secret)})
			p.PExpire(ctx, s.prevKey, s.ttl)
			return nil
		}); err != nil {
			return fmt.Errorf("%w: storing the previous secret: %w", ErrUnavailable, err)
		}
		old.until = now.Add(s.ttl)
		keys = append(keys, old)
		s.logger.Info("socketio: the shared resume secret changed; adopting it, the old one still verifies",
			"key", s.key, "kid", resumeKeyID(secret), "previous_kid", old.kid)
	}
	for _, z := range prev.Val() {
		m, _ := z.Member.(string)
		b, ok := decodeSecret(m)
		if !ok {
			continue
		}
		k := newResumeKey(b)
		k.until = time.UnixMilli(int64(z.Score)).Add(s.ttl)
		keys = append(keys, k)
	}
	s.ring.Store(newKeyring(newResumeKey(secret), s.ttl, now, keys...))
	return nil
}

// run refreshes every interval until ctx ends, logging when Redis stops
// and starts answering.
func (s *sharedSecret) run(ctx context.Context, interval, timeout time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, timeout)
		err := s.refresh(rctx, true)
		cancel()
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			s.logger.Warn("socketio: cannot refresh the shared resume secret; keeping the current one", "err", err)
		case err == nil && failing:
			s.logger.Info("socketio: the shared resume secret is readable again")
		}
		failing = err != nil
	}
}
