//go:build !race

package redisadapter_test

const raceEnabled = false
