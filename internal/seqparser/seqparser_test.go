package seqparser_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io-go-parser/v2/parser"

	"github.com/qaplatform/socketio/internal/seqparser"
)

// recorder collects the packets a decoder emits.
type recorder struct{ packets []*parser.Packet }

func (r *recorder) take() []*parser.Packet {
	out := r.packets
	r.packets = nil
	return out
}

// newDecoder returns a decoder of a Parser tracking the given namespaces,
// and the recorder of what it emits.
func newDecoder(t *testing.T, tracked ...string) (*seqparser.Parser, parser.Decoder, *recorder) {
	t.Helper()
	p := seqparser.New(nil)
	for _, nsp := range tracked {
		require.True(t, p.Track(nsp), "Track(%q)", nsp)
	}
	d := p.NewDecoder()
	t.Cleanup(d.Destroy)
	rec := &recorder{}
	require.NoError(t, d.On("decoded", func(args ...any) {
		require.Len(t, args, 1)
		pkt, ok := args[0].(*parser.Packet)
		require.True(t, ok, "decoded %T", args[0])
		rec.packets = append(rec.packets, pkt)
		if pkt.Type == parser.CONNECT {
			// The application is listening at once.
			seqparser.TakeGate(pkt.Data).Open()
		}
	}))
	return p, d, rec
}

// pkt is the part of a decoded packet the tests compare.
type pkt struct {
	typ  parser.PacketType
	nsp  string
	id   *uint64
	data any
}

func id(n uint64) *uint64 { return &n }

func summary(p *parser.Packet) pkt {
	return pkt{typ: p.Type, nsp: p.Nsp, id: p.Id, data: p.Data}
}

// addAll feeds frames to d, failing the test on a refusal.
func addAll(t *testing.T, d parser.Decoder, frames ...any) {
	t.Helper()
	for _, f := range frames {
		require.NoError(t, d.Add(f), "Add(%q)", f)
	}
}

func TestDecoderTagsEvents(t *testing.T) {
	s := func(n uint64) seqparser.Seq { return seqparser.Seq(n) }
	tests := []struct {
		name    string
		tracked []string
		frames  []any
		want    []pkt
	}{
		{
			name:    "consecutive from 0",
			tracked: []string{"/"},
			frames:  []any{`2["a"]`, `2["b",1]`, `213["c",{"k":"v"}]`, `2["d"]`},
			want: []pkt{
				{parser.EVENT, "/", nil, []any{"a", s(0)}},
				{parser.EVENT, "/", nil, []any{"b", 1.0, s(1)}},
				{parser.EVENT, "/", id(13), []any{"c", map[string]any{"k": "v"}, s(2)}},
				{parser.EVENT, "/", nil, []any{"d", s(3)}},
			},
		},
		{
			name:    "restart after CONNECT of the namespace",
			tracked: []string{"/"},
			frames:  []any{`0`, `2["a"]`, `2["b"]`, `0{"token":"x"}`, `2["c"]`},
			want: []pkt{
				{parser.CONNECT, "/", nil, map[string]any{}},
				{parser.EVENT, "/", nil, []any{"a", s(0)}},
				{parser.EVENT, "/", nil, []any{"b", s(1)}},
				{parser.CONNECT, "/", nil, map[string]any{"token": "x"}},
				{parser.EVENT, "/", nil, []any{"c", s(0)}},
			},
		},
		{
			name:    "namespaces counted separately",
			tracked: []string{"/", "/chat"},
			frames:  []any{`2["a"]`, `0/chat,{}`, `2/chat,["x"]`, `2["b"]`, `2/chat,7["y"]`, `0/chat,`, `2/chat,["z"]`, `2["c"]`},
			want: []pkt{
				{parser.EVENT, "/", nil, []any{"a", s(0)}},
				{parser.CONNECT, "/chat", nil, map[string]any{}},
				{parser.EVENT, "/chat", nil, []any{"x", s(0)}},
				{parser.EVENT, "/", nil, []any{"b", s(1)}},
				{parser.EVENT, "/chat", id(7), []any{"y", s(1)}},
				{parser.CONNECT, "/chat", nil, map[string]any{}},
				{parser.EVENT, "/chat", nil, []any{"z", s(0)}},
				{parser.EVENT, "/", nil, []any{"c", s(2)}},
			},
		},
		{
			name:    "untracked namespace not tagged",
			tracked: []string{"/"},
			frames:  []any{`2/admin,["a"]`, `2["b"]`, `2/admin,3["c",2]`},
			want: []pkt{
				{parser.EVENT, "/admin", nil, []any{"a"}},
				{parser.EVENT, "/", nil, []any{"b", s(0)}},
				{parser.EVENT, "/admin", id(3), []any{"c", 2.0}},
			},
		},
		{
			name:   "nothing tracked",
			frames: []any{`2["a"]`, `2["b"]`},
			want: []pkt{
				{parser.EVENT, "/", nil, []any{"a"}},
				{parser.EVENT, "/", nil, []any{"b"}},
			},
		},
		{
			name:    "other packets pass untagged and do not count",
			tracked: []string{"/"},
			frames:  []any{`2["a"]`, `31[{}]`, `3/chat,2["x",1]`, `4{"message":"x"}`, `1`, `2["b"]`},
			want: []pkt{
				{parser.EVENT, "/", nil, []any{"a", s(0)}},
				{parser.ACK, "/", id(1), []any{map[string]any{}}},
				{parser.ACK, "/chat", id(2), []any{"x", 1.0}},
				{parser.CONNECT_ERROR, "/", nil, map[string]any{"message": "x"}},
				{parser.DISCONNECT, "/", nil, nil},
				{parser.EVENT, "/", nil, []any{"b", s(1)}},
			},
		},
		{
			name:    "refused frames do not use a number",
			tracked: []string{"/"},
			frames:  []any{`2["a"]`, `2`, `2[1]`, `2[`, `2["b"]`},
			want: []pkt{
				{parser.EVENT, "/", nil, []any{"a", s(0)}},
				{parser.EVENT, "/", nil, []any{"b", s(1)}},
			},
		},
		{
			name:    "string buffers",
			tracked: []string{"/"},
			frames:  []any{types.NewStringBufferString(`2["a"]`), types.NewStringBufferString(`2["b","\ud800"]`), `2["c"]`},
			want: []pkt{
				{parser.EVENT, "/", nil, []any{"a", s(0)}},
				{parser.EVENT, "/", nil, []any{"b", "\x00", s(1)}},
				{parser.EVENT, "/", nil, []any{"c", s(2)}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, d, rec := newDecoder(t, tc.tracked...)
			for _, f := range tc.frames {
				_ = d.Add(f) // refusals are tested below; here only what is emitted
			}
			var got []pkt
			for _, p := range rec.take() {
				got = append(got, summary(p))
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestDecoderTrackUntrack(t *testing.T) {
	p, d, rec := newDecoder(t, "/")
	assert.False(t, p.Track("/"), "already tracked")
	assert.True(t, p.Track("/chat"))

	addAll(t, d, `2/chat,["a"]`)
	p.Untrack("/chat")
	p.Untrack("/never") // no-op
	addAll(t, d, `2/chat,["b"]`, `2["c"]`)
	assert.True(t, p.Track("/chat"), "tracked again")
	addAll(t, d, `2/chat,["d"]`)

	got := rec.take()
	require.Len(t, got, 4)
	assert.Equal(t, []any{"a", seqparser.Seq(0)}, got[0].Data)
	assert.Equal(t, []any{"b"}, got[1].Data, "untracked: not tagged")
	assert.Equal(t, []any{"c", seqparser.Seq(0)}, got[2].Data)
	assert.Equal(t, []any{"d", seqparser.Seq(1)}, got[3].Data, "the count survives Untrack")
}

func TestDecoderRefusesMalformed(t *testing.T) {
	tests := []struct {
		name      string
		frames    []any // all but the last must be accepted
		malformed bool  // the error wraps ErrMalformed (refused by seqparser, not by v2)
	}{
		{name: "event without payload", frames: []any{"2"}, malformed: true},
		{name: "event without payload, namespace", frames: []any{"2/chat,"}, malformed: true},
		{name: "event with ack id, no payload", frames: []any{"21"}, malformed: true},
		{name: "ack without payload", frames: []any{"30"}, malformed: true},
		{name: "ack without id or payload", frames: []any{"3"}, malformed: true},
		{name: "event name not a string", frames: []any{"2[1]"}},
		{name: "event name null", frames: []any{"2[null]"}},
		{name: "empty event array", frames: []any{"2[]"}},
		{name: "event payload not an array", frames: []any{`2{"a":1}`}},
		{name: "ack payload not an array", frames: []any{`31{"a":1}`}},
		{name: "reserved event name", frames: []any{`2["disconnect"]`}},
		{name: "invalid JSON", frames: []any{`2["a"`}},
		{name: "invalid JSON, unterminated array", frames: []any{"2["}},
		{name: "invalid JSON escape", frames: []any{`2["\ud8"]`}},
		{name: "unknown packet type", frames: []any{`7["a"]`}},
		{name: "huge type and id", frames: []any{`99999999999999999999999["x"]`}},
		{name: "ack id overflows", frames: []any{`299999999999999999999999["x"]`}},
		{name: "empty frame", frames: []any{""}},
		{name: "binary without attachment count", frames: []any{"5-"}},
		{name: "binary without dash", frames: []any{`51["e"]`}},
		{name: "binary event without payload", frames: []any{"51-", []byte{1}}, malformed: true},
		{name: "binary ack without payload", frames: []any{"61-1", []byte{1}}, malformed: true},
		{name: "binary placeholder out of range", frames: []any{`51-["e",{"_placeholder":true,"num":3}]`, []byte{1}}},
		{name: "binary data without header", frames: []any{[]byte{1, 2, 3}}},
		{name: "text while waiting for an attachment", frames: []any{`51-["e",{"_placeholder":true,"num":0}]`, `2["x"]`}},
		{name: "unknown frame type", frames: []any{42}},
		{name: "nil frame", frames: []any{nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, d, rec := newDecoder(t, "/", "/chat")
			last := len(tc.frames) - 1
			addAll(t, d, tc.frames[:last]...)

			var err error
			require.NotPanics(t, func() { err = d.Add(tc.frames[last]) })
			require.Error(t, err)
			assert.Equal(t, tc.malformed, errors.Is(err, seqparser.ErrMalformed), "errors.Is(%v, ErrMalformed)", err)
			assert.Empty(t, rec.take(), "a refused frame emits nothing")
			assert.EqualValues(t, 1, p.Malformed.Load())
			assert.Zero(t, p.Panics.Load())
		})
	}
}

// A refused frame is not held against the connection: the next valid frame
// decodes, numbered as if the refused one had not been sent.
func TestDecoderRecoversAfterRefusal(t *testing.T) {
	p, d, rec := newDecoder(t, "/")
	addAll(t, d, `2["a"]`)
	for _, bad := range []string{"2", "30", "2[1]", "2["} {
		require.Error(t, d.Add(bad), bad)
	}
	addAll(t, d, `2["b"]`)
	got := rec.take()
	require.Len(t, got, 2)
	assert.Equal(t, []any{"b", seqparser.Seq(1)}, got[1].Data)
	assert.EqualValues(t, 4, p.Malformed.Load())
}

func TestDecoderBinary(t *testing.T) {
	s := func(n uint64) seqparser.Seq { return seqparser.Seq(n) }
	tests := []struct {
		name     string
		frames   []any
		typ      parser.PacketType
		nsp      string
		bufs     map[int][]byte // index in Data → attachment bytes
		wantData []any          // Data with the attachments set to nil
	}{
		{
			name:     "event with one attachment",
			frames:   []any{`51-["e",{"_placeholder":true,"num":0}]`, []byte{1, 2, 3}},
			typ:      parser.BINARY_EVENT,
			nsp:      "/",
			bufs:     map[int][]byte{1: {1, 2, 3}},
			wantData: []any{"e", nil, s(0)},
		},
		{
			name: "event with two attachments, namespace and ack id",
			frames: []any{
				`52-/chat,9["upload",{"_placeholder":true,"num":1},"x",{"_placeholder":true,"num":0}]`,
				[]byte{0xa}, []byte{0xb, 0xc},
			},
			typ:      parser.BINARY_EVENT,
			nsp:      "/chat",
			bufs:     map[int][]byte{1: {0xb, 0xc}, 3: {0xa}},
			wantData: []any{"upload", nil, "x", nil, s(0)},
		},
		{
			name:     "ack with attachment is not tagged",
			frames:   []any{`61-4[{"_placeholder":true,"num":0}]`, []byte{9}},
			typ:      parser.BINARY_ACK,
			nsp:      "/",
			bufs:     map[int][]byte{0: {9}},
			wantData: []any{nil},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, d, rec := newDecoder(t, "/", "/chat")
			last := len(tc.frames) - 1
			addAll(t, d, tc.frames[:last]...)
			assert.Empty(t, rec.take(), "nothing before the last attachment")
			addAll(t, d, tc.frames[last])

			got := rec.take()
			require.Len(t, got, 1)
			assert.Equal(t, tc.typ, got[0].Type)
			assert.Equal(t, tc.nsp, got[0].Nsp)
			data, ok := got[0].Data.([]any)
			require.True(t, ok, "Data is %T", got[0].Data)
			require.Len(t, data, len(tc.wantData))
			for i, want := range tc.bufs {
				buf, ok := data[i].(types.BufferInterface)
				require.True(t, ok, "Data[%d] is %T", i, data[i])
				assert.Equal(t, want, buf.Bytes(), "Data[%d]", i)
				data[i] = nil
			}
			assert.Equal(t, tc.wantData, data)

			// Text frames decode again, numbered after the binary event.
			addAll(t, d, `2["next"]`, `2/chat,["next"]`)
			next := rec.take()
			require.Len(t, next, 2)
			first := uint64(0)
			if tc.typ == parser.BINARY_EVENT {
				first = 1
			}
			if tc.nsp == "/" {
				assert.Equal(t, []any{"next", s(first)}, next[0].Data)
			} else {
				assert.Equal(t, []any{"next", s(first)}, next[1].Data)
			}
		})
	}
}

func TestDecoderSurrogates(t *testing.T) {
	tests := []struct {
		name  string
		frame string
		want  string // Data[1]
	}{
		{"lone high surrogate", `2["ask_question","\ud800"]`, "\x00"},
		{"lone low surrogate", `2["ask_question","a\uDC00b"]`, "a\x00b"},
		{"valid pair", `2["ask_question","\ud83d\ude00"]`, "😀"},
		{"escaped backslash", `2["ask_question","\\ud800"]`, `\ud800`},
		{"BMP escape untouched", `2["ask_question","\u00e9"]`, "é"},
		{"literal U+FFFD untouched", "2[\"ask_question\",\"a\uFFFDb\"]", "a\uFFFDb"},
		{"escaped U+FFFD untouched", `2["ask_question","a\ufffdb"]`, "a\uFFFDb"},
		{"invalid byte", "2[\"ask_question\",\"a\xffb\"]", "a\x00b"},
		{"truncated sequence", "2[\"ask_question\",\"a\xe2\x82b\"]", "a\x00\x00b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, d, rec := newDecoder(t, "/")
			addAll(t, d, tc.frame)
			got := rec.take()
			require.Len(t, got, 1)
			assert.Equal(t, []any{"ask_question", tc.want, seqparser.Seq(0)}, got[0].Data)
		})
	}
}

// A panic while decoding (here, in a listener of the decoder) is recovered
// and reported as a malformed frame.
func TestDecoderRecoversPanic(t *testing.T) {
	p, d, _ := newDecoder(t, "/")
	require.NoError(t, d.On("decoded", func(...any) { panic("listener exploded") }))

	var err error
	require.NotPanics(t, func() { err = d.Add(`2["a"]`) })
	require.ErrorIs(t, err, seqparser.ErrMalformed)
	assert.Contains(t, err.Error(), "listener exploded")
	assert.EqualValues(t, 1, p.Panics.Load())
	assert.EqualValues(t, 1, p.Malformed.Load())
}

func TestParserEncoderAndInner(t *testing.T) {
	p := seqparser.New(parser.NewParser())
	bufs := p.NewEncoder().Encode(&parser.Packet{Type: parser.EVENT, Nsp: "/", Data: []any{"answer", "ok"}})
	require.Len(t, bufs, 1)
	assert.Equal(t, `2["answer","ok"]`, bufs[0].String())

	// What the encoder writes, the decoder reads.
	require.True(t, p.Track("/"))
	d := p.NewDecoder()
	t.Cleanup(d.Destroy)
	var got []any
	require.NoError(t, d.On("decoded", func(args ...any) { got = args[0].(*parser.Packet).Data.([]any) }))
	require.NoError(t, d.Add(bufs[0].String()))
	assert.Equal(t, []any{"answer", "ok", seqparser.Seq(0)}, got)
}

func TestRewriteLoneSurrogates(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", ``, ``},
		{"no escapes", `["a","b"]`, `["a","b"]`},
		{"other escapes", `"\n\t\"\u00e9\/"`, `"\n\t\"\u00e9\/"`},
		{"lone high", `"\ud800"`, `"\u0000"`},
		{"lone high, max", `"\udbff"`, `"\u0000"`},
		{"lone low", `"\udc00"`, `"\u0000"`},
		{"lone low, max", `"\udfff"`, `"\u0000"`},
		{"valid pair kept", `"\ud83d\ude00"`, `"\ud83d\ude00"`},
		{"valid pair, uppercase", `"\uD83D\uDE00"`, `"\uD83D\uDE00"`},
		{"uppercase lone", `"\uD800x"`, `"\u0000x"`},
		{"mixed case hex", `"\uDbFf"`, `"\u0000"`},
		{"reversed pair", `"\ude00\ud83d"`, `"\u0000\u0000"`},
		{"two highs", `"\ud800\ud800"`, `"\u0000\u0000"`},
		{"high then BMP escape", `"\ud800\u0041"`, `"\u0000\u0041"`},
		{"high then text", `"\ud800abcdef"`, `"\u0000abcdef"`},
		{"escaped backslash kept", `"\\ud800"`, `"\\ud800"`},
		{"escaped backslash then lone", `"\\\ud800"`, `"\\\u0000"`},
		{"two escaped backslashes", `"\\\\ud800"`, `"\\\\ud800"`},
		{"truncated", `"\ud8`, `"\ud8`},
		{"truncated at end", `\ud8`, `\ud8`},
		{"bad hex", `"\ud8zz"`, `"\ud8zz"`},
		{"at end of string", `\ud800`, `\u0000`},
		{"high at end, half a pair", `\ud800\u`, `\u0000\u`},
		{"high, low truncated", `\ud800\udc0`, `\u0000\udc0`},
		{"trailing backslash", `"a\`, `"a\`},
		{"mixed", `2["q","ok \ud83d\ude00 \ud800 \\udc00 \udc00x",{"k":"\uDFFF"}]`, `2["q","ok \ud83d\ude00 \u0000 \\udc00 \u0000x",{"k":"\u0000"}]`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, seqparser.RewriteLoneSurrogates(tc.in))
		})
	}
}

// TestGateHoldsEventsUntilOpen: after a tracked namespace's CONNECT, events
// wait for the application to open the gate, then pass in order.
func TestGateHoldsEventsUntilOpen(t *testing.T) {
	p := seqparser.New(nil)
	require.True(t, p.Track("/"))
	d := p.NewDecoder()
	t.Cleanup(d.Destroy)
	var got []*parser.Packet
	var gate *seqparser.Gate
	require.NoError(t, d.On("decoded", func(args ...any) {
		pkt := args[0].(*parser.Packet)
		if pkt.Type == parser.CONNECT {
			gate = seqparser.TakeGate(pkt.Data)
			assert.Equal(t, map[string]any{"token": "x"}, pkt.Data, "the gate is taken out of the auth object")
		}
		got = append(got, pkt)
	}))
	require.NoError(t, d.Add(`0{"token":"x"}`))
	require.NotNil(t, gate)
	require.NoError(t, d.Add(`2["a"]`))
	require.NoError(t, d.Add(`2["b"]`))
	require.Len(t, got, 1, "events are held")
	gate.Open()
	require.NoError(t, d.Add(`2["c"]`))
	require.Len(t, got, 4)
	for i, name := range []string{"a", "b", "c"} {
		assert.Equal(t, name, got[i+1].Data.([]any)[0])
	}
	gate.Open() // idempotent
	var none *seqparser.Gate
	none.Open() // nil-safe
	assert.Nil(t, seqparser.TakeGate(map[string]any{"\x00seqparser.gate": "forged"}), "a client cannot forge a gate")
}

func TestGateBoundsHeldEvents(t *testing.T) {
	p := seqparser.New(nil)
	require.True(t, p.Track("/"))
	d := p.NewDecoder()
	t.Cleanup(d.Destroy)
	require.NoError(t, d.On("decoded", func(...any) {}))
	require.NoError(t, d.Add(`0`))
	var err error
	for i := 0; i < 5000 && err == nil; i++ {
		err = d.Add(`2["x"]`)
	}
	require.ErrorIs(t, err, seqparser.ErrMalformed)
}
