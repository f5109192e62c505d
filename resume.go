package socketio

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// resumeSigner makes and checks resume tokens: "<session id>.<mac>", where
// mac is an HMAC-SHA256 of the session id under the server's secret. Session
// ids carry 128 random bits, so a token can be neither guessed nor forged.
type resumeSigner struct {
	secret []byte
}

func (r resumeSigner) mac(sessionID string) string {
	m := hmac.New(sha256.New, r.secret)
	m.Write([]byte("resume:"))
	m.Write([]byte(sessionID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (r resumeSigner) sign(sessionID string) string {
	return sessionID + "." + r.mac(sessionID)
}

// verify returns the session id of a well-formed, authentic token.
func (r resumeSigner) verify(token string) (string, bool) {
	id, mac, ok := strings.Cut(token, ".")
	if !ok || id == "" || len(token) > 256 {
		return "", false
	}
	if !hmac.Equal([]byte(mac), []byte(r.mac(id))) {
		return "", false
	}
	return id, true
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

// sharedSecret returns the resume-token secret stored at key, storing a new
// random one first if there is none, so that every node sharing the Redis
// signs and verifies with the same secret without configuration.
func sharedSecret(ctx context.Context, rdb redis.UniversalClient, key string) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	if err := rdb.SetNX(ctx, key, base64.RawStdEncoding.EncodeToString(fresh), 0).Err(); err != nil {
		return nil, fmt.Errorf("%w: storing the shared secret: %w", ErrUnavailable, err)
	}
	v, err := rdb.Get(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("%w: reading the shared secret: %w", ErrUnavailable, err)
	}
	secret, err := base64.RawStdEncoding.DecodeString(v)
	if err != nil || len(secret) < 16 {
		return nil, fmt.Errorf("socketio: the shared secret at %q is not a base64 secret of 16 bytes or more", key)
	}
	return secret, nil
}
