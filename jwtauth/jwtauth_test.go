package jwtauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/qaplatform/socketio"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testKeys are generated once: RSA generation is slow under -race.
var testKeys = sync.OnceValue(func() (k struct {
	rsa, rsa2 *rsa.PrivateKey
	ec        *ecdsa.PrivateKey
	ed        ed25519.PrivateKey
},
) {
	var err error
	must := func(e error) {
		if e != nil {
			panic(e)
		}
	}
	k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	_, k.ed, err = ed25519.GenerateKey(rand.Reader)
	must(err)
	return k
})

var (
	testNow    = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	testSecret = []byte("a test secret of thirty-two bytes")
)

// claims returns valid claims for alice, changed by edits.
func claims(edits ...func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{
		"sub": "alice",
		"iss": "https://id.example",
		"aud": "qa",
		"exp": testNow.Add(time.Hour).Unix(),
		"nbf": testNow.Add(-time.Minute).Unix(),
	}
	for _, e := range edits {
		e(c)
	}
	return c
}

func set(k string, v any) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c[k] = v } }
func del(k string) func(jwt.MapClaims)        { return func(c jwt.MapClaims) { delete(c, k) } }

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	require.NoError(t, err)
	return s
}

func newAt(t *testing.T, opts Options, now func() time.Time) *Verifier {
	t.Helper()
	v, err := New(opts)
	require.NoError(t, err)
	v.now = now
	return v
}

func mustEC(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return k
}

func publicPEM(t *testing.T, k crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestVerify(t *testing.T) {
	k := testKeys()
	at := func() time.Time { return testNow }
	checked := Options{Issuer: "https://id.example", Audience: "qa"}
	with := func(o Options, f func(*Options)) Options { f(&o); return o }
	hs := newAt(t, with(checked, func(o *Options) { o.Secret = testSecret }), at)
	rs := newAt(t, with(checked, func(o *Options) { o.PublicKeys = []crypto.PublicKey{&k.rsa.PublicKey} }), at)
	es := newAt(t, with(checked, func(o *Options) { o.PublicKeys = []crypto.PublicKey{&k.ec.PublicKey} }), at)
	ed := newAt(t, with(checked, func(o *Options) { o.PublicKeys = []crypto.PublicKey{k.ed.Public()} }), at)
	both := newAt(t, with(checked, func(o *Options) {
		o.Secret, o.PublicKeys = testSecret, []crypto.PublicKey{&k.rsa.PublicKey}
	}), at)
	lenient := newAt(t, with(checked, func(o *Options) { o.Secret, o.Leeway = testSecret, time.Minute }), at)
	byUID := newAt(t, Options{Secret: testSecret, UserClaim: "uid"}, at)
	unchecked := newAt(t, Options{Secret: testSecret}, at)

	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(), "")
	rsaPEM := publicPEM(t, &k.rsa.PublicKey)

	cases := []struct {
		name  string
		v     *Verifier
		token string
		user  string // "" means refused
		cause error  // when refused, the jwt error it matches, if any
	}{
		{"HS256", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(), ""), "alice", nil},
		{"RS256", rs, sign(t, jwt.SigningMethodRS256, k.rsa, claims(), ""), "alice", nil},
		{"ES256", es, sign(t, jwt.SigningMethodES256, k.ec, claims(), ""), "alice", nil},
		{"EdDSA", ed, sign(t, jwt.SigningMethodEdDSA, k.ed, claims(), ""), "alice", nil},
		{"HS256 on a verifier of both kinds", both, sign(t, jwt.SigningMethodHS256, testSecret, claims(), ""), "alice", nil},
		{"RS256 on a verifier of both kinds", both, sign(t, jwt.SigningMethodRS256, k.rsa, claims(), ""), "alice", nil},
		{"iss and aud unchecked", unchecked, sign(t, jwt.SigningMethodHS256, testSecret, claims(del("iss"), del("aud")), ""), "alice", nil},
		{"aud among several", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("aud", []string{"other", "qa"})), ""), "alice", nil},
		{"user from a configured claim", byUID, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("uid", "u42")), ""), "u42", nil},

		{"expired", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("exp", testNow.Add(-time.Second).Unix())), ""), "", jwt.ErrTokenExpired},
		{"expired, within the leeway", lenient, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("exp", testNow.Add(-30*time.Second).Unix())), ""), "alice", nil},
		{"expired, past the leeway", lenient, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("exp", testNow.Add(-2*time.Minute).Unix())), ""), "", jwt.ErrTokenExpired},
		{"no exp", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(del("exp")), ""), "", jwt.ErrTokenRequiredClaimMissing},
		{"not yet valid", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("nbf", testNow.Add(time.Minute).Unix())), ""), "", jwt.ErrTokenNotValidYet},
		{"not yet valid, within the leeway", lenient, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("nbf", testNow.Add(30*time.Second).Unix())), ""), "alice", nil},
		{"wrong iss", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("iss", "https://evil.example")), ""), "", jwt.ErrTokenInvalidIssuer},
		{"no iss", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(del("iss")), ""), "", jwt.ErrTokenRequiredClaimMissing},
		{"wrong aud", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("aud", "other")), ""), "", jwt.ErrTokenInvalidAudience},
		{"no aud", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(del("aud")), ""), "", jwt.ErrTokenRequiredClaimMissing},
		{"alg none", hs, none, "", jwt.ErrTokenSignatureInvalid},
		{"alg none on an RSA verifier", rs, none, "", jwt.ErrTokenSignatureInvalid},
		{"HS256 made with the RSA public key as secret", rs, sign(t, jwt.SigningMethodHS256, rsaPEM, claims(), ""), "", jwt.ErrTokenSignatureInvalid},
		{"HS256 made with the RSA public key, where HS256 is allowed", both, sign(t, jwt.SigningMethodHS256, rsaPEM, claims(), ""), "", jwt.ErrTokenSignatureInvalid},
		{"RS256 where only HS256 is allowed", hs, sign(t, jwt.SigningMethodRS256, k.rsa, claims(), ""), "", jwt.ErrTokenSignatureInvalid},
		{"wrong secret", hs, sign(t, jwt.SigningMethodHS256, []byte("another secret of thirty-two bytes"), claims(), ""), "", jwt.ErrTokenSignatureInvalid},
		{"wrong RSA key", rs, sign(t, jwt.SigningMethodRS256, k.rsa2, claims(), ""), "", jwt.ErrTokenSignatureInvalid},
		{"ES256 signed by another key", es, sign(t, jwt.SigningMethodES256, mustEC(t), claims(), ""), "", jwt.ErrTokenSignatureInvalid},
		{"EdDSA on an ECDSA verifier", es, sign(t, jwt.SigningMethodEdDSA, k.ed, claims(), ""), "", jwt.ErrTokenSignatureInvalid},
		{"missing sub", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(del("sub")), ""), "", nil},
		{"empty sub", hs, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("sub", "")), ""), "", nil},
		{"sub not a string", unchecked, sign(t, jwt.SigningMethodHS256, testSecret, claims(set("sub", 42)), ""), "", nil},
		{"configured claim missing", byUID, sign(t, jwt.SigningMethodHS256, testSecret, claims(), ""), "", nil},
		{"garbage", hs, "not.a.jwt", "", jwt.ErrTokenMalformed},
		{"empty", hs, "", "", jwt.ErrTokenMalformed},
		{"too long", hs, strings.Repeat("a", maxToken+1), "", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user, err := tc.v.Verify(context.Background(), tc.token)
			if tc.user != "" {
				require.NoError(t, err)
				assert.Equal(t, tc.user, user)
				return
			}
			require.Error(t, err)
			assert.Empty(t, user)
			assert.ErrorIs(t, err, socketio.ErrUnauthorized)
			assert.NotErrorIs(t, err, socketio.ErrUnavailable)
			assert.Equal(t, socketio.CodeUnauthorized, socketio.ErrorCode(err))
			if tc.cause != nil {
				assert.ErrorIs(t, err, tc.cause)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	require.NoError(t, err)
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	require.NoError(t, err)
	cases := map[string]Options{
		"no key":                       {},
		"short secret":                 {Secret: []byte("short")},
		"alg none":                     {Secret: testSecret, Algorithms: []string{"none"}},
		"unknown alg":                  {Secret: testSecret, Algorithms: []string{"HS1"}},
		"HMAC alg without a secret":    {PublicKeys: []crypto.PublicKey{&testKeys().rsa.PublicKey}, Algorithms: []string{"HS256"}},
		"RSA alg without a public key": {Secret: testSecret, Algorithms: []string{"RS256"}},
		"small RSA key":                {PublicKeys: []crypto.PublicKey{&small.PublicKey}},
		"unsupported curve":            {PublicKeys: []crypto.PublicKey{&p224.PublicKey}},
		"unsupported key type":         {PublicKeys: []crypto.PublicKey{"a string"}},
		"negative leeway":              {Secret: testSecret, Leeway: -time.Second},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := New(opts)
			assert.Error(t, err)
		})
	}
}

// keySet serves a JSON Web Key Set that a test can change, and counts the
// fetches.
type keySet struct {
	srv     *httptest.Server
	doc     atomic.Pointer[[]byte]
	status  atomic.Int32 // when not 0, answered instead of the set
	fetches atomic.Int32
}

func serveKeySet(t *testing.T, keys ...map[string]any) *keySet {
	t.Helper()
	ks := &keySet{}
	ks.set(t, keys...)
	ks.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.fetches.Add(1)
		if s := ks.status.Load(); s != 0 {
			w.WriteHeader(int(s))
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(*ks.doc.Load())
	}))
	t.Cleanup(ks.srv.Close)
	return ks
}

func (ks *keySet) set(t *testing.T, keys ...map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	require.NoError(t, err)
	ks.doc.Store(&b)
}

var b64 = base64.RawURLEncoding.EncodeToString

// jwkOf renders a public key as a JSON Web Key.
func jwkOf(t *testing.T, kid string, key crypto.PublicKey) map[string]any {
	t.Helper()
	switch k := key.(type) {
	case *rsa.PublicKey:
		return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	case *ecdsa.PublicKey:
		e, err := k.ECDH()
		require.NoError(t, err)
		raw := e.Bytes()[1:]
		return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(raw[:len(raw)/2]), "y": b64(raw[len(raw)/2:])}
	case ed25519.PublicKey:
		return map[string]any{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64(k)}
	}
	t.Fatalf("no JWK for %T", key)
	return nil
}

// clock is a test clock a Verifier reads.
type clock struct{ now atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(0, c.now.Load()) }
func (c *clock) Advance(d time.Duration) { c.now.Add(int64(d)) }
func newClock() *clock                   { c := &clock{}; c.now.Store(testNow.UnixNano()); return c }

func TestJWKS(t *testing.T) {
	k := testKeys()
	ks := serveKeySet(t,
		jwkOf(t, "rsa-1", &k.rsa.PublicKey),
		jwkOf(t, "ec-1", &k.ec.PublicKey),
		jwkOf(t, "ed-1", k.ed.Public()),
		map[string]any{"kty": "RSA", "kid": "enc-1", "use": "enc", "n": "AQAB", "e": "AQAB"},
		map[string]any{"kty": "oct", "kid": "hmac-1", "k": b64(testSecret)},
		map[string]any{"kty": "EC", "kid": "bad-1", "crv": "P-256", "x": b64(make([]byte, 32)), "y": b64(make([]byte, 32))},
	)
	clk := newClock()
	v := newAt(t, Options{JWKSURL: ks.srv.URL, HTTPClient: ks.srv.Client()}, clk.Now)
	ctx := context.Background()
	for _, tc := range []struct {
		kid    string
		method jwt.SigningMethod
		key    any
	}{
		{"rsa-1", jwt.SigningMethodRS256, k.rsa},
		{"ec-1", jwt.SigningMethodES256, k.ec},
		{"ed-1", jwt.SigningMethodEdDSA, k.ed},
		{"", jwt.SigningMethodRS256, k.rsa}, // no kid: every key that fits is tried
	} {
		user, err := v.Verify(ctx, sign(t, tc.method, tc.key, claims(), tc.kid))
		require.NoError(t, err, tc.kid)
		assert.Equal(t, "alice", user)
	}
	assert.EqualValues(t, 1, ks.fetches.Load(), "one fetch serves every token while fresh")

	for name, token := range map[string]string{
		"a key of the set under another kid": sign(t, jwt.SigningMethodRS256, k.rsa, claims(), "ec-1"),
		"a kid the set lacks":                sign(t, jwt.SigningMethodRS256, k.rsa2, claims(), "rsa-2"),
		"an HMAC key of the set":             sign(t, jwt.SigningMethodHS256, testSecret, claims(), "hmac-1"),
		"alg none":                           sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(), "rsa-1"),
		"the RSA key as an HMAC secret":      sign(t, jwt.SigningMethodHS256, publicPEM(t, &k.rsa.PublicKey), claims(), "rsa-1"),
		"expired":                            sign(t, jwt.SigningMethodRS256, k.rsa, claims(set("exp", testNow.Add(-time.Minute).Unix())), "rsa-1"),
	} {
		_, err := v.Verify(ctx, token)
		assert.ErrorIs(t, err, socketio.ErrUnauthorized, name)
	}
	assert.EqualValues(t, 1, ks.fetches.Load(), "an unknown kid refetches at most every 10 s")
}

func TestJWKSRotation(t *testing.T) {
	k := testKeys()
	ks := serveKeySet(t, jwkOf(t, "k1", &k.rsa.PublicKey))
	clk := newClock()
	v := newAt(t, Options{JWKSURL: ks.srv.URL, HTTPClient: ks.srv.Client()}, clk.Now)
	ctx := context.Background()
	verify := func(key *rsa.PrivateKey, kid string) error {
		// Tokens are issued at the current test time.
		c := claims(set("exp", clk.Now().Add(time.Hour).Unix()), set("nbf", clk.Now().Unix()))
		_, err := v.Verify(ctx, sign(t, jwt.SigningMethodRS256, key, c, kid))
		return err
	}
	require.NoError(t, verify(k.rsa, "k1"))

	// The issuer adds k2 and signs with it: the first token naming k2
	// fetches the set again.
	ks.set(t, jwkOf(t, "k1", &k.rsa.PublicKey), jwkOf(t, "k2", &k.rsa2.PublicKey))
	clk.Advance(11 * time.Second)
	require.NoError(t, verify(k.rsa2, "k2"))
	require.NoError(t, verify(k.rsa, "k1"))
	assert.EqualValues(t, 2, ks.fetches.Load())

	// Then it drops k1: once the set is refetched, k1's tokens are refused.
	ks.set(t, jwkOf(t, "k2", &k.rsa2.PublicKey))
	clk.Advance(time.Hour)
	assert.ErrorIs(t, verify(k.rsa, "k1"), socketio.ErrUnauthorized)
	require.NoError(t, verify(k.rsa2, "k2"))
	assert.EqualValues(t, 3, ks.fetches.Load())
	// A forged kid costs no fetch within 10 s of the last.
	assert.ErrorIs(t, verify(k.rsa2, "k3"), socketio.ErrUnauthorized)
	assert.EqualValues(t, 3, ks.fetches.Load())
}

func TestJWKSUnavailable(t *testing.T) {
	k := testKeys()
	ks := serveKeySet(t, jwkOf(t, "k1", &k.rsa.PublicKey))
	ks.status.Store(http.StatusInternalServerError)
	clk := newClock()
	v := newAt(t, Options{JWKSURL: ks.srv.URL, HTTPClient: ks.srv.Client()}, clk.Now)
	ctx := context.Background()
	token := func() string {
		return sign(t, jwt.SigningMethodRS256, k.rsa, claims(set("exp", clk.Now().Add(time.Hour).Unix())), "k1")
	}

	// No set yet: the token cannot be judged, which is not its fault.
	_, err := v.Verify(ctx, token())
	assert.ErrorIs(t, err, socketio.ErrUnavailable)
	assert.NotErrorIs(t, err, socketio.ErrUnauthorized)
	_, err = v.Verify(ctx, token())
	assert.ErrorIs(t, err, socketio.ErrUnavailable)
	assert.EqualValues(t, 1, ks.fetches.Load(), "a failed fetch is not retried at once")

	ks.status.Store(0)
	clk.Advance(11 * time.Second)
	_, err = v.Verify(ctx, token())
	require.NoError(t, err)

	// Down again when the set is due: the keys fetched last still verify.
	ks.status.Store(http.StatusBadGateway)
	clk.Advance(2 * time.Hour)
	_, err = v.Verify(ctx, token())
	require.NoError(t, err)
	assert.EqualValues(t, 3, ks.fetches.Load())
}

func TestJWKSBodyIsBounded(t *testing.T) {
	k := testKeys()
	huge := `{"keys":[` + strings.Repeat(`{"kty":"none"},`, maxJWKS/14) + `{"kty":"none"}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(huge))
	}))
	t.Cleanup(srv.Close)
	v := newAt(t, Options{JWKSURL: srv.URL, HTTPClient: srv.Client()}, func() time.Time { return testNow })
	_, err := v.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, k.rsa, claims(), "k1"))
	assert.ErrorIs(t, err, socketio.ErrUnavailable)
	assert.ErrorContains(t, err, "larger than")
}

func TestJWKSFetchHonoursContext(t *testing.T) {
	k := testKeys()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	v := newAt(t, Options{JWKSURL: srv.URL, HTTPClient: srv.Client()}, func() time.Time { return testNow })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := v.Verify(ctx, sign(t, jwt.SigningMethodRS256, k.rsa, claims(), "k1"))
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, socketio.ErrUnavailable)
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Verify did not return when its context ended")
	}
}
