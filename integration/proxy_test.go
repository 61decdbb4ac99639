//go:build !direct

package integration

import (
	"context"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/proxy"
)

// bootstrap is the address every client under test is given: a kmigrate
// proxy started for the test in front of the shared broker. Built with
// -tags direct (bootstrap_direct_test.go) it is the broker itself, which
// validates the tests themselves against real Kafka.
func bootstrap(t *testing.T, c *kafkatest.Cluster) string {
	t.Helper()
	return startProxy(t, c)
}

const viaProxy = true

// startProxy starts an in-process proxy whose source is c and stops it when
// the test ends. It returns the proxy's client-facing address.
func startProxy(t *testing.T, c *kafkatest.Cluster) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := proxy.Start(ctx, proxy.Config{
		Listen: "127.0.0.1:0",
		Source: proxy.Upstream{Name: "source", Bootstrap: []string{c.Bootstrap()}},
	})
	if err != nil {
		t.Fatalf("start proxy in front of %s: %v", c.Bootstrap(), err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close proxy: %v", err)
		}
	})
	t.Logf("proxy %s -> %s", p.Addr(), c.Bootstrap())
	return p.Addr()
}
