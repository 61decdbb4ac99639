package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/xdg-go/scram"
)

// Client authentication at the proxy follows Kafka's broker: ApiVersions,
// then SaslHandshake v1 naming a mechanism, then SaslAuthenticate until the
// mechanism succeeds. Until then every other request closes the connection,
// so nothing an unauthenticated client sends ever goes upstream. The proxy
// authenticates to the upstream with its own credentials (Upstream.SASL).
//
// Without ClientSASL the proxy refuses SASL clearly instead of hanging.

// ClientSASL makes clients authenticate to the proxy.
type ClientSASL struct {
	// Mechanisms offered, in the order the handshake lists them: PLAIN,
	// SCRAM-SHA-256, SCRAM-SHA-512.
	Mechanisms []string
	// Credentials are the users and their passwords or SCRAM hashes.
	// With PassThrough and PLAIN alone they may be nil.
	Credentials *Credentials
	// PassThrough has the source cluster check PLAIN clients, and every
	// upstream connection of such a client log in as the client
	// (passthrough.go).
	PassThrough bool
}

const (
	// authFailedMessage is Kafka's answer to a wrong user or password.
	authFailedMessage = "Authentication failed: Invalid username or password"
	// failedAuthDelay holds a failure's answer, as Kafka's
	// connection.failed.authentication.delay.ms does, to slow down
	// password guessing.
	failedAuthDelay = 100 * time.Millisecond
	// maxPreAuthFrame bounds what an unauthenticated client can make the
	// proxy buffer (Kafka's sasl.server.max.receive.size).
	maxPreAuthFrame     = 512 << 10
	saslHandshakeKey    = 17
	saslAuthenticateKey = 36
)

// saslVersions are the versions the proxy serves itself when it
// authenticates clients. Every client of the last years sends SaslHandshake
// v1 and then SaslAuthenticate; v0 is followed by SASL tokens without Kafka
// framing, which the proxy does not speak and refuses with an answer. v0 is
// advertised all the same, as brokers do: librdkafka enables SASL only when
// SaslHandshake v0 is listed (its feature table), then sends v1.
var saslVersions = map[int16][2]int16{saslHandshakeKey: {0, 1}, saslAuthenticateKey: {0, 2}}

// servers checks the mechanisms and builds one SCRAM server per SCRAM mechanism.
func (s *ClientSASL) servers() (map[string]*scram.Server, error) {
	if len(s.Mechanisms) == 0 {
		return nil, errors.New("client SASL needs at least one mechanism")
	}
	if s.PassThrough && !slices.Contains(s.Mechanisms, MechPlain) {
		return nil, errors.New("client SASL pass-through needs PLAIN: only PLAIN shows the proxy the password to log in with")
	}
	if s.Credentials == nil && (!s.PassThrough || slices.ContainsFunc(s.Mechanisms, func(m string) bool { return m != MechPlain })) {
		return nil, errors.New("client SASL needs credentials (pass-through checks PLAIN clients only)")
	}
	servers := map[string]*scram.Server{}
	for i, m := range s.Mechanisms {
		if slices.Contains(s.Mechanisms[:i], m) {
			return nil, fmt.Errorf("client SASL mechanism %s listed twice", m)
		}
		switch m {
		case MechPlain:
		case MechScramSHA256, MechScramSHA512:
			srv, err := scramHashes[m].NewServer(s.Credentials.scramLookup(m))
			if err != nil {
				return nil, fmt.Errorf("client SASL %s: %w", m, err)
			}
			servers[m] = srv
		default:
			return nil, fmt.Errorf("client SASL mechanism %q is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)", m)
		}
	}
	return servers, nil
}

// saslSession is one connection's authentication. Only the connection's
// reader goroutine touches it.
type saslSession struct {
	mechanism     string // chosen by SaslHandshake; "" before
	scram         *scram.ServerConversation
	scramFirst    *scramFirst // for librdkafka's final message (scram_librdkafka.go)
	authenticated bool
}

// allowedBeforeAuth are the requests Kafka's broker serves before SASL
// completes.
func allowedBeforeAuth(key int16) bool {
	return key == apiVersionsKey || key == saslHandshakeKey || key == saslAuthenticateKey
}

// mechanismLabel is the metric label of this session's mechanism.
func (s *saslSession) mechanismLabel() string {
	if s.mechanism == "" {
		return "none"
	}
	return s.mechanism
}

// closeAfterAnswer ends a connection once the answer of the request that
// caused it is written: the client learns why before the connection closes.
type closeAfterAnswer struct{ reason string }

func (e *closeAfterAnswer) Error() string { return e.reason }

func handleSASLHandshake(c *clientConn, r *protocol.Request) (finishFunc, error) {
	resp := kmsg.NewPtrSASLHandshakeResponse()
	resp.Version = r.APIVersion
	if c.auth == nil {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		resp.SupportedMechanisms = []string{}
		return respond(resp), nil
	}
	req := kmsg.NewPtrSASLHandshakeRequest()
	req.Version = r.APIVersion
	if err := req.ReadFrom(r.Body); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	resp.SupportedMechanisms = c.p.cfg.ClientSASL.Mechanisms
	s := c.auth
	switch {
	case s.authenticated:
		// Re-authentication (KIP-368) is not offered: sessions never expire.
		resp.ErrorCode = kerr.IllegalSaslState.Code
	case r.APIVersion == 0:
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		c.refuseAuth("none", "SaslHandshake v0 (SASL tokens without Kafka framing) is not supported; use a client that sends SaslHandshake v1 (Kafka 1.0 or later)", "")
	case s.mechanism != "":
		resp.ErrorCode = kerr.IllegalSaslState.Code
		c.refuseAuth(s.mechanism, "a second SaslHandshake before authentication completed", "")
	case !slices.Contains(c.p.cfg.ClientSASL.Mechanisms, req.Mechanism):
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		c.refuseAuth("unsupported", "the client asked for a SASL mechanism the proxy does not offer", clip(req.Mechanism))
	default:
		s.mechanism = req.Mechanism
	}
	return respond(resp), nil
}

// refuseAuth counts and logs a protocol refusal and closes the connection
// after its answer.
func (c *clientConn) refuseAuth(mechanism, reason, asked string) {
	c.p.metrics.clientAuth(mechanism, "failure")
	if asked != "" {
		c.log.Warn("client SASL refused", "reason", reason, "mechanism_asked", asked, "offered", c.p.cfg.ClientSASL.Mechanisms)
	} else {
		c.log.Warn("client SASL refused", "reason", reason)
	}
	c.closeAfter = &closeAfterAnswer{reason: reason}
}

func handleSASLAuthenticate(c *clientConn, r *protocol.Request) (finishFunc, error) {
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	resp.Version = r.APIVersion
	fail := func(code int16, msg string) (finishFunc, error) {
		resp.ErrorCode = code
		resp.ErrorMessage = &msg
		return respond(resp), nil
	}
	if c.auth == nil {
		return fail(kerr.IllegalSaslState.Code, "this kmigrate proxy does not authenticate clients; connect without SASL")
	}
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.Version = r.APIVersion
	if err := req.ReadFrom(r.Body); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	s := c.auth
	switch {
	case s.authenticated:
		return fail(kerr.IllegalSaslState.Code, "SaslAuthenticate request received after successful authentication")
	case s.mechanism == "":
		c.refuseAuth("none", "SaslAuthenticate before SaslHandshake", "")
		return fail(kerr.IllegalSaslState.Code, "Unexpected SaslAuthenticate request before SaslHandshake")
	}

	var user, failure string
	if s.mechanism == MechPlain {
		var err error
		if user, failure, err = c.checkPlain(req.SASLAuthBytes); err != nil {
			return nil, err
		}
	} else {
		var challenge string
		var done bool
		user, challenge, done, failure = c.scramStep(req.SASLAuthBytes)
		if failure == "" && !done {
			resp.SASLAuthBytes = []byte(challenge) // server-first message
			return respond(resp), nil
		}
		resp.SASLAuthBytes = []byte(challenge) // server-final: the server's proof
	}
	if failure != "" {
		return c.authFailed(resp, user, failure), nil
	}
	s.authenticated, s.scram, s.scramFirst = true, nil, nil
	c.p.metrics.clientAuth(s.mechanism, "success")
	c.log.Debug("client authenticated", "mechanism", s.mechanism, "user", user)
	resp.SessionLifetimeMillis = 0 // no re-authentication demanded
	return respond(resp), nil
}

// checkPlain checks a PLAIN message against the credentials, or with
// pass-through at the source. failure is Kafka's message for the client;
// err means the check could not be made.
func (c *clientConn) checkPlain(msg []byte) (user, failure string, err error) {
	user, password, failure := parsePlain(msg)
	switch {
	case failure != "":
		return user, failure, nil
	case c.p.cfg.ClientSASL.PassThrough:
		failure, err = c.loginAsClient(user, password)
		return user, failure, err
	case !c.p.cfg.ClientSASL.Credentials.checkPlain(user, password):
		return user, authFailedMessage, nil
	}
	return user, "", nil
}

// parsePlain reads a PLAIN message, "authzid NUL user NUL password"; on a
// malformed one it returns Kafka's message for it.
func parsePlain(msg []byte) (user, password, failure string) {
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 {
		return "", "", "Authentication failed: Invalid SASL/PLAIN response: expected 3 tokens"
	}
	authzid, user, password := string(parts[0]), string(parts[1]), string(parts[2])
	switch {
	case user == "":
		return "", "", "Authentication failed: username not specified"
	case password == "":
		return user, "", "Authentication failed: password not specified"
	case authzid != "" && authzid != user:
		return user, "", "Authentication failed: Client requested an authorization id that is different from username"
	}
	return user, password, ""
}

// scramStep runs one step of a SCRAM exchange: the client-first message
// gets the server-first challenge, the client-final message the server's
// proof and done.
func (c *clientConn) scramStep(msg []byte) (user, challenge string, done bool, failure string) {
	s := c.auth
	if s.scram == nil {
		s.scram = c.p.scramServers[s.mechanism].NewConversation()
	} else if s.scramFirst != nil {
		user = s.scram.Username()
		cred, _ := c.p.cfg.ClientSASL.Credentials.scramLookup(s.mechanism)(user)
		if final, valid, handled := s.scramFirst.librdkafkaFinal(scramHashes[s.mechanism], cred, string(msg)); handled {
			if !valid {
				return user, "", false, authFailedMessage
			}
			return user, final, true, ""
		}
	}
	out, err := s.scram.Step(string(msg))
	user = s.scram.Username()
	if err != nil {
		// An unknown user fails here too, at the proof (a decoy
		// credential): the same answer as a wrong password.
		c.log.Debug("SCRAM step failed", "mechanism", s.mechanism, "user", clip(user), "err", err)
		return user, "", false, authFailedMessage
	}
	if authz := s.scram.AuthzID(); authz != "" && authz != user {
		return user, "", false, "Authentication failed: Client requested an authorization id that is different from username"
	}
	if !s.scram.Done() {
		s.scramFirst = newScramFirst(string(msg), out)
		return user, out, false, ""
	}
	if !s.scram.Valid() {
		return user, "", false, authFailedMessage
	}
	return user, out, true, ""
}

// authFailed answers SASL_AUTHENTICATION_FAILED after failedAuthDelay and
// closes the connection after the answer, as Kafka's broker does.
func (c *clientConn) authFailed(resp *kmsg.SASLAuthenticateResponse, user, failure string) finishFunc {
	mech := c.auth.mechanism
	c.p.metrics.clientAuth(mech, "failure")
	c.log.Warn("client authentication failed", "mechanism", mech, "user", clip(user), "reason", failure)
	c.closeAfter = &closeAfterAnswer{reason: "authentication failed"}
	resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
	resp.ErrorMessage = &failure
	resp.SASLAuthBytes = nil
	body := resp.AppendTo(nil)
	return func(ctx context.Context) ([]byte, error) {
		select {
		case <-time.After(failedAuthDelay):
		case <-ctx.Done():
		}
		return body, nil
	}
}

// clip bounds a client-supplied string before it reaches a log line.
func clip(s string) string {
	const max = 128
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
