package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Pass-through (ClientSASL.PassThrough): a PLAIN client is checked by the
// source cluster itself, and every upstream connection of that client logs
// in as the client, so the brokers' ACLs and quotas apply to the client's
// own principal. The proxy learns the password from PLAIN and logs in with
// each cluster's configured mechanism (Upstream.SASL), e.g. SCRAM toward
// brokers that do not enable PLAIN. SCRAM clients cannot be passed through:
// SCRAM never shows the proxy the password.

// asUser returns the mechanism m logged in as user instead of the proxy.
func asUser(m sasl.Mechanism, user, password string) (sasl.Mechanism, error) {
	if m == nil {
		return nil, errors.New("the cluster has no SASL mechanism to log clients in with")
	}
	switch m.Name() {
	case MechPlain:
		return plain.Auth{User: user, Pass: password}.AsMechanism(), nil
	case MechScramSHA256:
		return scram.Auth{User: user, Pass: password}.AsSha256Mechanism(), nil
	case MechScramSHA512:
		return scram.Auth{User: user, Pass: password}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("clients cannot be passed through with SASL %s (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)", m.Name())
}

// checkPassThrough validates pass-through against the clusters' settings.
func (p *Proxy) checkPassThrough() error {
	if p.cfg.ClientSASL == nil || !p.cfg.ClientSASL.PassThrough {
		return nil
	}
	for _, up := range []*Upstream{&p.cfg.Source, p.cfg.Target} {
		if up == nil {
			continue
		}
		if _, err := asUser(up.SASL, "", ""); err != nil {
			return fmt.Errorf("client SASL pass-through toward the %s: %w", up.Name, err)
		}
	}
	return nil
}

// loginAsClient logs in to a source broker as the client. An upstream
// refusal is the client's failure; an unreachable source is an error, so
// that the connection closes and the client retries later rather than
// taking its password for wrong. The accepted connection is kept as this
// client's link to that broker.
func (c *clientConn) loginAsClient(user, password string) (failure string, err error) {
	identity := map[*cluster]*Upstream{}
	for _, cl := range []*cluster{c.p.source, c.p.target} {
		if cl == nil {
			continue
		}
		up := cl.up
		if up.SASL, err = asUser(cl.up.SASL, user, password); err != nil {
			return "", err
		}
		identity[cl] = &up
	}
	lastErr := errors.New("no source broker known")
	for _, id := range c.p.source.allBrokers() {
		addr, ok := c.p.source.brokerAddr(id)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, dialTimeout+authTimeout)
		bc, err := dialBroker(ctx, identity[c.p.source], addr, c.p.cfg.MaxInFlight, c.p.cfg.MaxFrameBytes)
		cancel()
		if errors.Is(err, kerr.SaslAuthenticationFailed) {
			c.log.Debug("the source refused the client's credentials", "user", clip(user), "err", err)
			return authFailedMessage, nil
		}
		if err != nil {
			lastErr = err
			continue
		}
		c.upstreamsMu.Lock()
		c.identity = identity
		c.upstreams[brokerKey{c.p.source, id}] = bc
		c.upstreamsMu.Unlock()
		return "", nil
	}
	return "", fmt.Errorf("no source broker could check the credentials of client user %q: %w", clip(user), lastErr)
}
