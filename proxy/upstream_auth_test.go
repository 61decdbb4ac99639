package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/proxy/upstreamauth"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
)

// mtlsKafka requires a client certificate on its SSL listener.
var mtlsKafka = kafkatest.NewShared(kafkatest.Options{Name: "mtls", TLS: true, MTLS: true})

// logBuffer collects a proxy's logs so that tests can look for secrets.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startLoggedProxy starts a proxy to up whose logs go to the returned buffer.
func startLoggedProxy(t *testing.T, up Upstream) (*Proxy, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Start(ctx, Config{Listen: "127.0.0.1:0", Source: up, Logger: logs.logger()})
	if err != nil {
		t.Fatalf("start: %v\nlogs:\n%s", err, logs)
	}
	t.Cleanup(func() { p.Close() })
	return p, logs
}

// writeFile replaces path's content the way token agents do: a new file
// renamed over the old one.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestUpstreamOAuthTokenFile: OAUTHBEARER over SASL_SSL with the token in a
// file; replacing the file changes the token of the next connections, in
// both directions (a refused token, then a good one again).
func TestUpstreamOAuthTokenFile(t *testing.T) {
	kafka := secureKafka.Get(t)
	path := filepath.Join(t.TempDir(), "token")
	writeFile(t, path, kafkatest.UnsecuredJWT("admin", time.Now().Add(time.Hour)))
	mech, err := upstreamauth.TokenFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	p, logs := startLoggedProxy(t, Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SASLSSL)}, TLS: kafka.TLSConfig(), SASL: mech})
	roundTrip(t, p, "oauth-file", 20)

	// An expired token: a new client's upstream connections are refused,
	// the proxy's log says by which cluster and mechanism, without the token.
	expired := kafkatest.UnsecuredJWT("admin", time.Now().Add(-time.Minute))
	writeFile(t, path, expired)
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.DefaultProduceTopic("oauth-file"), kgo.RecordRetries(2), kgo.RetryTimeout(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = cl.ProduceSync(ctx, &kgo.Record{Value: []byte("refused")}).FirstErr()
	cancel()
	cl.Close()
	if err == nil {
		t.Fatal("produce with an expired token in the file succeeded: the proxy did not read the new token")
	}
	log := logs.String()
	if !strings.Contains(log, "sasl OAUTHBEARER with source broker") || !strings.Contains(log, "SASL_AUTHENTICATION_FAILED") {
		t.Fatalf("the proxy's log does not name the cluster and mechanism of the refusal:\n%s", log)
	}
	if strings.Contains(log, expired) || strings.Contains(log, strings.Split(expired, ".")[1]) {
		t.Fatalf("the proxy's log shows the token:\n%s", log)
	}

	// A fresh token again: new connections work.
	writeFile(t, path, kafkatest.UnsecuredJWT("admin", time.Now().Add(time.Hour)))
	roundTrip(t, p, "oauth-file-2", 20)
}

// jwtEndpoint is an OAuth 2.0 client-credentials token endpoint issuing
// unsecured JWTs for sub, valid for an hour; it counts what it issued.
func jwtEndpoint(t *testing.T, clientID, secret string) (*httptest.Server, *atomic.Int32) {
	var issued atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		id, sec, ok := r.BasicAuth()
		if !ok {
			id, sec = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		w.Header().Set("Content-Type", "application/json")
		if r.PostForm.Get("grant_type") != "client_credentials" || id != clientID || sec != secret {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client","error_description":"bad client credentials"}`)
			return
		}
		issued.Add(1)
		json.NewEncoder(w).Encode(map[string]any{
			"access_token": kafkatest.UnsecuredJWT("admin", time.Now().Add(time.Hour)),
			"token_type":   "Bearer",
			"expires_in":   3600,
		})
	}))
	t.Cleanup(srv.Close)
	return srv, &issued
}

// TestUpstreamOAuthClientCredentials: OAUTHBEARER with tokens from a
// client-credentials endpoint, one token for every connection while valid.
func TestUpstreamOAuthClientCredentials(t *testing.T) {
	kafka := secureKafka.Get(t)
	srv, issued := jwtEndpoint(t, "kmigrate", "cc-secret-123")
	mech, err := upstreamauth.ClientCredentials{TokenURL: srv.URL, ClientID: "kmigrate", ClientSecret: "cc-secret-123", Scopes: []string{"kafka"}}.Mechanism()
	if err != nil {
		t.Fatal(err)
	}
	p, logs := startLoggedProxy(t, Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SASLPlaintext)}, SASL: mech})
	roundTrip(t, p, "oauth-cc", 50)
	if n := issued.Load(); n != 1 {
		t.Fatalf("the endpoint issued %d tokens, want 1 shared by every connection", n)
	}
	if strings.Contains(logs.String(), "cc-secret-123") {
		t.Fatalf("the proxy's log shows the client secret:\n%s", logs)
	}
}

// TestUpstreamMTLS: the SSL listener requires a client certificate.
func TestUpstreamMTLS(t *testing.T) {
	kafka := mtlsKafka.Get(t)
	p, _ := startLoggedProxy(t, Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SSL)}, TLS: kafka.ClientTLSConfig()})
	roundTrip(t, p, "mtls", 50)
}

// TestUpstreamWrongCredentials: every refusal names the cluster and how it
// authenticated, and neither the error nor the logs show the secret.
func TestUpstreamWrongCredentials(t *testing.T) {
	secure := secureKafka.Get(t)
	mtls := mtlsKafka.Get(t)
	srv, _ := jwtEndpoint(t, "kmigrate", "right-secret")

	badScram, _ := kafkatest.SASLMechanism(kafkatest.MechScramSHA512, kafkatest.User{Name: "admin", Password: "bad-password-42"})
	garbage := "not-a-jwt-garbage-token-77"
	garbageFile := filepath.Join(t.TempDir(), "garbage")
	writeFile(t, garbageFile, garbage)
	garbageMech, err := upstreamauth.TokenFile(garbageFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	expired := kafkatest.UnsecuredJWT("admin", time.Now().Add(-time.Hour))
	expiredFile := filepath.Join(t.TempDir(), "expired")
	writeFile(t, expiredFile, expired)
	expiredMech, err := upstreamauth.TokenFile(expiredFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	badClient, err := upstreamauth.ClientCredentials{TokenURL: srv.URL, ClientID: "kmigrate", ClientSecret: "wrong-secret-99"}.Mechanism()
	if err != nil {
		t.Fatal(err)
	}
	saslSSL := []string{secure.Addr(kafkatest.SASLSSL)}
	for _, c := range []struct {
		name   string
		up     Upstream
		want   []string // in the error
		secret string
	}{
		{"bad SCRAM password", Upstream{Bootstrap: saslSSL, TLS: secure.TLSConfig(), SASL: badScram}, []string{"SCRAM-SHA-512", "SASL_AUTHENTICATION_FAILED"}, "bad-password-42"},
		{"garbage OAuth token", Upstream{Bootstrap: saslSSL, TLS: secure.TLSConfig(), SASL: garbageMech}, []string{"OAUTHBEARER", "SASL_AUTHENTICATION_FAILED"}, garbage},
		{"expired OAuth token", Upstream{Bootstrap: saslSSL, TLS: secure.TLSConfig(), SASL: expiredMech}, []string{"OAUTHBEARER", "SASL_AUTHENTICATION_FAILED"}, strings.Split(expired, ".")[1]},
		{"wrong OAuth client secret", Upstream{Bootstrap: saslSSL, TLS: secure.TLSConfig(), SASL: badClient}, []string{"OAUTHBEARER", srv.URL, "invalid_client"}, "wrong-secret-99"},
		{"no client certificate", Upstream{Bootstrap: []string{mtls.Addr(kafkatest.SSL)}, TLS: mtls.TLSConfig()}, []string{"tls: "}, ""},
	} {
		for _, cluster := range []string{"source", "target"} {
			t.Run(c.name+"/"+cluster, func(t *testing.T) {
				logs := &logBuffer{}
				good, _ := kafkatest.SASLMechanism(kafkatest.MechScramSHA512, kafkatest.DefaultUser)
				cfg := Config{Listen: "127.0.0.1:0", Logger: logs.logger(),
					Source: Upstream{Bootstrap: saslSSL, TLS: secure.TLSConfig(), SASL: good}}
				if cluster == "source" {
					cfg.Source = c.up
				} else {
					up := c.up
					cfg.Target = &up
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				p, err := Start(ctx, cfg)
				if err == nil {
					p.Close()
					t.Fatal("the proxy started with wrong credentials")
				}
				t.Logf("error: %v", err)
				for _, w := range append(c.want, cluster+" broker") {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("the error does not say %q: %v", w, err)
					}
				}
				if c.secret != "" && (strings.Contains(err.Error(), c.secret) || strings.Contains(logs.String(), c.secret)) {
					t.Errorf("the secret shows in the error or the logs:\n%v\n%s", err, logs)
				}
			})
		}
	}
}

// TestUpstreamReauth: brokers end SASL sessions after 5 s
// (connections.max.reauth.ms); a producer and a consumer through the proxy
// run for more than three sessions with no error, no connection the broker
// closed on the proxy, and every record back in order.
func TestUpstreamReauth(t *testing.T) {
	const lifetime = 5 * time.Second
	kafka := kafkatest.StartT(t, kafkatest.Options{Name: "reauth", SASL: true, OAuthBearer: true,
		BrokerConfig: map[string]string{"connections.max.reauth.ms": fmt.Sprint(lifetime.Milliseconds())}})
	scram, _ := kafkatest.SASLMechanism(kafkatest.MechScramSHA512, kafkatest.DefaultUser)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeFile(t, tokenFile, kafkatest.UnsecuredJWT("admin", time.Now().Add(time.Hour)))
	oauthMech, err := upstreamauth.TokenFile(tokenFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		up   Upstream
	}{
		{"SCRAM-SHA-512", Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SASLPlaintext)}, SASL: scram}},
		{"OAUTHBEARER", Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SASLPlaintext)}, SASL: oauthMech}},
	} {
		t.Run(c.name, func(t *testing.T) {
			logs := &logBuffer{}
			metrics := NewMetrics(prometheus.NewRegistry())
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			p, err := Start(ctx, Config{Listen: "127.0.0.1:0", Source: c.up, Logger: logs.logger(), Metrics: metrics})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			t.Cleanup(func() {
				if t.Failed() {
					for _, l := range strings.Split(logs.String(), "\n") {
						if !strings.Contains(l, "level=DEBUG") || strings.Contains(l, "session ending") {
							t.Log(l)
						}
					}
				}
			})
			topic := "reauth-" + strings.ToLower(c.name)
			// Created ahead: the producer retries nothing, and a topic
			// being auto-created fails its first records.
			if err := kafka.CreateTopic(context.Background(), topic, 3, nil); err != nil {
				t.Fatal(err)
			}
			runReauthTraffic(t, p, topic, 3*lifetime+lifetime/2)

			renewed := testutil.ToFloat64(metrics.reauth.WithLabelValues("source"))
			t.Logf("connections renewed: %v", renewed)
			// Each of the control, produce and fetch connections lives
			// 3 s (renewAfter(5 s)) over 17.5 s.
			if renewed < 5 {
				t.Errorf("kmigrate_upstream_reauth_total = %v, want the proxy to have replaced its connections at least 5 times", renewed)
			}
			for _, bad := range []string{"upstream unavailable", "closing client connection", "upstream connection replaced before"} {
				if strings.Contains(logs.String(), bad) {
					t.Errorf("the proxy logged %q: a broker closed a connection in use, or order was at risk:\n%s", bad, logs)
				}
			}
		})
	}
}

// runReauthTraffic produces sequence numbers to topic through p for d, one
// every 5 ms with up to five batches in flight (idempotent) and no retry,
// while a consumer reads them; it fails on any error and checks every
// record came back once, in order per partition.
func runReauthTraffic(t *testing.T, p *Proxy, topic string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+60*time.Second)
	defer cancel()
	prod, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.DefaultProduceTopic(topic), kgo.AllowAutoTopicCreation(),
		kgo.ProducerLinger(2*time.Millisecond), kgo.RecordRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	cons, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.ConsumeTopics(topic), kgo.AllowAutoTopicCreation(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()

	// A new topic's partitions may answer NOT_LEADER_OR_FOLLOWER for a
	// moment after CreateTopics returns; the strict producer below would
	// count that. One record per partition, retried, waits it out.
	warm, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	for part := range int32(3) {
		if err := warm.ProduceSync(ctx, &kgo.Record{Partition: part, Value: []byte("warm-up")}).FirstErr(); err != nil {
			t.Fatalf("warm-up produce to partition %d: %v", part, err)
		}
	}
	warm.Close()

	var produced, produceErrs atomic.Int64
	var firstErr atomic.Value
	stop := time.After(d)
	var wg sync.WaitGroup
produce:
	for i := 0; ; i++ {
		select {
		case <-stop:
			break produce
		case <-time.After(5 * time.Millisecond):
		}
		wg.Add(1)
		prod.Produce(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				produceErrs.Add(1)
				firstErr.CompareAndSwap(nil, err)
			}
		})
		produced.Add(1)
	}
	wg.Wait()
	if n := produceErrs.Load(); n > 0 {
		t.Fatalf("%d of %d produces failed, first: %v", n, produced.Load(), firstErr.Load())
	}
	n := int(produced.Load())
	seen := make([]bool, n)
	last := map[int32]int{} // partition → last value read
	for got := 0; got < n; {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d", got, n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if string(r.Value) == "warm-up" {
				return
			}
			var v int
			fmt.Sscan(string(r.Value), &v)
			if prev, ok := last[r.Partition]; (ok && v <= prev) || v >= n || seen[v] {
				t.Fatalf("record %q in partition %d after %d: duplicated or out of order", r.Value, r.Partition, last[r.Partition])
			}
			last[r.Partition], seen[v] = v, true
			got++
		})
	}
	t.Logf("%d records produced and consumed in order over %v", n, d)
}

func TestRenewAfter(t *testing.T) {
	for _, c := range []struct{ lifetime, want time.Duration }{
		{5 * time.Second, 3 * time.Second},   // 2 s before the end
		{time.Hour, 51 * time.Minute},        // 85%
		{2 * time.Second, time.Second},       // half of a short session
		{20 * time.Second, 17 * time.Second}, // 85% = 3 s before
		{10 * time.Second, 8 * time.Second},  // 2 s before (85% would leave 1.5 s)
		{100 * time.Millisecond, 50 * time.Millisecond},
	} {
		if got := renewAfter(c.lifetime); got != c.want {
			t.Errorf("renewAfter(%v) = %v, want %v", c.lifetime, got, c.want)
		}
	}
}
