package socketio

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
)

// benchQuestionHook implements BeforeQuestion and AfterQuestion with trivial bodies,
// so the benchmarks measure the manager, not the hooks.
type benchQuestionHook struct{ BaseHook }

func (benchQuestionHook) BeforeQuestion(context.Context, *QuestionEvent) error { return nil }
func (benchQuestionHook) AfterQuestion(context.Context, *QuestionEvent)        {}

func newBenchHookManager(b *testing.B, n int) *HookManager {
	b.Helper()
	m := NewHookManager(slog.New(slog.NewTextHandler(io.Discard, nil)))
	for i := range n {
		h := benchQuestionHook{NewBaseHook(fmt.Sprintf("hook%d", i), i%5*20)}
		if err := m.Register(h); err != nil {
			b.Fatal(err)
		}
	}
	return m
}

// benchDispatchQuestion does what the server does around one question: one
// before-chain and one after-chain, with closures capturing ctx and the
// event.
func benchDispatchQuestion(m *HookManager, ctx context.Context, ev *QuestionEvent) error {
	if err := m.runBefore(beforeQuestion, func(h Hook) error {
		return h.(BeforeQuestionHook).BeforeQuestion(ctx, ev)
	}); err != nil {
		return err
	}
	m.runAfter(afterQuestion, func(h Hook) { h.(AfterQuestionHook).AfterQuestion(ctx, ev) })
	return nil
}

func BenchmarkHookDispatch(b *testing.B) {
	for _, n := range []int{0, 4, 16} {
		b.Run(fmt.Sprintf("hooks=%d", n), func(b *testing.B) {
			m := newBenchHookManager(b, n)
			ctx := context.Background()
			ev := &QuestionEvent{Question: "what is a hook?"}
			b.ReportAllocs()
			for b.Loop() {
				if err := benchDispatchQuestion(m, ctx, ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkHookDispatchParallel(b *testing.B) {
	for _, n := range []int{0, 4, 16} {
		b.Run(fmt.Sprintf("hooks=%d", n), func(b *testing.B) {
			m := newBenchHookManager(b, n)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				ev := &QuestionEvent{Question: "what is a hook?"}
				for pb.Next() {
					if err := benchDispatchQuestion(m, ctx, ev); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
