package seqparser_test

import (
	"strings"
	"testing"

	"github.com/zishang520/socket.io-go-parser/v2/parser"

	"github.com/qaplatform/socketio/internal/seqparser"
)

// frameSep splits a fuzz input into frames, as Engine.IO's polling
// transport does with its record separator.
const frameSep = "\x1e"

// FuzzDecoder feeds the text frames of frames, then attachment twice as
// binary frames, then one valid event, to a decoder that tracks "/" and
// "/chat". Whatever the input: no panic escapes Add, a refused frame emits
// nothing, every event has a string name and (in a tracked namespace) a
// trailing Seq counting from 0 since the namespace's last CONNECT, and
// every ack has an array payload.
func FuzzDecoder(f *testing.F) {
	nested := func(depth int) string {
		return `2["x",` + strings.Repeat("[", depth) + strings.Repeat("]", depth) + `]`
	}
	for _, seed := range []struct {
		frames     string
		attachment []byte
	}{
		// Socket.IO v5 frames a client sends.
		{"0", nil},
		{`0{"token":"x"}`, nil},
		{`0/chat,{}`, nil},
		{`2["ask_question",{"question":"hi"}]`, nil},
		{`213["get_history",{}]`, nil},
		{`2/chat,7["x"]`, nil},
		{`31[{}]`, nil},
		{`51-["e",{"_placeholder":true,"num":0}]`, []byte{1, 2, 3}},
		{`52-/chat,4["e",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, []byte{0}},
		{`61-5[{"_placeholder":true,"num":0}]`, []byte("x")},
		{"1", nil},
		{`4{"message":"x"}`, nil},
		{strings.Join([]string{"0", `2["a"]`, `2/chat,["b"]`, `0/chat,`, `2/chat,["c"]`, "0", `2["d"]`}, frameSep), nil},
		// Hostile frames.
		{"2", nil},
		{"3", nil},
		{"2/chat,", nil},
		{"30", nil},
		{"2[", nil},
		{"2[1]", nil},
		{"2[]", nil},
		{"5-", nil},
		{"51-", []byte{1}},
		{`51-["e",{"_placeholder":true,"num":-1}]`, []byte{1}},
		{`50-["e",{"_placeholder":true,"num":0}]`, nil},
		{`99999999999999999999999["x"]`, nil},
		{`2999999999999999999999["x"]`, nil},
		{nested(100), nil},
		{nested(20000), nil},
		{`2["ask_question","\ud800"]`, nil},
		{`2["ask_question","\\\ud800\udc00\udc00"]`, nil},
		{`2["connect"]`, nil},
		{"", []byte{}},
	} {
		f.Add(seed.frames, seed.attachment)
	}

	f.Fuzz(func(t *testing.T, frames string, attachment []byte) {
		p := seqparser.New(nil)
		p.Track("/")
		p.Track("/chat")
		tracked := map[string]bool{"/": true, "/chat": true}
		d := p.NewDecoder()
		defer d.Destroy()

		next := map[string]seqparser.Seq{}
		var emitted []*parser.Packet
		if err := d.On("decoded", func(args ...any) {
			if len(args) != 1 {
				t.Errorf("decoded with %d arguments", len(args))
				return
			}
			pkt, ok := args[0].(*parser.Packet)
			if !ok || pkt == nil {
				t.Errorf("decoded %T", args[0])
				return
			}
			emitted = append(emitted, pkt)
		}); err != nil {
			t.Fatal(err)
		}

		check := func(frame any) {
			emitted = emitted[:0]
			err := d.Add(frame)
			if err != nil {
				if len(emitted) > 0 {
					t.Errorf("Add(%q) returned %v but emitted %d packets", frame, err, len(emitted))
				}
				return
			}
			for _, pkt := range emitted {
				checkPacket(t, frame, pkt, tracked, next)
			}
		}
		for _, frame := range strings.Split(frames, frameSep) {
			check(frame)
		}
		check(attachment)
		check(attachment)
		check(`2["after"]`)
	})
}

func checkPacket(t *testing.T, frame any, pkt *parser.Packet, tracked map[string]bool, next map[string]seqparser.Seq) {
	t.Helper()
	switch pkt.Type {
	case parser.CONNECT:
		delete(next, pkt.Nsp)
	case parser.EVENT, parser.BINARY_EVENT:
		data, ok := pkt.Data.([]any)
		if !ok || len(data) == 0 {
			t.Errorf("frame %q: event Data %#v, want a non-empty []any", frame, pkt.Data)
			return
		}
		if _, ok := data[0].(string); !ok {
			t.Errorf("frame %q: event name %#v is not a string", frame, data[0])
		}
		body := data
		if tracked[pkt.Nsp] {
			if len(data) < 2 {
				t.Errorf("frame %q: tracked event %#v has no Seq", frame, data)
				return
			}
			seq, ok := data[len(data)-1].(seqparser.Seq)
			if !ok {
				t.Errorf("frame %q: tracked event %#v does not end with a Seq", frame, data)
				return
			}
			if seq != next[pkt.Nsp] {
				t.Errorf("frame %q: Seq %d in %s, want %d", frame, seq, pkt.Nsp, next[pkt.Nsp])
			}
			next[pkt.Nsp] = seq + 1
			body = data[:len(data)-1]
		}
		for i, v := range body {
			if _, forged := v.(seqparser.Seq); forged {
				t.Errorf("frame %q: Data[%d] of %s event is a Seq: %#v", frame, i, pkt.Nsp, data)
			}
		}
	case parser.ACK, parser.BINARY_ACK:
		data, ok := pkt.Data.([]any)
		if !ok {
			t.Errorf("frame %q: ack Data %#v, want []any", frame, pkt.Data)
			return
		}
		for i, v := range data {
			if _, forged := v.(seqparser.Seq); forged {
				t.Errorf("frame %q: ack Data[%d] is a Seq", frame, i)
			}
		}
	}
}
