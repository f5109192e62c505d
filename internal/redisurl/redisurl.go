// Package redisurl reads the -redis-url flag of the commands: one server,
// Sentinels or a Cluster, each in go-redis's own URL form.
package redisurl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Target is the deployment a -redis-url names: exactly one of its
// fields is set.
type Target struct {
	single   *redis.Options
	sentinel *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

// Parse reads a -redis-url. The scheme says which go-redis parser
// reads the rest, in that parser's own form:
//
//	redis://, rediss://                  one server: redis.ParseURL
//	redis+sentinel://, rediss+sentinel:// Sentinels: redis.ParseFailoverURL
//	                                      (?master_name= is required)
//	redis+cluster://, rediss+cluster://   Cluster seeds: redis.ParseClusterURL
//
// Further hosts of a Sentinel or Cluster URL go in addr= query options.
func Parse(s string) (Target, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return Target{}, fmt.Errorf("%q is not a URL (redis://, redis+sentinel:// or redis+cluster://)", s)
	}
	base, kind, _ := strings.Cut(scheme, "+")
	if base != "redis" && base != "rediss" {
		return Target{}, fmt.Errorf("unknown scheme %q (redis, rediss, redis+sentinel, redis+cluster)", scheme)
	}
	plain := base + "://" + rest
	switch kind {
	case "":
		o, err := redis.ParseURL(plain)
		return Target{single: o}, err
	case "sentinel":
		o, err := redis.ParseFailoverURL(plain)
		if err != nil {
			return Target{}, err
		}
		if o.MasterName == "" {
			return Target{}, errors.New("a redis+sentinel URL needs ?master_name=<name>")
		}
		return Target{sentinel: o}, nil
	case "cluster":
		o, err := redis.ParseClusterURL(plain)
		return Target{cluster: o}, err
	}
	return Target{}, fmt.Errorf("unknown scheme %q (redis, rediss, redis+sentinel, redis+cluster)", scheme)
}

// Client opens the client of t.
func (t Target) Client() redis.UniversalClient {
	switch {
	case t.sentinel != nil:
		return redis.NewFailoverClient(t.sentinel)
	case t.cluster != nil:
		return redis.NewClusterClient(t.cluster)
	}
	return redis.NewClient(t.single)
}

// String names the deployment for messages (no credentials).
func (t Target) String() string {
	switch {
	case t.sentinel != nil:
		return "master " + t.sentinel.MasterName + " of the Sentinels " + strings.Join(t.sentinel.SentinelAddrs, ",")
	case t.cluster != nil:
		return "the Cluster of " + strings.Join(t.cluster.Addrs, ",")
	}
	return t.single.Addr
}

// Connect opens the client for a -redis-url and checks the server
// answers, so that a wrong URL fails at start, not at the first request.
func Connect(url string) (redis.UniversalClient, error) {
	target, err := Parse(url)
	if err != nil {
		return nil, fmt.Errorf("-redis-url: %w", err)
	}
	client := target.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return nil, fmt.Errorf("-redis-url: %s does not answer: %w", target, err)
	}
	return client, nil
}
