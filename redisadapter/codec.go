package redisadapter

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/zishang520/engine.io/v2/types"
	"github.com/zishang520/socket.io-go-parser/v2/parser"
	"github.com/zishang520/socket.io/v2/adapter"
	"github.com/zishang520/socket.io/v2/socket"
)

// The wire types below mirror the objects socket.io-adapter's ClusterAdapter
// (JavaScript) builds. v2's adapter message types cannot be serialised as
// they are: parser.PacketType is the ASCII digit ('2' is 50, JavaScript
// sends 2), BroadcastFlags.Timeout is in nanoseconds (JavaScript: ms) and
// always writes volatile:false (JavaScript tests volatile === undefined),
// and a handshake's headers are map[string][]string (Node: header →
// string). Both encodings use the json tags.

type wirePacket struct {
	Type int     `json:"type"`
	Data any     `json:"data"`
	Nsp  string  `json:"nsp,omitempty"`
	ID   *uint64 `json:"id,omitempty"`
}

type wireFlags struct {
	Volatile             bool     `json:"volatile,omitempty"`
	Compress             *bool    `json:"compress,omitempty"`
	Timeout              *float64 `json:"timeout,omitempty"` // milliseconds
	ExpectSingleResponse bool     `json:"expectSingleResponse,omitempty"`
}

type wireOpts struct {
	Rooms  []string   `json:"rooms"`
	Except []string   `json:"except"`
	Flags  *wireFlags `json:"flags,omitempty"`
}

type wireBroadcast struct {
	Opts      wireOpts   `json:"opts"`
	Packet    wirePacket `json:"packet"`
	RequestID *string    `json:"requestId,omitempty"`
}

type wireJoinLeave struct {
	Opts  wireOpts `json:"opts"`
	Rooms []string `json:"rooms"`
}

type wireDisconnect struct {
	Opts  wireOpts `json:"opts"`
	Close bool     `json:"close"`
}

type wireFetch struct {
	Opts      wireOpts `json:"opts"`
	RequestID string   `json:"requestId"`
}

type wireHandshake struct {
	Headers map[string]any `json:"headers"`
	Time    string         `json:"time"`
	Address string         `json:"address"`
	Xdomain bool           `json:"xdomain"`
	Secure  bool           `json:"secure"`
	Issued  float64        `json:"issued"`
	URL     string         `json:"url"`
	Query   map[string]any `json:"query"`
	Auth    any            `json:"auth"`
}

type wireSocket struct {
	ID        string         `json:"id"`
	Handshake *wireHandshake `json:"handshake"`
	Rooms     []string       `json:"rooms"`
	Data      any            `json:"data"`
}

type wireFetchResponse struct {
	RequestID string       `json:"requestId"`
	Sockets   []wireSocket `json:"sockets"`
}

type wireServerSideEmit struct {
	RequestID *string `json:"requestId,omitempty"`
	Packet    []any   `json:"packet"`
}

// wireValueResponse is SERVER_SIDE_EMIT_RESPONSE and BROADCAST_ACK: the
// JavaScript ack callback forwards its first argument only.
type wireValueResponse struct {
	RequestID string `json:"requestId"`
	Packet    any    `json:"packet"`
}

type wireClientCount struct {
	RequestID   string `json:"requestId"`
	ClientCount uint64 `json:"clientCount"`
}

// wireMessage is a whole ClusterMessage as Protocol03 publishes it.
type wireMessage struct {
	UID  string `json:"uid"`
	Nsp  string `json:"nsp"`
	Type int    `json:"type"`
	Data any    `json:"data,omitempty"`
}

type wireMessageIn struct {
	UID  string             `json:"uid"`
	Nsp  string             `json:"nsp"`
	Type int                `json:"type"`
	Data msgpack.RawMessage `json:"data,omitempty"`
}

// fetchResponse and valueResponse are the decoded responses the adapter
// handles itself rather than through v2's ClusterAdapter.
type fetchResponse struct {
	RequestID string
	Sockets   []socket.SocketDetails
}

type valueResponse struct {
	RequestID string
	Value     any
}

var errUnknownType = errors.New("unknown message type")

func marshalMsgpack(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetCustomStructTag("json")
	enc.UseCompactInts(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func unmarshalMsgpack(b []byte, v any) error {
	dec := msgpack.NewDecoder(bytes.NewReader(b))
	dec.SetCustomStructTag("json")
	dec.UseLooseInterfaceDecoding(true)
	return dec.Decode(v)
}

func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// toWire converts the data of a v2 cluster message into its wire form.
func toWire(data any) (any, error) {
	switch d := data.(type) {
	case nil:
		return nil, nil
	case *adapter.BroadcastMessage:
		return &wireBroadcast{Opts: optsToWire(d.Opts), Packet: packetToWire(d.Packet), RequestID: d.RequestId}, nil
	case *adapter.SocketsJoinLeaveMessage:
		return &wireJoinLeave{Opts: optsToWire(d.Opts), Rooms: roomsToWire(d.Rooms)}, nil
	case *adapter.DisconnectSocketsMessage:
		return &wireDisconnect{Opts: optsToWire(d.Opts), Close: d.Close}, nil
	case *adapter.FetchSocketsMessage:
		return &wireFetch{Opts: optsToWire(d.Opts), RequestID: d.RequestId}, nil
	case *adapter.ServerSideEmitMessage:
		return &wireServerSideEmit{RequestID: d.RequestId, Packet: nonNil(d.Packet)}, nil
	case *adapter.FetchSocketsResponse:
		out := &wireFetchResponse{RequestID: d.RequestId, Sockets: []wireSocket{}}
		for _, s := range d.Sockets {
			out.Sockets = append(out.Sockets, wireSocket{
				ID:        string(s.Id),
				Handshake: handshakeToWire(s.Handshake),
				Rooms:     roomsToWire(s.Rooms),
				Data:      s.Data,
			})
		}
		return out, nil
	case *adapter.ServerSideEmitResponse:
		return &wireValueResponse{RequestID: d.RequestId, Packet: first(d.Packet)}, nil
	case *adapter.BroadcastAck:
		return &wireValueResponse{RequestID: d.RequestId, Packet: first(d.Packet)}, nil
	case *adapter.BroadcastClientCount:
		return &wireClientCount{RequestID: d.RequestId, ClientCount: d.ClientCount}, nil
	}
	return nil, fmt.Errorf("cannot encode %T", data)
}

// fromWire decodes the data of a message of type typ with unmarshal and
// converts it to the form v2's ClusterAdapter (or this package) handles.
func fromWire(typ adapter.MessageType, unmarshal func(any) error) (any, error) {
	switch typ {
	case adapter.INITIAL_HEARTBEAT, adapter.HEARTBEAT, adapter.ADAPTER_CLOSE:
		return nil, nil
	case adapter.BROADCAST:
		var w wireBroadcast
		if err := unmarshal(&w); err != nil {
			return nil, err
		}
		p, err := packetFromWire(w.Packet)
		if err != nil {
			return nil, err
		}
		return &adapter.BroadcastMessage{Opts: optsFromWire(w.Opts), Packet: p, RequestId: w.RequestID}, nil
	case adapter.SOCKETS_JOIN, adapter.SOCKETS_LEAVE:
		var w wireJoinLeave
		if err := unmarshal(&w); err != nil {
			return nil, err
		}
		return &adapter.SocketsJoinLeaveMessage{Opts: optsFromWire(w.Opts), Rooms: roomsFromWire(w.Rooms)}, nil
	case adapter.DISCONNECT_SOCKETS:
		var w wireDisconnect
		if err := unmarshal(&w); err != nil {
			return nil, err
		}
		return &adapter.DisconnectSocketsMessage{Opts: optsFromWire(w.Opts), Close: w.Close}, nil
	case adapter.FETCH_SOCKETS:
		var w wireFetch
		if err := unmarshal(&w); err != nil {
			return nil, err
		}
		return &adapter.FetchSocketsMessage{Opts: optsFromWire(w.Opts), RequestId: w.RequestID}, nil
	case adapter.FETCH_SOCKETS_RESPONSE:
		var w wireFetchResponse
		if err := unmarshal(&w); err != nil {
			return nil, err
		}
		out := &fetchResponse{RequestID: w.RequestID}
		for _, s := range w.Sockets {
			out.Sockets = append(out.Sockets, &remoteSocket{
				id:        socket.SocketId(s.ID),
				handshake: handshakeFromWire(s.Handshake),
				rooms:     types.NewSet(roomsFromWire(s.Rooms)...),
				data:      s.Data,
			})
		}
		return out, nil
	case adapter.SERVER_SIDE_EMIT:
		var w wireServerSideEmit
		if err := unmarshal(&w); err != nil {
			return nil, err
		}
		return &adapter.ServerSideEmitMessage{RequestId: w.RequestID, Packet: nonNil(w.Packet)}, nil
	case adapter.SERVER_SIDE_EMIT_RESPONSE:
		var w wireValueResponse
		if err := unmarshal(&w); err != nil {
			return nil, err
		}
		return &valueResponse{RequestID: w.RequestID, Value: w.Packet}, nil
	case adapter.BROADCAST_ACK:
		var w wireValueResponse
		if err := unmarshal(&w); err != nil {
			return nil, err
		}
		return &adapter.BroadcastAck{RequestId: w.RequestID, Packet: []any{w.Packet}}, nil
	case adapter.BROADCAST_CLIENT_COUNT:
		var w wireClientCount
		if err := unmarshal(&w); err != nil {
			return nil, err
		}
		return &adapter.BroadcastClientCount{RequestId: w.RequestID, ClientCount: w.ClientCount}, nil
	}
	return nil, fmt.Errorf("%w %d", errUnknownType, typ)
}

// mayContainBinary lists the types whose data the Node adapter checks for
// binary values before choosing JSON.
func mayContainBinary(t adapter.MessageType) bool {
	switch t {
	case adapter.BROADCAST, adapter.FETCH_SOCKETS_RESPONSE, adapter.SERVER_SIDE_EMIT,
		adapter.SERVER_SIDE_EMIT_RESPONSE, adapter.BROADCAST_ACK:
		return true
	}
	return false
}

// encodeEntry returns the fields of the stream entry for m, in the order
// the Node adapter writes them: uid, nsp, type, data. data is JSON, or
// base64 msgpack when it holds binary values.
func encodeEntry(m *adapter.ClusterMessage, onlyPlaintext bool) ([]any, error) {
	fields := []any{"uid", string(m.Uid), "nsp", m.Nsp, "type", strconv.Itoa(int(m.Type))}
	w, err := toWire(m.Data)
	if err != nil || w == nil {
		return fields, err
	}
	var data string
	if !onlyPlaintext && mayContainBinary(m.Type) && hasBinary(w) {
		b, err := marshalMsgpack(w)
		if err != nil {
			return nil, err
		}
		data = base64.StdEncoding.EncodeToString(b)
	} else {
		b, err := marshalJSON(w)
		if err != nil {
			return nil, err
		}
		data = string(b)
	}
	return append(fields, "data", data), nil
}

// decodeEntry decodes the fields of a stream entry. ok is false for an
// entry without nsp, which the Node adapter skips too.
func decodeEntry(values map[string]any) (m *adapter.ClusterMessage, ok bool, err error) {
	str := func(k string) string { s, _ := values[k].(string); return s }
	nsp := str("nsp")
	if nsp == "" {
		return nil, false, nil
	}
	t, err := strconv.Atoi(str("type"))
	if err != nil {
		return nil, true, fmt.Errorf("type %q: %w", str("type"), err)
	}
	m = &adapter.ClusterMessage{Uid: adapter.ServerId(str("uid")), Nsp: nsp, Type: adapter.MessageType(t)}
	raw := str("data")
	var unmarshal func(any) error
	switch {
	case raw == "":
		unmarshal = func(any) error { return nil }
	case strings.HasPrefix(raw, "{"):
		unmarshal = func(v any) error { return json.Unmarshal([]byte(raw), v) }
	default:
		b, err := base64.StdEncoding.DecodeString(raw)
		if err != nil {
			return nil, true, fmt.Errorf("data: %w", err)
		}
		unmarshal = func(v any) error { return unmarshalMsgpack(b, v) }
	}
	if m.Data, err = fromWire(m.Type, unmarshal); err != nil {
		return nil, true, err
	}
	return m, true, nil
}

// encodeMessage encodes a whole message as msgpack (Protocol03 pub/sub).
func encodeMessage(m *adapter.ClusterMessage) ([]byte, error) {
	w, err := toWire(m.Data)
	if err != nil {
		return nil, err
	}
	return marshalMsgpack(&wireMessage{UID: string(m.Uid), Nsp: m.Nsp, Type: int(m.Type), Data: w})
}

func decodeMessage(b []byte) (*adapter.ClusterMessage, error) {
	var w wireMessageIn
	if err := unmarshalMsgpack(b, &w); err != nil {
		return nil, err
	}
	m := &adapter.ClusterMessage{Uid: adapter.ServerId(w.UID), Nsp: w.Nsp, Type: adapter.MessageType(w.Type)}
	var err error
	m.Data, err = fromWire(m.Type, func(v any) error {
		if len(w.Data) == 0 {
			return nil
		}
		return unmarshalMsgpack(w.Data, v)
	})
	return m, err
}

func packetToWire(p *parser.Packet) wirePacket {
	if p == nil {
		return wirePacket{Type: 2, Data: []any{}}
	}
	return wirePacket{Type: int(p.Type - '0'), Data: bytesOf(p.Data), Nsp: p.Nsp, ID: p.Id}
}

func packetFromWire(w wirePacket) (*parser.Packet, error) {
	if w.Type < 0 || w.Type > 6 {
		return nil, fmt.Errorf("packet type %d", w.Type)
	}
	p := &parser.Packet{Type: parser.PacketType('0' + w.Type), Nsp: w.Nsp, Data: w.Data, Id: w.ID}
	if p.Data == nil {
		p.Data = []any{}
	}
	return p, nil
}

func optsToWire(o *adapter.PacketOptions) wireOpts {
	w := wireOpts{Rooms: []string{}, Except: []string{}, Flags: &wireFlags{}}
	if o == nil {
		return w
	}
	w.Rooms = roomsToWire(o.Rooms)
	w.Except = roomsToWire(o.Except)
	if f := o.Flags; f != nil {
		w.Flags.Volatile = f.Volatile
		if f.Compress {
			c := true
			w.Flags.Compress = &c
		}
		if f.Timeout != nil {
			ms := float64(*f.Timeout) / float64(time.Millisecond)
			w.Flags.Timeout = &ms
		}
		w.Flags.ExpectSingleResponse = f.ExpectSingleResponse
	}
	return w
}

func optsFromWire(w wireOpts) *adapter.PacketOptions {
	o := &adapter.PacketOptions{Rooms: roomsFromWire(w.Rooms), Except: roomsFromWire(w.Except)}
	if f := w.Flags; f != nil {
		o.Flags = &socket.BroadcastFlags{ExpectSingleResponse: f.ExpectSingleResponse}
		o.Flags.Volatile = f.Volatile
		o.Flags.Compress = f.Compress != nil && *f.Compress
		if f.Timeout != nil && *f.Timeout >= 0 && *f.Timeout < math.MaxInt64/float64(time.Millisecond) {
			d := time.Duration(*f.Timeout * float64(time.Millisecond))
			o.Flags.Timeout = &d
		}
	}
	return o
}

func roomsToWire(rooms []socket.Room) []string {
	out := make([]string, 0, len(rooms))
	for _, r := range rooms {
		out = append(out, string(r))
	}
	return out
}

func roomsFromWire(rooms []string) []socket.Room {
	out := make([]socket.Room, 0, len(rooms))
	for _, r := range rooms {
		out = append(out, socket.Room(r))
	}
	return out
}

// handshakeToWire writes headers as Node does: lower-case names, one string
// per header (repeated values joined with ", "); query values are a string,
// or an array when repeated.
func handshakeToWire(h *socket.Handshake) *wireHandshake {
	if h == nil {
		return &wireHandshake{Headers: map[string]any{}, Query: map[string]any{}}
	}
	w := &wireHandshake{
		Headers: map[string]any{}, Time: h.Time, Address: h.Address, Xdomain: h.Xdomain,
		Secure: h.Secure, Issued: float64(h.Issued), URL: h.Url, Query: map[string]any{}, Auth: h.Auth,
	}
	for k, v := range h.Headers {
		w.Headers[strings.ToLower(k)] = strings.Join(v, ", ")
	}
	for k, v := range h.Query {
		if len(v) == 1 {
			w.Query[k] = v[0]
		} else {
			w.Query[k] = v
		}
	}
	return w
}

func handshakeFromWire(w *wireHandshake) *socket.Handshake {
	if w == nil {
		return &socket.Handshake{Headers: map[string][]string{}, Query: map[string][]string{}}
	}
	h := &socket.Handshake{
		Headers: map[string][]string{}, Time: w.Time, Address: w.Address, Xdomain: w.Xdomain,
		Secure: w.Secure, Issued: int64(w.Issued), Url: w.URL, Query: map[string][]string{}, Auth: w.Auth,
	}
	for k, v := range w.Headers {
		h.Headers[http.CanonicalHeaderKey(k)] = stringsOf(v)
	}
	for k, v := range w.Query {
		h.Query[k] = stringsOf(v)
	}
	return h
}

func stringsOf(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			out = append(out, fmt.Sprint(e))
		}
		return out
	case nil:
		return nil
	}
	return []string{fmt.Sprint(v)}
}

// bytesOf replaces engine.io buffers (types.BufferInterface) in event
// arguments by their content, which both encodings can carry; v2 sends
// them as binary, like []byte. Containers are copied, never modified.
func bytesOf(v any) any {
	switch v := v.(type) {
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = bytesOf(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = bytesOf(e)
		}
		return out
	case *types.StringBuffer:
		return v.String()
	case types.BufferInterface:
		return v.Bytes()
	}
	return v
}

func hasBinary(v any) bool {
	switch v := v.(type) {
	case *wireBroadcast:
		return parser.HasBinary(v.Packet.Data)
	case *wireServerSideEmit:
		return parser.HasBinary(v.Packet)
	case *wireValueResponse:
		return parser.HasBinary(v.Packet)
	case *wireFetchResponse:
		for _, s := range v.Sockets {
			if parser.HasBinary(s.Data) || parser.HasBinary(s.Handshake.Auth) {
				return true
			}
		}
	}
	return false
}

func first(args []any) any {
	if len(args) == 0 {
		return nil
	}
	return args[0]
}

func nonNil(a []any) []any {
	if a == nil {
		return []any{}
	}
	return a
}
