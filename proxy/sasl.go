package proxy

import (
	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Client authentication at the proxy is not configured in pass-through mode:
// a client that tries SASL gets a clear refusal instead of a silent hang, and
// the proxy authenticates to the upstream with its own credentials.

func handleSASLHandshake(c *clientConn, r *protocol.Request) (finishFunc, error) {
	resp := kmsg.NewPtrSASLHandshakeResponse()
	resp.Version = r.APIVersion
	resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
	resp.SupportedMechanisms = []string{}
	return respond(resp), nil
}

func handleSASLAuthenticate(c *clientConn, r *protocol.Request) (finishFunc, error) {
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	resp.Version = r.APIVersion
	resp.ErrorCode = kerr.IllegalSaslState.Code
	msg := "this kmigrate proxy does not authenticate clients; connect without SASL"
	resp.ErrorMessage = &msg
	return respond(resp), nil
}
