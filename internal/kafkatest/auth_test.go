package kafkatest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/oauth"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// TestOAuthBearerAndMTLS checks the OAUTHBEARER mechanism (unsecured JWTs)
// and the SSL listener's required client certificate, each both ways.
func TestOAuthBearerAndMTLS(t *testing.T) {
	c := kafkatest.StartT(t, kafkatest.Options{Name: "oauth-mtls", SASL: true, TLS: true, OAuthBearer: true, MTLS: true})

	produce := func(opts ...kgo.Opt) error {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		cl, err := c.Client(opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		// Ping reports a refused authentication at once; a produce would
		// retry it until the context ends.
		if err := cl.Ping(ctx); err != nil {
			return err
		}
		return cl.ProduceSync(ctx, &kgo.Record{Topic: "auth", Value: []byte("x")}).FirstErr()
	}
	bearer := func(token string) kgo.Opt {
		return kgo.SASL(oauth.Auth{Token: token}.AsMechanism())
	}
	sasl := kgo.SeedBrokers(c.Addr(kafkatest.SASLPlaintext))
	if err := produce(sasl, bearer(kafkatest.UnsecuredJWT("admin", time.Now().Add(time.Hour)))); err != nil {
		t.Fatalf("OAUTHBEARER with a valid unsecured JWT: %v", err)
	}
	if err := produce(sasl, bearer(kafkatest.UnsecuredJWT("admin", time.Now().Add(-time.Minute)))); err == nil || !strings.Contains(err.Error(), "SASL_AUTHENTICATION_FAILED") {
		t.Fatalf("OAUTHBEARER with an expired JWT: err = %v, want SASL_AUTHENTICATION_FAILED", err)
	}

	ssl := kgo.SeedBrokers(c.Addr(kafkatest.SSL))
	if err := produce(ssl, kgo.DialTLSConfig(c.ClientTLSConfig())); err != nil {
		t.Fatalf("SSL with the client certificate: %v", err)
	}
	if err := produce(ssl, kgo.DialTLSConfig(c.TLSConfig())); err == nil {
		t.Fatal("SSL without a client certificate was accepted; MTLS should require one")
	} else {
		t.Logf("without a client certificate: %v", err)
	}
	certFile, keyFile := c.ClientCertFiles()
	if certFile == "" || keyFile == "" {
		t.Fatal("ClientCertFiles is empty on a TLS cluster")
	}
}
