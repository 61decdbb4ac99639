//go:build direct

package integration

import (
	"testing"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// bootstrap is the address every client under test is given. Built with
// -tags direct it is the broker itself, which validates the tests against
// real Kafka; by default (proxy_test.go) it is a kmigrate proxy in front of
// the broker.
func bootstrap(t *testing.T, c *kafkatest.Cluster) string {
	t.Helper()
	return c.Bootstrap()
}

const viaProxy = false
