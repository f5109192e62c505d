package qatest

import (
	"fmt"
	"time"

	"github.com/qaplatform/socketio"
	"github.com/qaplatform/socketio/internal/sioclient"
)

// Reply is the service's answer to one request (PROTOCOL.md, "Requests and
// replies"). It is a plain value, safe to copy and share.
type Reply struct {
	// OK is the reply's "ok": true on success.
	OK bool
	// Err is the failure, with its PROTOCOL.md code and, where the service
	// sent one, RetryAfter; nil when OK.
	Err *socketio.Error
	// Data is the reply object as received: the ack's object for Request;
	// for Send, the reply event's object, or the "error" event's
	// ({"event", "code", "message", "retry_after_ms"?}). JSON objects are
	// map[string]any, arrays []any, numbers float64.
	Data map[string]any
}

// Code is the failure's code, or "" when the reply is OK.
func (r Reply) Code() socketio.Code {
	if r.Err == nil {
		return ""
	}
	return r.Err.Code
}

// Decode decodes the reply object into v with encoding/json, for example
// into struct{ TaskID string `json:"task_id"` }, or into
// struct{ Task socketio.Task `json:"task"` } for get_task.
func (r Reply) Decode(v any) error {
	if err := remarshal(r.Data, v); err != nil {
		return fmt.Errorf("qatest: decoding a reply: %w", err)
	}
	return nil
}

// parseReply reads an ack's or a reply event's object.
func parseReply(event string, arg any) (Reply, error) {
	m, ok := arg.(map[string]any)
	if !ok {
		return Reply{}, fmt.Errorf("qatest: the reply to %q is not an object: %#v", event, arg)
	}
	switch m["ok"] {
	case true:
		return Reply{OK: true, Data: m}, nil
	case false:
		e, ok := m["error"].(map[string]any)
		if !ok {
			return Reply{}, fmt.Errorf("qatest: the failure reply to %q has no error object: %v", event, m)
		}
		return Reply{Err: wireError(e), Data: m}, nil
	}
	return Reply{}, fmt.Errorf(`qatest: the reply to %q has no boolean "ok": %v`, event, m)
}

// wireError reads a PROTOCOL.md error object.
func wireError(m map[string]any) *socketio.Error {
	code, _ := m["code"].(string)
	msg, _ := m["message"].(string)
	e := &socketio.Error{Code: socketio.Code(code), Message: msg}
	if ms, ok := m["retry_after_ms"].(float64); ok {
		e.RetryAfter = time.Duration(ms) * time.Millisecond
	}
	return e
}

// Event is one event the service pushed, such as "task_status",
// "answer_chunk", "answer" or "answer_error". It is a plain value, safe to
// copy and share.
type Event struct {
	Name string
	// Data is the event's payload object, nil if it carried none or
	// something else. JSON objects are map[string]any, arrays []any,
	// numbers float64.
	Data map[string]any

	arg any // the first argument as decoded
}

// Decode decodes the event's payload into v with encoding/json, for example
// into a struct with `json:"task_id"` and `json:"answer"` fields.
func (e Event) Decode(v any) error {
	if err := remarshal(e.arg, v); err != nil {
		return fmt.Errorf("qatest: decoding %q: %w", e.Name, err)
	}
	return nil
}

func toEvent(e sioclient.Event) Event {
	out := Event{Name: e.Name}
	if len(e.Args) > 0 {
		out.arg = e.Args[0]
		out.Data, _ = e.Args[0].(map[string]any)
	}
	return out
}
