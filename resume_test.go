package socketio

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResumeTokens(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s1, s2, s3 := []byte("secret number one, 32 bytes long"), []byte("secret number two, 32 bytes long"), []byte("a third secret, never configured")
	k1, k2 := newResumeKey(s1), newResumeKey(s2)
	retired := k1
	retired.until = now.Add(time.Hour)

	current := newKeyring(k2, time.Hour, now)
	withPrevious := newKeyring(k2, time.Hour, now, k1)
	withRetiring := newKeyring(k2, time.Hour, now, retired)
	other := newKeyring(newResumeKey(s3), time.Hour, now)
	byK1 := newKeyring(k1, time.Hour, now)

	oldFormat := func(secret []byte, id string) string { // before key ids
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("resume:" + id))
		return id + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	tok := current.sign("s_abc", now)
	parts := strings.Split(tok, ".")
	require.Len(t, parts, 4)
	assert.Equal(t, k2.kid, parts[1], "the token names the secret that signed it")
	assert.Len(t, k2.kid, 8)
	assert.NotEqual(t, k1.kid, k2.kid)

	cases := []struct {
		name  string
		ring  *resumeKeyring
		token string
		at    time.Time
		ok    bool
	}{
		{"signed by the current secret", current, tok, now, true},
		{"just before expiry", current, tok, now.Add(time.Hour - time.Second), true},
		{"expired", current, tok, now.Add(time.Hour), false},
		{"long expired", current, tok, now.Add(48 * time.Hour), false},
		{"signed by a previous secret", withPrevious, byK1.sign("s_abc", now), now, true},
		{"signed by a retiring secret before it retires", withRetiring, byK1.sign("s_abc", now), now.Add(30 * time.Minute), true},
		{"signed by a retired secret", withRetiring, byK1.sign("s_abc", now.Add(30*time.Minute)), now.Add(61 * time.Minute), false},
		{"signed by an unknown secret", current, other.sign("s_abc", now), now, false},
		{"previous secret not configured", current, byK1.sign("s_abc", now), now, false},
		{"unknown kid", current, "s_abc.AAAAAAAA." + parts[2] + "." + parts[3], now, false},
		{"kid of a known secret, mac of another", withPrevious, "s_abc." + k1.kid + "." + parts[2] + "." + parts[3], now, false},
		{"expiry moved", current, "s_abc." + parts[1] + ".99999999999." + parts[3], now, false},
		{"session id changed", current, "s_abd." + strings.Join(parts[1:], "."), now, false},
		{"old format", current, oldFormat(s2, "s_abc"), now, false},
		{"too many parts", current, tok + ".x", now, false},
		{"no session id", current, "." + strings.Join(parts[1:], "."), now, false},
		{"empty", current, "", now, false},
		{"too long", current, strings.Repeat("a", maxResumeToken) + tok, now, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, ok := tc.ring.verify(tc.token, tc.at)
			assert.Equal(t, tc.ok, ok)
			if tc.ok {
				assert.Equal(t, "s_abc", id)
			}
		})
	}
}

func TestNewKeyringKeepsTheLastingKeys(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cur := newResumeKey([]byte("the current secret, 32 bytes ..."))
	var prev []resumeKey
	for i := range maxPreviousKeys + 4 {
		k := newResumeKey([]byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
		k.until = now.Add(time.Duration(i-2) * time.Minute) // the first two have expired
		prev = append(prev, k, k)                           // duplicates collapse
	}
	static := newResumeKey([]byte("a configured previous secret...."))
	ring := newKeyring(cur, time.Hour, now, append(prev, cur, static)...)
	require.Len(t, ring.previous, maxPreviousKeys)
	assert.Equal(t, static.kid, ring.previous[0].kid, "configured secrets never expire and go first")
	assert.Equal(t, prev[len(prev)-1].kid, ring.previous[1].kid, "then the latest to expire")
	for _, p := range ring.previous {
		assert.NotEqual(t, cur.kid, p.kid)
	}
}
