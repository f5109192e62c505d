// Package storagetest is a conformance suite for implementations of
// socketio.Storage, in the spirit of testing/slogtest.
//
// Run the suite from a test of the implementation, with a factory that
// returns a new, empty Storage configured by the options it is given:
//
//	func TestMyStorage(t *testing.T) {
//		storagetest.Run(t, func(t *testing.T, opts socketio.StorageOptions) socketio.Storage {
//			s := NewMyStorage(opts)
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Each behaviour is a subtest, so a failure names what broke and
// go test -run selects one behaviour. The factory is called once per
// subtest; the Storage it returns must not see data written through
// another one (give a shared backend a unique key prefix per call) and it
// should release its resources with t.Cleanup. Subtests run one after
// another, never in parallel, so a test may check for leaked goroutines
// when Run returns.
//
// Times are compared to the millisecond, so a backend may store them with
// millisecond precision, and nil and empty slices and maps are treated as
// equal.
//
// Expiry subtests pass TTLs of a few hundred milliseconds and poll for up
// to a few seconds until the data is gone; they never wait for the
// default TTLs. A backend whose clock does not advance on its own, such
// as miniredis, must advance it in the factory (for example, call
// FastForward from a ticker stopped with t.Cleanup).
package storagetest
