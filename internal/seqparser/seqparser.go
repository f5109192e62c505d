// Package seqparser wraps the Socket.IO packet parser of
// github.com/zishang520/socket.io/v2 to shield the server from two of its
// defects:
//
//   - v2.5.0 handles each incoming event in its own goroutine, so one
//     client's events reach listeners out of order. The per-connection
//     decoder still sees packets in arrival order, so this decoder appends a
//     Seq (a type no client can forge) to every event of a tracked namespace;
//     listeners restore the order with a Sequencer.
//   - Some malformed frames panic inside the parser or later inside the
//     server (an event or ack frame without a payload). This decoder
//     recovers panics and refuses such frames with an error, which makes
//     the server close only the offending connection.
//
// A third defect: v2.5.0 sends the CONNECT reply before it registers the
// new socket, and registers it before the application's "connection"
// handler can listen to it; an event that arrives in between closes the
// connection or is silently lost. So the decoder holds a tracked
// namespace's events after its CONNECT until the application opens the
// Gate it finds in the handshake's auth object (see TakeGate).
//
// It also rewrites JSON escapes of lone UTF-16 surrogates, and bytes that
// are not UTF-8 (both of which Go's JSON decoder would silently turn into
// U+FFFD, indistinguishable from a literal U+FFFD) into \u0000, so that
// text validation can reject them.
package seqparser

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/zishang520/engine.io/v2/events"
	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io-go-parser/v2/parser"
)

// Seq is the arrival number of an event on one connection and namespace,
// counted from 0 at the namespace's CONNECT packet.
type Seq uint64

// Parser is a parser.Parser whose decoders tag events of tracked namespaces.
// It is safe for concurrent use.
type Parser struct {
	inner   parser.Parser
	tracked atomic.Pointer[map[string]struct{}]
	mu      sync.Mutex // serialises Track/Untrack

	// Malformed counts frames refused as malformed (including recovered
	// panics).
	Malformed atomic.Uint64
	// Panics counts panics recovered while decoding.
	Panics atomic.Uint64
}

// New returns a Parser around inner (the default parser when nil).
func New(inner parser.Parser) *Parser {
	if inner == nil {
		inner = parser.NewParser()
	}
	p := &Parser{inner: inner}
	p.tracked.Store(&map[string]struct{}{})
	return p
}

// Track makes decoders tag events of namespace nsp. It reports false when
// nsp was already tracked.
func (p *Parser) Track(nsp string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.tracked.Load()
	if _, ok := old[nsp]; ok {
		return false
	}
	next := make(map[string]struct{}, len(old)+1)
	for k := range old {
		next[k] = struct{}{}
	}
	next[nsp] = struct{}{}
	p.tracked.Store(&next)
	return true
}

// Untrack stops tagging events of nsp.
func (p *Parser) Untrack(nsp string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old := *p.tracked.Load()
	next := make(map[string]struct{}, len(old))
	for k := range old {
		if k != nsp {
			next[k] = struct{}{}
		}
	}
	p.tracked.Store(&next)
}

func (p *Parser) isTracked(nsp string) bool {
	_, ok := (*p.tracked.Load())[nsp]
	return ok
}

// NewEncoder returns the inner parser's encoder.
func (p *Parser) NewEncoder() parser.Encoder { return p.inner.NewEncoder() }

// NewDecoder returns a decoder for one connection.
func (p *Parser) NewDecoder() parser.Decoder {
	d := &decoder{
		EventEmitter: events.New(),
		parser:       p,
		inner:        p.inner.NewDecoder(),
		seq:          map[string]Seq{},
		gates:        map[string]*Gate{},
	}
	d.inner.On("decoded", d.ondecoded)
	return d
}

// decoder is used by one connection's read loop: Add is never called
// concurrently for one decoder.
type decoder struct {
	events.EventEmitter
	parser *Parser
	inner  parser.Decoder
	seq    map[string]Seq
	gates  map[string]*Gate // by namespace, from its CONNECT on
	bad    error            // set by ondecoded when a decoded packet is refused
}

// ErrMalformed is returned for frames this decoder refuses.
var ErrMalformed = errors.New("seqparser: malformed packet")

func (d *decoder) Add(data any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			d.parser.Panics.Add(1)
			err = fmt.Errorf("%w: panic while decoding: %v", ErrMalformed, r)
		}
		if err != nil {
			d.parser.Malformed.Add(1)
		}
	}()
	switch s := data.(type) {
	case string:
		data = RewriteLoneSurrogates(RewriteInvalidUTF8(s))
	case *types.StringBuffer:
		if t := s.String(); hasSurrogateEscape(t) || !utf8.ValidString(t) {
			data = RewriteLoneSurrogates(RewriteInvalidUTF8(t))
		}
	}
	d.bad = nil
	if err := d.inner.Add(data); err != nil {
		return err
	}
	if d.bad != nil {
		return d.bad
	}
	return nil
}

func (d *decoder) Destroy() { d.inner.Destroy() }

// ondecoded validates a packet the inner decoder produced, tags it, and
// hands it on to the server's client.
func (d *decoder) ondecoded(args ...any) {
	if len(args) == 0 {
		return
	}
	p, ok := args[0].(*parser.Packet)
	if !ok || p == nil {
		d.bad = fmt.Errorf("%w: no packet", ErrMalformed)
		return
	}
	if (p.Type == parser.BINARY_EVENT || p.Type == parser.BINARY_ACK) && p.Attachments != nil && *p.Attachments == 0 {
		// v2.5.0 delivers it but keeps waiting for attachments, breaking
		// every later frame of the connection.
		d.bad = fmt.Errorf("%w: binary packet without attachments", ErrMalformed)
		return
	}
	switch p.Type {
	case parser.EVENT, parser.BINARY_EVENT:
		data, ok := p.Data.([]any)
		if !ok || len(data) == 0 {
			d.bad = fmt.Errorf("%w: event without payload", ErrMalformed)
			return
		}
		if _, ok := data[0].(string); !ok {
			d.bad = fmt.Errorf("%w: event name is not a string", ErrMalformed)
			return
		}
		if d.parser.isTracked(p.Nsp) {
			n := d.seq[p.Nsp]
			d.seq[p.Nsp] = n + 1
			p.Data = append(data, n)
			if g := d.gates[p.Nsp]; g != nil {
				if !g.pass(p) {
					d.bad = fmt.Errorf("%w: too many events before the connection was ready", ErrMalformed)
				}
				return
			}
		}
	case parser.ACK, parser.BINARY_ACK:
		if _, ok := p.Data.([]any); !ok {
			d.bad = fmt.Errorf("%w: ack without payload", ErrMalformed)
			return
		}
	case parser.CONNECT:
		delete(d.seq, p.Nsp)
		if d.parser.isTracked(p.Nsp) {
			auth, _ := p.Data.(map[string]any)
			if auth == nil {
				auth = map[string]any{}
			}
			g := &Gate{emit: func(p *parser.Packet) { d.Emit("decoded", p) }}
			auth[gateKey] = g
			p.Data = auth
			d.gates[p.Nsp] = g
		}
	}
	d.Emit("decoded", p)
}

// gateKey is where a CONNECT's auth object carries its Gate. JSON cannot
// produce a *Gate, so a client cannot forge one.
const gateKey = "\x00seqparser.gate"

// maxHeld bounds the events a Gate holds.
const maxHeld = 1024

// Gate holds the events a client sends after CONNECT until the
// application is listening. It is safe for concurrent use.
type Gate struct {
	mu   sync.Mutex
	open bool
	held []*parser.Packet
	emit func(*parser.Packet)
}

// TakeGate removes the Gate from a handshake's auth object and returns it,
// or nil when there is none (the namespace is not tracked, or the
// connection started before the parser was installed).
func TakeGate(auth any) *Gate {
	m, ok := auth.(map[string]any)
	if !ok {
		return nil
	}
	g, _ := m[gateKey].(*Gate)
	delete(m, gateKey)
	return g
}

// pass emits p now if the gate is open, or holds it. It reports false when
// too many events are held.
func (g *Gate) pass(p *parser.Packet) bool {
	g.mu.Lock()
	if !g.open {
		if len(g.held) >= maxHeld {
			g.mu.Unlock()
			return false
		}
		g.held = append(g.held, p)
		g.mu.Unlock()
		return true
	}
	g.mu.Unlock()
	g.emit(p)
	return true
}

// Open lets events through, first the held ones in order. Only the first
// call does anything; a nil Gate is a no-op.
func (g *Gate) Open() {
	if g == nil {
		return
	}
	g.mu.Lock()
	if g.open {
		g.mu.Unlock()
		return
	}
	// Emit the held events while still holding the lock, so that an event
	// decoded meanwhile cannot overtake them.
	for _, p := range g.held {
		g.emit(p)
	}
	g.held = nil
	g.open = true
	g.mu.Unlock()
}

// hasSurrogateEscape is a fast pre-check for RewriteLoneSurrogates.
func hasSurrogateEscape(s string) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], `\u`)
		if j < 0 {
			return false
		}
		i += j + 2
		if i < len(s) && (s[i] == 'd' || s[i] == 'D') {
			return true
		}
	}
}

// RewriteLoneSurrogates replaces each JSON escape of a lone UTF-16
// surrogate (\uD800–\uDFFF not forming a valid pair) with \u0000, leaving
// valid pairs and everything else untouched. A JSON string holding a lone
// surrogate is not valid text, and Go's decoder would otherwise hide it as
// U+FFFD.
func RewriteLoneSurrogates(s string) string {
	if !hasSurrogateEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			i++
			continue
		}
		if s[i+1] != 'u' {
			// Any other escape (including \\) is copied whole, so that
			// an escaped backslash followed by "u" is not misread.
			b.WriteString(s[i : i+2])
			i += 2
			continue
		}
		hi, ok := hex4(s, i+2)
		if !ok || hi < 0xD800 || hi > 0xDFFF {
			b.WriteString(s[i : i+2])
			i += 2
			continue
		}
		if hi <= 0xDBFF && i+12 <= len(s) && s[i+6] == '\\' && s[i+7] == 'u' {
			if lo, ok := hex4(s, i+8); ok && lo >= 0xDC00 && lo <= 0xDFFF {
				b.WriteString(s[i : i+12])
				i += 12
				continue
			}
		}
		b.WriteString(`\u0000`)
		i += 6
	}
	return b.String()
}

// RewriteInvalidUTF8 replaces each byte sequence of s that is not UTF-8
// with the JSON escape \u0000: inside a JSON string it decodes to NUL,
// which text validation refuses, where Go's decoder would have made it
// U+FFFD; anywhere else the frame stays malformed. Valid UTF-8 is returned
// as is.
func RewriteInvalidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b.WriteString(`\u0000`)
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func hex4(s string, at int) (rune, bool) {
	if at+4 > len(s) {
		return 0, false
	}
	var v rune
	for _, c := range []byte(s[at : at+4]) {
		v <<= 4
		switch {
		case c >= '0' && c <= '9':
			v |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			v |= rune(c-'a') + 10
		case c >= 'A' && c <= 'F':
			v |= rune(c-'A') + 10
		default:
			return 0, false
		}
	}
	return v, true
}
