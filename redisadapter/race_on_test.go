//go:build race

package redisadapter_test

const raceEnabled = true
