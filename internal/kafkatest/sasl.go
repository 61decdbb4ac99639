package kafkatest

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// SASLMechanism returns the franz-go mechanism for mechanism (MechPlain,
// MechScramSHA256 or MechScramSHA512) authenticating as u.
func SASLMechanism(mechanism string, u User) (sasl.Mechanism, error) {
	switch mechanism {
	case MechPlain:
		return plain.Auth{User: u.Name, Pass: u.Password}.AsMechanism(), nil
	case MechScramSHA256:
		return scram.Auth{User: u.Name, Pass: u.Password}.AsSha256Mechanism(), nil
	case MechScramSHA512:
		return scram.Auth{User: u.Name, Pass: u.Password}.AsSha512Mechanism(), nil
	}
	return nil, fmt.Errorf("kafkatest: unknown SASL mechanism %q", mechanism)
}

// SASLClient returns a franz-go client on the SASL_PLAINTEXT listener
// authenticating as u with mechanism; opts are appended. Authentication
// happens on the first request, so a wrong password shows up there.
func (c *Cluster) SASLClient(mechanism string, u User, opts ...kgo.Opt) (*kgo.Client, error) {
	addr := c.Addr(SASLPlaintext)
	if addr == "" {
		return nil, fmt.Errorf("kafkatest: cluster %s has no SASL listener (Options.SASL)", c.opts.Name)
	}
	m, err := SASLMechanism(mechanism, u)
	if err != nil {
		return nil, err
	}
	base := []kgo.Opt{kgo.SeedBrokers(addr), kgo.SASL(m), kgo.AllowAutoTopicCreation()}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafkatest: new SASL client for %s: %w", c.opts.Name, err)
	}
	return cl, nil
}
