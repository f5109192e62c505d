package jwtauth

import (
	"context"
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"sync"
	"time"

	"github.com/qaplatform/socketio"
)

// maxJWKS bounds the body of a key set response.
const maxJWKS = 1 << 20

// minJWKSRefresh is how soon after a fetch an unknown kid may cause
// another.
const minJWKSRefresh = 10 * time.Second

// jwk is one usable key of a key set.
type jwk struct {
	kid string
	alg string // "" when the set does not say
	key crypto.PublicKey
}

// jwks is a key set fetched over HTTP and cached.
type jwks struct {
	url        string
	client     *http.Client
	refresh    time.Duration
	minRefresh time.Duration
	now        func() time.Time
	fetching   chan struct{} // a token: one fetch at a time

	mu      sync.Mutex
	set     []jwk
	fetched time.Time // of set
	tried   time.Time // the last fetch, successful or not
	lastErr error
}

func newJWKS(url string, client *http.Client, refresh time.Duration, now func() time.Time) *jwks {
	return &jwks{
		url: url, client: client, refresh: refresh, minRefresh: min(minJWKSRefresh, refresh), now: now,
		fetching: make(chan struct{}, 1),
	}
}

// keys returns the keys of the set named kid, or all of them when kid is
// empty, fetching the set first when it is missing, old, or lacks kid, but
// not twice within minRefresh. When it has no such key and the last fetch
// failed, it returns that failure.
func (c *jwks) keys(ctx context.Context, kid string) ([]jwk, error) {
	if keys, fresh := c.cached(kid); fresh {
		return keys, nil
	}
	select {
	case c.fetching <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: waiting for the key set: %w", socketio.ErrUnavailable, ctx.Err())
	}
	defer func() { <-c.fetching }()
	// Another call may have fetched while this one waited.
	keys, fresh := c.cached(kid)
	if fresh {
		return keys, nil
	}
	c.mu.Lock()
	recent := !c.tried.IsZero() && c.now().Sub(c.tried) < c.minRefresh
	lastErr := c.lastErr
	c.mu.Unlock()
	if !recent {
		set, err := c.fetch(ctx)
		c.mu.Lock()
		switch {
		case err == nil:
			c.set, c.fetched, c.tried, c.lastErr = set, c.now(), c.now(), nil
		case ctx.Err() == nil: // this caller giving up is no failure of the set
			c.tried, c.lastErr = c.now(), err
		}
		c.mu.Unlock()
		keys, _ = c.cached(kid)
		lastErr = err
	}
	if len(keys) == 0 && lastErr != nil {
		return nil, lastErr
	}
	return keys, nil
}

// cached returns the keys of the set named kid (all for ""), and whether
// the set is fresh and has some.
func (c *jwks) cached(kid string) (keys []jwk, fresh bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range c.set {
		if kid == "" || k.kid == kid {
			keys = append(keys, k)
		}
	}
	return keys, len(keys) > 0 && !c.fetched.IsZero() && c.now().Sub(c.fetched) < c.refresh
}

// fetch reads and parses the key set.
func (c *jwks) fetch(ctx context.Context) ([]jwk, error) {
	unavailable := func(err error) error {
		return fmt.Errorf("%w: fetching the key set %s: %w", socketio.ErrUnavailable, c.url, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return nil, unavailable(err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, unavailable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, unavailable(fmt.Errorf("status %s", resp.Status))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKS+1))
	if err != nil {
		return nil, unavailable(err)
	}
	if len(body) > maxJWKS {
		return nil, unavailable(fmt.Errorf("larger than %d bytes", maxJWKS))
	}
	set, err := parseJWKS(body)
	if err != nil {
		return nil, unavailable(err)
	}
	return set, nil
}

// rawJWK is a JSON Web Key (RFC 7517, 7518, 8037) as far as verifying
// signatures goes.
type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS returns the signing keys of a key set document. Keys it cannot
// use (encryption keys, unknown types or curves, malformed) are skipped; a
// set with none left is an error.
func parseJWKS(body []byte) ([]jwk, error) {
	var doc struct {
		Keys []rawJWK `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	var set []jwk
	for _, r := range doc.Keys {
		if r.Use != "" && r.Use != "sig" {
			continue
		}
		key, err := r.publicKey()
		if err != nil {
			continue
		}
		if r.Alg != "" && !fits(r.Alg, key) {
			continue
		}
		set = append(set, jwk{kid: r.Kid, alg: r.Alg, key: key})
	}
	if len(set) == 0 {
		return nil, errors.New("no usable signing key in the key set")
	}
	return set, nil
}

func (r rawJWK) publicKey() (crypto.PublicKey, error) {
	b64 := base64.RawURLEncoding.DecodeString
	switch r.Kty {
	case "RSA":
		n, err1 := b64(r.N)
		e, err2 := b64(r.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("malformed RSA key")
		}
		k := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if k.E < 3 || k.E%2 == 0 {
			return nil, errors.New("malformed RSA key")
		}
		if _, err := usualAlg(k); err != nil {
			return nil, err
		}
		return k, nil
	case "EC":
		var curve elliptic.Curve
		var check ecdh.Curve
		switch r.Crv {
		case "P-256":
			curve, check = elliptic.P256(), ecdh.P256()
		case "P-384":
			curve, check = elliptic.P384(), ecdh.P384()
		case "P-521":
			curve, check = elliptic.P521(), ecdh.P521()
		default:
			return nil, errors.New("unsupported curve")
		}
		size := (curve.Params().BitSize + 7) / 8
		x, err1 := b64(r.X)
		y, err2 := b64(r.Y)
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return nil, errors.New("malformed EC key")
		}
		// crypto/ecdh checks the point is on the curve.
		if _, err := check.NewPublicKey(append(append([]byte{4}, x...), y...)); err != nil {
			return nil, err
		}
		return &ecdsa.PublicKey{Curve: curve, X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}, nil
	case "OKP":
		x, err := b64(r.X)
		if r.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("unsupported or malformed OKP key")
		}
		return ed25519.PublicKey(x), nil
	}
	return nil, errors.New("unsupported key type")
}
