package proxy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// secureKafka is one real broker with SASL and TLS listeners, shared by the
// upstream-authentication tests of this package.
var secureKafka = kafkatest.NewShared(kafkatest.Options{Name: "secure", SASL: true, TLS: true, OAuthBearer: true})

func startProxyTo(t *testing.T, up Upstream) *Proxy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Start(ctx, Config{Listen: "127.0.0.1:0", Source: up})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// roundTrip produces n records through the proxy and reads them back.
func roundTrip(t *testing.T, p *Proxy, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.DefaultProduceTopic(topic), kgo.ConsumeTopics(topic),
		kgo.AllowAutoTopicCreation(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < n; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatalf("produce %d through proxy: %v", i, err)
		}
	}
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d", got, n)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Value) != fmt.Sprint(got) {
				t.Fatalf("record %d has value %q", got, r.Value)
			}
			got++
		})
	}
}

func TestUpstreamSASL(t *testing.T) {
	kafka := secureKafka.Get(t)
	for _, mech := range []string{kafkatest.MechPlain, kafkatest.MechScramSHA256, kafkatest.MechScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			m, err := kafkatest.SASLMechanism(mech, kafkatest.DefaultUser)
			if err != nil {
				t.Fatal(err)
			}
			p := startProxyTo(t, Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SASLPlaintext)}, SASL: m})
			roundTrip(t, p, "sasl-"+strings.ToLower(mech), 20)
		})
	}
	t.Run("wrong password is refused at start", func(t *testing.T) {
		m, _ := kafkatest.SASLMechanism(kafkatest.MechScramSHA512, kafkatest.User{Name: kafkatest.DefaultUser.Name, Password: "wrong"})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := Start(ctx, Config{Listen: "127.0.0.1:0", Source: Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SASLPlaintext)}, SASL: m}})
		if err == nil || !strings.Contains(err.Error(), "SASL_AUTHENTICATION_FAILED") {
			t.Fatalf("start with a wrong password: err = %v, want an authentication failure", err)
		}
	})
}

func TestUpstreamTLS(t *testing.T) {
	kafka := secureKafka.Get(t)
	p := startProxyTo(t, Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SSL)}, TLS: kafka.TLSConfig()})
	roundTrip(t, p, "tls", 20)

	m, _ := kafkatest.SASLMechanism(kafkatest.MechScramSHA256, kafkatest.DefaultUser)
	p2 := startProxyTo(t, Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SASLSSL)}, TLS: kafka.TLSConfig(), SASL: m})
	roundTrip(t, p2, "sasl-ssl", 20)

	m512, _ := kafkatest.SASLMechanism(kafkatest.MechScramSHA512, kafkatest.DefaultUser)
	p3 := startProxyTo(t, Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SASLSSL)}, TLS: kafka.TLSConfig(), SASL: m512})
	roundTrip(t, p3, "sasl-ssl-512", 20)
}
