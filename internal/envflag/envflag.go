// Package envflag reads the environment twins of the commands' flags: a
// flag's default comes from its variable when that is set, and a variable
// that does not parse is an error reported with the others.
package envflag

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Env reads variables through Getenv and collects their parse errors.
type Env struct {
	Getenv func(string) string
	errs   []error
}

// String returns the variable name, or def when it is unset or empty.
func (e *Env) String(name, def string) string {
	if v := e.Getenv(name); v != "" {
		return v
	}
	return def
}

// Int returns the variable name as an int, or def when it is unset.
func (e *Env) Int(name string, def int) int {
	v := e.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s: %w", name, err))
		return def
	}
	return n
}

// Duration returns the variable name as a time.Duration, or def when it
// is unset.
func (e *Env) Duration(name string, def time.Duration) time.Duration {
	v := e.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		e.errs = append(e.errs, fmt.Errorf("%s: %w", name, err))
		return def
	}
	return d
}

// Err returns the parse errors so far, joined, or nil.
func (e *Env) Err() error { return errors.Join(e.errs...) }
