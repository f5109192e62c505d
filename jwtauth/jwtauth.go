// Package jwtauth verifies JSON Web Tokens for the socketio service: a
// Verifier's Verify method is an AuthOptions.TokenVerifier.
//
//	v, err := jwtauth.New(jwtauth.Options{Secret: secret, Issuer: "https://id.example"})
//	auth, err := socketio.NewAuth(socketio.AuthOptions{TokenVerifier: v.Verify})
//
// A token is accepted only when its algorithm is one of Options.Algorithms
// (so "none", and an HMAC token made with a public key as its secret, are
// refused), its signature verifies with a configured key (an HMAC secret,
// RSA, ECDSA or Ed25519 public keys, or a JSON Web Key Set fetched over
// HTTP), it has not expired ("exp" is required), it is not used before
// "nbf", its "iss" and "aud" match when configured, and it names a user
// ("sub", or Options.UserClaim).
//
// Concurrency: a Verifier is safe for concurrent use. It starts no
// goroutine: a key set is fetched, within the caller's context, by the
// Verify call that needs it.
//
// The package lives apart from socketio so that programs that do not verify
// JWTs do not compile it or its dependency, github.com/golang-jwt/jwt/v5.
package jwtauth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/qaplatform/socketio"
)

// Options configures New. At least one of Secret, PublicKeys and JWKSURL is
// needed.
type Options struct {
	// Secret is the key of HMAC tokens (HS256, HS384, HS512), 32 bytes or
	// more. default: none (HMAC tokens are refused)
	Secret []byte
	// PublicKeys verify signed tokens: *rsa.PublicKey (2048 bits or more),
	// *ecdsa.PublicKey (P-256, P-384, P-521) or ed25519.PublicKey
	// (jwt.ParseRSAPublicKeyFromPEM and its ECDSA and Ed25519 twins read
	// PEM files). A token is checked against each key that fits its
	// algorithm. default: none
	PublicKeys []crypto.PublicKey
	// JWKSURL, when set, is the address of a JSON Web Key Set (RFC 7517)
	// whose signing keys verify tokens, chosen by the token's "kid". It is
	// fetched when first needed, again once JWKSRefresh old, and when a
	// token names a kid it lacks (at most every 10 s, or every JWKSRefresh
	// if shorter). While it cannot be fetched the keys fetched last go on
	// verifying; with none yet, Verify fails with an error matching
	// socketio.ErrUnavailable (connections are refused as unavailable,
	// not unauthorized). default: none
	JWKSURL string
	// JWKSRefresh is how long a fetched key set is used before it is
	// fetched again. default: 1h
	JWKSRefresh time.Duration
	// HTTPClient fetches JWKSURL. default: a client with a 10 s timeout
	HTTPClient *http.Client
	// Algorithms are the only values of the token header's "alg" accepted,
	// among HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512,
	// ES256, ES384, ES512 and EdDSA ("none" never is). default: HS256 with
	// a Secret; for PublicKeys, the usual one of each key (RS256 for RSA,
	// ES256, ES384 or ES512 by curve, EdDSA); with JWKSURL, RS256, ES256,
	// ES384, ES512 and EdDSA
	Algorithms []string
	// Issuer, when set, must equal the token's "iss". default: not checked
	Issuer string
	// Audience, when set, must be one of the token's "aud". default: not
	// checked
	Audience string
	// Leeway is the clock skew allowed when checking "exp" and "nbf".
	// default: 0
	Leeway time.Duration
	// UserClaim names the claim holding the user id, a non-empty string.
	// default: "sub"
	UserClaim string
}

// maxToken bounds the tokens Verify parses.
const maxToken = 16 << 10

// Verifier checks tokens. It is created by New.
type Verifier struct {
	opts    Options
	methods []string
	keys    []crypto.PublicKey
	jwks    *jwks // nil without JWKSURL
	now     func() time.Time
}

var hmacAlgs = []string{"HS256", "HS384", "HS512"}

var knownAlgs = append(slices.Clone(hmacAlgs), "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")

// New returns a Verifier for opts. It reports a configuration that would
// accept no token, or one that names an unknown algorithm or unusable key.
func New(opts Options) (*Verifier, error) {
	if opts.UserClaim == "" {
		opts.UserClaim = "sub"
	}
	if opts.JWKSRefresh <= 0 {
		opts.JWKSRefresh = time.Hour
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.Leeway < 0 {
		return nil, errors.New("jwtauth: negative Leeway")
	}
	if len(opts.Secret) > 0 && len(opts.Secret) < 32 {
		return nil, errors.New("jwtauth: Secret is shorter than 32 bytes")
	}
	if len(opts.Secret) == 0 && len(opts.PublicKeys) == 0 && opts.JWKSURL == "" {
		return nil, errors.New("jwtauth: no Secret, PublicKeys or JWKSURL: no token could be verified")
	}
	var defaults []string
	if len(opts.Secret) > 0 {
		defaults = append(defaults, "HS256")
	}
	for _, k := range opts.PublicKeys {
		alg, err := usualAlg(k)
		if err != nil {
			return nil, err
		}
		defaults = append(defaults, alg)
	}
	if opts.JWKSURL != "" {
		defaults = append(defaults, "RS256", "ES256", "ES384", "ES512", "EdDSA")
	}
	methods := opts.Algorithms
	if len(methods) == 0 {
		methods = defaults
	}
	seen := map[string]bool{}
	for _, alg := range methods {
		switch {
		case !slices.Contains(knownAlgs, alg):
			return nil, fmt.Errorf("jwtauth: unknown or unsafe algorithm %q", alg)
		case slices.Contains(hmacAlgs, alg) && len(opts.Secret) == 0:
			return nil, fmt.Errorf("jwtauth: algorithm %s needs a Secret", alg)
		case !slices.Contains(hmacAlgs, alg) && len(opts.PublicKeys) == 0 && opts.JWKSURL == "":
			return nil, fmt.Errorf("jwtauth: algorithm %s needs PublicKeys or a JWKSURL", alg)
		}
		seen[alg] = true
	}
	v := &Verifier{opts: opts, keys: slices.Clone(opts.PublicKeys), now: time.Now}
	for _, alg := range knownAlgs { // a stable order, without duplicates
		if seen[alg] {
			v.methods = append(v.methods, alg)
		}
	}
	if opts.JWKSURL != "" {
		v.jwks = newJWKS(opts.JWKSURL, opts.HTTPClient, opts.JWKSRefresh, func() time.Time { return v.now() })
	}
	return v, nil
}

// usualAlg is the algorithm a public key is normally used with, or an
// error for a key that cannot be used.
func usualAlg(k crypto.PublicKey) (string, error) {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.BitLen() < 2048 {
			return "", errors.New("jwtauth: an RSA key shorter than 2048 bits")
		}
		return "RS256", nil
	case *ecdsa.PublicKey:
		if k != nil {
			switch k.Curve {
			case elliptic.P256():
				return "ES256", nil
			case elliptic.P384():
				return "ES384", nil
			case elliptic.P521():
				return "ES512", nil
			}
		}
		return "", errors.New("jwtauth: an ECDSA key on a curve other than P-256, P-384 or P-521")
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return "", errors.New("jwtauth: a malformed Ed25519 key")
		}
		return "EdDSA", nil
	}
	return "", fmt.Errorf("jwtauth: unsupported public key type %T", k)
}

// fits reports whether key verifies tokens of alg.
func fits(alg string, key crypto.PublicKey) bool {
	switch key.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey, ed25519.PublicKey:
		usual, err := usualAlg(key)
		return err == nil && usual == alg
	}
	return false
}

// Verify checks token and returns the user id it names. Its errors match
// socketio.ErrUnauthorized (and the jwt package's errors, such as
// jwt.ErrTokenExpired), except when a key set needed for the token cannot
// be fetched: those match socketio.ErrUnavailable.
func (v *Verifier) Verify(ctx context.Context, token string) (userID string, err error) {
	if len(token) > maxToken {
		return "", refused(errors.New("token too long"))
	}
	parserOpts := []jwt.ParserOption{
		jwt.WithValidMethods(v.methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(v.opts.Leeway),
		jwt.WithTimeFunc(v.now),
	}
	if v.opts.Issuer != "" {
		parserOpts = append(parserOpts, jwt.WithIssuer(v.opts.Issuer))
	}
	if v.opts.Audience != "" {
		parserOpts = append(parserOpts, jwt.WithAudience(v.opts.Audience))
	}
	claims := jwt.MapClaims{}
	_, err = jwt.NewParser(parserOpts...).ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		return v.keyFor(ctx, t)
	})
	if err != nil {
		if errors.Is(err, socketio.ErrUnavailable) {
			return "", err
		}
		return "", refused(err)
	}
	user, _ := claims[v.opts.UserClaim].(string)
	if user == "" {
		return "", refused(fmt.Errorf("token has no %q claim naming a user", v.opts.UserClaim))
	}
	return user, nil
}

// keyFor returns the keys that may verify t, whose algorithm the parser
// has already checked against v.methods.
func (v *Verifier) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if slices.Contains(hmacAlgs, alg) {
		return v.opts.Secret, nil
	}
	var set jwt.VerificationKeySet
	for _, k := range v.keys {
		if fits(alg, k) {
			set.Keys = append(set.Keys, k)
		}
	}
	if v.jwks != nil {
		kid, _ := t.Header["kid"].(string)
		keys, err := v.jwks.keys(ctx, kid)
		if err != nil && len(set.Keys) == 0 {
			return nil, err
		}
		for _, k := range keys {
			if (k.alg == "" || k.alg == alg) && fits(alg, k.key) {
				set.Keys = append(set.Keys, k.key)
			}
		}
	}
	if len(set.Keys) == 0 {
		return nil, fmt.Errorf("no %s key for this token", alg)
	}
	return set, nil
}

// verifyError is a refused token: it matches socketio.ErrUnauthorized and
// the cause.
type verifyError struct{ err error }

func refused(err error) error { return &verifyError{err} }

func (e *verifyError) Error() string   { return "jwtauth: " + e.err.Error() }
func (e *verifyError) Unwrap() []error { return []error{socketio.ErrUnauthorized, e.err} }
