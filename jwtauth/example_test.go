package jwtauth_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/jwtauth"
)

// A Verifier's Verify is an AuthOptions.TokenVerifier: connections need a
// valid token, and the user it names owns the session's history.
func Example() {
	secret := []byte("the identity provider's HMAC secret")
	verifier, err := jwtauth.New(jwtauth.Options{
		Secret:   secret,
		Issuer:   "https://id.example",
		Audience: "qa",
		Leeway:   30 * time.Second,
	})
	if err != nil {
		panic(err)
	}
	auth, err := socketio.NewAuth(socketio.AuthOptions{TokenVerifier: verifier.Verify})
	if err != nil {
		panic(err)
	}
	defer auth.Close()

	// What the identity provider issues.
	token, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "user123",
		"iss": "https://id.example",
		"aud": "qa",
		"exp": time.Now().Add(time.Hour).Unix(),
	}).SignedString(secret)

	ctx := context.Background()
	user, err := auth.CheckConnect(ctx, "sock1", "203.0.113.7", token)
	fmt.Printf("%q %v\n", user, err)

	damaged := []byte(token)
	if i := len(damaged) - 10; damaged[i] == 'A' { // one character of the signature
		damaged[i] = 'B'
	} else {
		damaged[i] = 'A'
	}
	_, err = verifier.Verify(ctx, string(damaged))
	fmt.Println(errors.Is(err, socketio.ErrUnauthorized), errors.Is(err, jwt.ErrTokenSignatureInvalid))
	// Output:
	// "user123" <nil>
	// true true
}
