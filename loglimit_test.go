package socketio

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lineRecorder keeps each record as "LEVEL msg key=value ...".
type lineRecorder struct {
	mu    sync.Mutex
	level slog.Level
	lines []string
}

func (h *lineRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *lineRecorder) Handle(_ context.Context, r slog.Record) error {
	s := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		s += fmt.Sprintf(" %s=%v", a.Key, a.Value.Any())
		return true
	})
	h.mu.Lock()
	h.lines = append(h.lines, s)
	h.mu.Unlock()
	return nil
}
func (h *lineRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *lineRecorder) WithGroup(string) slog.Handler      { return h }

func (h *lineRecorder) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.lines
	h.lines = nil
	return out
}

func TestLogLimiter(t *testing.T) {
	rec := &lineRecorder{level: slog.LevelInfo}
	l := newLogLimiter(slog.New(rec))
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }

	// First occurrence written, repeats within the interval counted.
	for i := range 5 {
		l.log(slog.LevelWarn, "flood", "", "n", i)
	}
	assert.Equal(t, []string{"WARN flood n=0"}, rec.take())

	// Another key, another level or another message is another line.
	l.log(slog.LevelError, "failed", "join_room", "n", 1)
	l.log(slog.LevelError, "failed", "leave_room", "n", 1)
	l.log(slog.LevelInfo, "flood", "", "n", 1)
	l.log(slog.LevelError, "failed", "join_room", "n", 2)
	assert.Equal(t, []string{"ERROR failed n=1", "ERROR failed n=1", "INFO flood n=1"}, rec.take())

	// Disabled levels cost nothing and count nothing.
	l.log(slog.LevelDebug, "quiet", "")
	assert.Empty(t, rec.take())

	// After the interval: one line with the count left out.
	now = now.Add(logRepeatInterval)
	l.log(slog.LevelWarn, "flood", "", "n", 5)
	l.log(slog.LevelWarn, "flood", "", "n", 6)
	assert.Equal(t, []string{"WARN flood n=5 suppressed=4"}, rec.take())
	now = now.Add(logRepeatInterval)
	l.log(slog.LevelWarn, "flood", "", "n", 7)
	assert.Equal(t, []string{"WARN flood n=7 suppressed=1"}, rec.take())

	// flush reports what is outstanding, with the last left-out args, once.
	l.log(slog.LevelWarn, "flood", "", "n", 8)
	l.log(slog.LevelWarn, "flood", "", "n", 9)
	l.flush()
	got := rec.take()
	assert.ElementsMatch(t, []string{"WARN flood n=9 suppressed=2", "ERROR failed n=2 suppressed=1"}, got)
	l.flush()
	assert.Empty(t, rec.take(), "nothing twice")
}

func TestLogLimiterBoundsLines(t *testing.T) {
	rec := &lineRecorder{level: slog.LevelInfo}
	l := newLogLimiter(slog.New(rec))
	for i := range maxLimitedLines + 10 {
		l.log(slog.LevelWarn, "w", fmt.Sprint(i))
	}
	assert.Len(t, l.lines, maxLimitedLines)
	assert.Len(t, rec.take(), maxLimitedLines+10, "lines past the bound are written, not dropped")
}

// Concurrent repeats (a flood's events) write one line in all.
func TestLogLimiterConcurrent(t *testing.T) {
	rec := &lineRecorder{level: slog.LevelInfo}
	l := newLogLimiter(slog.New(rec))
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.log(slog.LevelWarn, "flood", "")
		}()
	}
	wg.Wait()
	require.Len(t, rec.take(), 1)
	l.flush()
	assert.Equal(t, []string{"WARN flood suppressed=49"}, rec.take())
}
