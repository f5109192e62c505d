package socketio

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logRepeatInterval is how often a repeated log line of one connection is
// written at most: its first occurrence, then one summary per interval.
const logRepeatInterval = 10 * time.Second

// maxLimitedLines bounds the distinct lines a logLimiter tracks; lines past
// it are written unthrottled (the call sites are few, so it is not hit).
const maxLimitedLines = 32

// logLimiter thins out the repeated log lines of one connection, so that a
// flooding client cannot fill the log: the first occurrence of a line (its
// level, message and key) is written; later ones within interval are only
// counted; the first one after the interval is written with "suppressed",
// the number left out; flush writes the counts still outstanding. It is
// safe for concurrent use.
type logLimiter struct {
	logger   *slog.Logger
	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	lines map[logLineKey]*logLineState
}

type logLineKey struct {
	level    slog.Level
	msg, key string
}

type logLineState struct {
	next       time.Time // when the next occurrence is written
	suppressed int
	args       []any // of the last occurrence left out, for flush
}

func newLogLimiter(logger *slog.Logger) *logLimiter {
	return &logLimiter{logger: logger, interval: logRepeatInterval, now: time.Now, lines: map[logLineKey]*logLineState{}}
}

// log writes msg with args at level, unless the same line (level, msg and
// key, such as the event name) was written less than an interval ago.
func (l *logLimiter) log(level slog.Level, msg, key string, args ...any) {
	ctx := context.Background()
	if !l.logger.Enabled(ctx, level) {
		return
	}
	k := logLineKey{level, msg, key}
	now := l.now()
	l.mu.Lock()
	st := l.lines[k]
	switch {
	case st == nil:
		if len(l.lines) < maxLimitedLines {
			l.lines[k] = &logLineState{next: now.Add(l.interval)}
		}
	case now.Before(st.next):
		st.suppressed++
		st.args = args
		l.mu.Unlock()
		return
	default:
		if st.suppressed > 0 {
			args = append(args[:len(args):len(args)], "suppressed", st.suppressed)
		}
		st.suppressed, st.args, st.next = 0, nil, now.Add(l.interval)
	}
	// Written under the lock, so that a summary (from a concurrent
	// occurrence or flush) never reaches the log before the line it sums.
	l.logger.Log(ctx, level, msg, args...)
	l.mu.Unlock()
}

// flush writes one summary, with "suppressed", for each line whose
// repeats have not been reported. The connection calls it when it ends;
// the intervals still hold, so a straggler of a flood that logs after it
// is only counted.
func (l *logLimiter) flush() {
	type pending struct {
		k  logLineKey
		st logLineState
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []pending
	for k, st := range l.lines {
		if st.suppressed > 0 {
			out = append(out, pending{k, *st})
			st.suppressed, st.args = 0, nil
		}
	}
	for _, p := range out {
		args := append(p.st.args[:len(p.st.args):len(p.st.args)], "suppressed", p.st.suppressed)
		l.logger.Log(context.Background(), p.k.level, p.k.msg, args...)
	}
}
