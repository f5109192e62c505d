package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/qaplatform/socketio/internal/sioclient"
)

func TestSecretSettings(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	resumeFile := file("resume", "from a file\n")
	previousFile := file("previous", "the old one\r\n")
	jwtFile := file("jwt", "a JWT secret of thirty-two bytes!\n")
	empty := file("empty", "\n")

	cases := []struct {
		name string
		args []string
		env  map[string]string
		want secretConfig
		err  string
	}{
		{"none", nil, nil, secretConfig{}, ""},
		{"env", nil, map[string]string{"QA_SECRET": "s1", "QA_PREVIOUS_SECRET": "s0", "QA_JWT_SECRET": "j", "QA_JWT_ISSUER": "iss", "QA_JWT_AUDIENCE": "aud"},
			secretConfig{resume: []byte("s1"), previous: [][]byte{[]byte("s0")}, jwtSecret: []byte("j"), jwtIssuer: "iss", jwtAudience: "aud"}, ""},
		{"files by env", nil, map[string]string{"QA_SECRET_FILE": resumeFile, "QA_PREVIOUS_SECRET_FILE": previousFile, "QA_JWT_SECRET_FILE": jwtFile},
			secretConfig{resume: []byte("from a file"), previous: [][]byte{[]byte("the old one")}, jwtSecret: []byte("a JWT secret of thirty-two bytes!")}, ""},
		{"files by flag", []string{"-secret-file", resumeFile, "-jwt-secret-file", jwtFile, "-jwt-issuer", "iss"}, nil,
			secretConfig{resume: []byte("from a file"), jwtSecret: []byte("a JWT secret of thirty-two bytes!"), jwtIssuer: "iss"}, ""},
		{"deprecated flag still works", []string{"-secret", "s2"}, nil, secretConfig{resume: []byte("s2")}, ""},
		{"deprecated flag and env", []string{"-secret", "s2"}, map[string]string{"QA_SECRET": "s1"}, secretConfig{}, "deprecated"},
		{"env and file", nil, map[string]string{"QA_SECRET": "s1", "QA_SECRET_FILE": resumeFile}, secretConfig{}, "set one"},
		{"missing file", nil, map[string]string{"QA_JWT_SECRET_FILE": filepath.Join(dir, "nope")}, secretConfig{}, "QA_JWT_SECRET_FILE"},
		{"empty file", []string{"-secret-file", empty}, nil, secretConfig{}, "is empty"},
		{"issuer without a JWT secret", nil, map[string]string{"QA_JWT_ISSUER": "iss"}, secretConfig{}, "need a JWT secret"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args, func(k string) string { return tc.env[k] })
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, c.secrets)
		})
	}
}

// TestJWTSecretRequiresTokens starts the demo with QA_JWT_SECRET: a
// connection needs a valid, unexpired token of the configured issuer, and
// its sub becomes the user.
func TestJWTSecretRequiresTokens(t *testing.T) {
	secret := "a JWT secret of thirty-two bytes!"
	env := map[string]string{"QA_JWT_SECRET": secret, "QA_JWT_ISSUER": "https://id.example"}
	cfg, err := parseConfig(nil, func(k string) string { return env[k] })
	require.NoError(t, err)
	hs := serve(t, cfg)
	token := func(secret, iss string, exp time.Time) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u42", "iss": iss, "exp": exp.Unix()}).SignedString([]byte(secret))
		require.NoError(t, err)
		return s
	}
	dial := func(auth map[string]any) (*sioclient.Client, error) {
		c, err := sioclient.Dial(context.Background(), sioclient.Options{URL: hs.URL, Auth: auth, Timeout: 5 * time.Second})
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	later := time.Now().Add(time.Hour)
	for name, auth := range map[string]map[string]any{
		"no token":     nil,
		"garbage":      {"token": "nope"},
		"expired":      {"token": token(secret, "https://id.example", time.Now().Add(-time.Minute))},
		"wrong issuer": {"token": token(secret, "https://evil.example", later)},
		"wrong secret": {"token": token("another JWT secret, thirty-two bytes", "https://id.example", later)},
	} {
		_, err := dial(auth)
		var ce *sioclient.ConnectError
		require.ErrorAs(t, err, &ce, name)
		assert.Equal(t, "unauthorized", ce.Message, name)
	}
	c, err := dial(map[string]any{"token": token(secret, "https://id.example", later)})
	require.NoError(t, err)
	args, err := c.Next(context.Background(), "connected")
	require.NoError(t, err)
	assert.Equal(t, "u42", args[0].(map[string]any)["user_id"])

	// A secret too short for HS256 is refused at start.
	cfg.secrets.jwtSecret = []byte("short")
	_, _, err = newService(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.ErrorContains(t, err, "32 bytes")
}
