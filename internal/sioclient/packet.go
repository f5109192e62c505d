package sioclient

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// Engine.IO v4 packet types, the first byte of every text packet.
const (
	engineOpen    = '0'
	engineClose   = '1'
	enginePing    = '2'
	enginePong    = '3'
	engineMessage = '4'
)

// Socket.IO v5 packet types, the first byte of an Engine.IO message body.
const (
	sioConnect      = '0'
	sioDisconnect   = '1'
	sioEvent        = '2'
	sioAck          = '3'
	sioConnectError = '4'
	sioBinaryEvent  = '5'
	sioBinaryAck    = '6'
)

// payloadSeparator splits packets in an HTTP long-polling payload.
const payloadSeparator = "\x1e"

// handshake is the JSON body of the Engine.IO open packet.
type handshake struct {
	SID          string   `json:"sid"`
	Upgrades     []string `json:"upgrades"`
	PingInterval int64    `json:"pingInterval"` // milliseconds
	PingTimeout  int64    `json:"pingTimeout"`  // milliseconds
	MaxPayload   int64    `json:"maxPayload"`
}

// parseOpen decodes an Engine.IO open packet ("0{...}").
func parseOpen(p string) (handshake, error) {
	var h handshake
	if len(p) == 0 || p[0] != engineOpen {
		return h, errors.New("sioclient: expected an Engine.IO open packet, got " + strconv.Quote(truncate(p)))
	}
	if err := json.Unmarshal([]byte(p[1:]), &h); err != nil {
		return h, errors.New("sioclient: bad Engine.IO open packet: " + err.Error())
	}
	if h.SID == "" {
		return h, errors.New("sioclient: Engine.IO open packet without sid")
	}
	return h, nil
}

// sioPacket is a decoded Socket.IO packet; data is the raw JSON that follows
// the header, possibly empty.
type sioPacket struct {
	typ         byte
	attachments int
	nsp         string
	id          uint64
	hasID       bool
	data        string
}

var errBadPacket = errors.New("sioclient: malformed Socket.IO packet")

// decodeSIO parses the body of an Engine.IO message packet:
// <type>[<attachments>-][<nsp>,][<id>][<json>]. It never panics, whatever
// the input.
func decodeSIO(s string) (sioPacket, error) {
	var p sioPacket
	if len(s) == 0 || s[0] < sioConnect || s[0] > sioBinaryAck {
		return p, errBadPacket
	}
	p.typ = s[0]
	i := 1
	if p.typ == sioBinaryEvent || p.typ == sioBinaryAck {
		j := strings.IndexByte(s[i:], '-')
		if j < 0 {
			return p, errBadPacket
		}
		n, err := strconv.Atoi(s[i : i+j])
		if err != nil || n < 0 {
			return p, errBadPacket
		}
		p.attachments = n
		i += j + 1
	}
	p.nsp = "/"
	if i < len(s) && s[i] == '/' {
		j := strings.IndexByte(s[i:], ',')
		if j < 0 {
			p.nsp, i = s[i:], len(s)
		} else {
			p.nsp, i = s[i:i+j], i+j+1
		}
	}
	start := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i > start {
		id, err := strconv.ParseUint(s[start:i], 10, 64)
		if err != nil {
			return p, errBadPacket
		}
		p.id, p.hasID = id, true
	}
	p.data = s[i:]
	return p, nil
}

// encodeSIO builds an Engine.IO message packet carrying one Socket.IO packet.
// id < 0 means no ack id.
func encodeSIO(typ byte, nsp string, id int64, data []byte) string {
	var b strings.Builder
	b.Grow(3 + len(nsp) + 20 + len(data))
	b.WriteByte(engineMessage)
	b.WriteByte(typ)
	if nsp != "/" {
		b.WriteString(nsp)
		b.WriteByte(',')
	}
	if id >= 0 {
		b.WriteString(strconv.FormatInt(id, 10))
	}
	b.Write(data)
	return b.String()
}

// encodeArgs marshals an event (name first) or ack argument list.
func encodeArgs(name *string, args []any) ([]byte, error) {
	if name != nil {
		all := make([]any, 0, len(args)+1)
		all = append(all, *name)
		args = append(all, args...)
	}
	if args == nil {
		args = []any{}
	}
	return json.Marshal(args)
}

// decodeArray decodes the JSON array of an event or ack.
func decodeArray(data string) ([]any, error) {
	var v []any
	if err := json.Unmarshal([]byte(data), &v); err != nil {
		return nil, err
	}
	if v == nil {
		return nil, errBadPacket // "null" is not an argument list
	}
	return v, nil
}

// truncate shortens s for error messages.
func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
