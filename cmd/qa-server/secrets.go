package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/jwtauth"
)

// secretConfig holds the credentials of the demo server. Secrets come from
// the environment or from files, never from flags, which any user of the
// machine can read in ps; only the deprecated -secret is a flag.
type secretConfig struct {
	resume      []byte   // signs resume tokens; empty: random, or shared through Redis
	previous    [][]byte // resume secrets still accepted
	jwtSecret   []byte   // when set, connections need a valid HS256 JWT
	jwtIssuer   string
	jwtAudience string
}

// secretFlags is what addSecretFlags registers, read by resolve once the
// flags are parsed.
type secretFlags struct {
	getenv                   func(string) string
	secret                   string // deprecated flag
	secretFlagSet            bool
	secretFile, previousFile string
	jwtSecretFile            string
	jwtIssuer, jwtAudience   string
}

// addSecretFlags registers the flags of the secrets and the JWT check.
func addSecretFlags(fs *flag.FlagSet, getenv func(string) string) *secretFlags {
	f := &secretFlags{getenv: getenv}
	env := getenv
	fs.StringVar(&f.secret, "secret", "", "DEPRECATED, shows in ps: use QA_SECRET or -secret-file")
	fs.StringVar(&f.secretFile, "secret-file", env("QA_SECRET_FILE"), "file holding the secret that signs resume tokens (or env QA_SECRET); when neither is set, random per start, or shared through Redis with -redis-url (env QA_SECRET_FILE)")
	fs.StringVar(&f.previousFile, "previous-secret-file", env("QA_PREVIOUS_SECRET_FILE"), "file holding the previous resume secret, still accepted while tokens it signed live, to rotate without ending sessions (or env QA_PREVIOUS_SECRET) (env QA_PREVIOUS_SECRET_FILE)")
	fs.StringVar(&f.jwtSecretFile, "jwt-secret-file", env("QA_JWT_SECRET_FILE"), "file holding the HMAC secret (32 bytes or more) of the HS256 JWTs clients must present as auth.token, their user in sub (or env QA_JWT_SECRET); unset: no token needed (env QA_JWT_SECRET_FILE)")
	fs.StringVar(&f.jwtIssuer, "jwt-issuer", env("QA_JWT_ISSUER"), "with a JWT secret: the iss tokens must carry (env QA_JWT_ISSUER)")
	fs.StringVar(&f.jwtAudience, "jwt-audience", env("QA_JWT_AUDIENCE"), "with a JWT secret: an aud tokens must carry (env QA_JWT_AUDIENCE)")
	return f
}

// resolve reads the secrets from the environment and the files named.
func (f *secretFlags) resolve(fs *flag.FlagSet) (secretConfig, error) {
	fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "secret" {
			f.secretFlagSet = true
		}
	})
	var c secretConfig
	var errs []error
	pick := func(envName, file, fileSetting string) []byte {
		v := f.getenv(envName)
		if v != "" && file != "" {
			errs = append(errs, fmt.Errorf("both %s and %s are set; set one", envName, fileSetting))
			return nil
		}
		if file == "" {
			if v == "" {
				return nil
			}
			return []byte(v)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", fileSetting, err))
			return nil
		}
		b = []byte(strings.TrimRight(string(b), "\r\n"))
		if len(b) == 0 {
			errs = append(errs, fmt.Errorf("%s: %s is empty", fileSetting, file))
		}
		return b
	}
	c.resume = pick("QA_SECRET", f.secretFile, "-secret-file/QA_SECRET_FILE")
	if f.secretFlagSet {
		if len(c.resume) > 0 {
			errs = append(errs, errors.New("-secret is set as well as QA_SECRET or -secret-file; drop the deprecated -secret"))
		}
		c.resume = []byte(f.secret)
	}
	if p := pick("QA_PREVIOUS_SECRET", f.previousFile, "-previous-secret-file/QA_PREVIOUS_SECRET_FILE"); len(p) > 0 {
		c.previous = [][]byte{p}
	}
	c.jwtSecret = pick("QA_JWT_SECRET", f.jwtSecretFile, "-jwt-secret-file/QA_JWT_SECRET_FILE")
	c.jwtIssuer, c.jwtAudience = f.jwtIssuer, f.jwtAudience
	if len(c.jwtSecret) == 0 && (c.jwtIssuer != "" || c.jwtAudience != "") {
		errs = append(errs, errors.New("-jwt-issuer and -jwt-audience need a JWT secret (QA_JWT_SECRET or -jwt-secret-file)"))
	}
	return c, errors.Join(errs...)
}

// apply puts the secrets into the options of the service and its Auth.
func (c secretConfig) apply(opts *socketio.Options, auth *socketio.AuthOptions) error {
	opts.Secret, opts.PreviousSecrets = c.resume, c.previous
	if len(c.jwtSecret) == 0 {
		return nil
	}
	v, err := jwtauth.New(jwtauth.Options{Secret: c.jwtSecret, Issuer: c.jwtIssuer, Audience: c.jwtAudience})
	if err != nil {
		return fmt.Errorf("JWT secret: %w", err)
	}
	auth.TokenVerifier = v.Verify
	return nil
}
