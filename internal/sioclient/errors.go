package sioclient

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is reported after Close was called.
	ErrClosed = errors.New("sioclient: client closed")
	// ErrServerDisconnect is reported after the server sent a Socket.IO
	// DISCONNECT packet ("41") for the client's namespace.
	ErrServerDisconnect = errors.New("sioclient: server disconnected the socket")
	// ErrTransportClosed is reported after the transport failed or the server
	// closed it (an Engine.IO close packet, a closed websocket, a failed poll).
	// The cause is wrapped alongside it.
	ErrTransportClosed = errors.New("sioclient: transport closed")
)

// ConnectError is returned by Dial when the server answers the Socket.IO
// CONNECT with CONNECT_ERROR ("44{...}"), for example when a middleware calls
// next(socket.NewExtendedError(message, data)).
type ConnectError struct {
	// Message is the "message" field of the reply.
	Message string
	// Data is the "data" field of the reply when it is a JSON object, else nil.
	Data map[string]any
	// Raw is the JSON payload of the reply as received.
	Raw string
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("sioclient: connect error: %s", e.Message)
}

// transportError marks err as a transport failure, keeping the cause.
func transportError(err error) error {
	if err == nil || errors.Is(err, ErrTransportClosed) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrTransportClosed, err)
}
