package streamq_test

import (
	"context"
	"testing"

	"github.com/qaplatform/socketio/internal/streamq"
)

// BenchmarkAddReadAck measures one task's trip through the queue: Add with
// one event, Read, Ack with one event.
func BenchmarkAddReadAck(b *testing.B) {
	for _, nb := range backends() {
		b.Run(nb.name, func(b *testing.B) {
			be := nb.new(b)
			q := streamq.New(be.client(b, clientOpts{}), streamq.Config{Prefix: be.prefix})
			ctx := context.Background()
			payload, event := make([]byte, 256), []byte(`{"type":"chunk"}`)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := q.Add(ctx, payload, event); err != nil {
					b.Fatal(err)
				}
				ds, err := q.Read(ctx, "w", 1, 0)
				if err != nil || len(ds) != 1 {
					b.Fatal(len(ds), err)
				}
				if err := q.Ack(ctx, ds[0].ID, event); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
