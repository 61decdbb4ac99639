package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestProxyUpstreamAuthFlags runs the binary against two real clusters
// that authenticate differently: the source by OAUTHBEARER with tokens from
// a client-credentials endpoint (over SASL_SSL), the target by a client
// certificate. Records produced through the proxy come back through it and
// reach the target through the mirror; neither the client secret nor a
// token shows in the proxy's log.
func TestProxyUpstreamAuthFlags(t *testing.T) {
	src := kafkatest.StartT(t, kafkatest.Options{Name: "src-oauth", SASL: true, TLS: true, OAuthBearer: true})
	dst := kafkatest.StartT(t, kafkatest.Options{Name: "dst-mtls", TLS: true, MTLS: true})

	const secret = "client-secret-e2e-5309"
	var mu sync.Mutex
	var tokens []string
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		id, sec, ok := r.BasicAuth()
		if !ok {
			id, sec = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		w.Header().Set("Content-Type", "application/json")
		if id != "kmigrate" || sec != secret {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client"}`)
			return
		}
		token := kafkatest.UnsecuredJWT("admin", time.Now().Add(time.Hour))
		mu.Lock()
		tokens = append(tokens, token)
		mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": 3600})
	}))
	defer idp.Close()

	t.Setenv("KMIGRATE_SOURCE_OAUTH_CLIENT_SECRET", secret)
	certFile, keyFile := dst.ClientCertFiles()
	p := proxytest.Start(t,
		"--source-bootstrap", src.Addr(kafkatest.SASLSSL), "--source-tls-ca", src.CAFile(),
		"--source-sasl-mechanism", "OAUTHBEARER", "--source-oauth-token-endpoint", idp.URL,
		"--source-oauth-client-id", "kmigrate", "--source-oauth-scope", "kafka",
		"--target-bootstrap", dst.Addr(kafkatest.SSL), "--target-tls-ca", dst.CAFile(),
		"--target-tls-cert", certFile, "--target-tls-key", keyFile,
		"--data-dir", t.TempDir(), "--log-level", "debug")

	const topic, n = "auth-e2e", 200
	if err := src.CreateTopic(context.Background(), topic, 2, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	want := map[string]bool{}
	for i := range n {
		v := fmt.Sprintf("record-%03d", i)
		want[v] = true
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(fmt.Sprint(i % 7)), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatalf("produce %d through the proxy: %v", i, err)
		}
	}
	consumeAll := func(what string, opts ...kgo.Opt) {
		t.Helper()
		c, err := kgo.NewClient(append(opts, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))...)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		got := map[string]bool{}
		for len(got) < n {
			fs := c.PollFetches(ctx)
			if ctx.Err() != nil {
				t.Fatalf("%s: consumed %d of %d records", what, len(got), n)
			}
			fs.EachError(func(topic string, p int32, err error) { t.Fatalf("%s: fetch %s/%d: %v", what, topic, p, err) })
			fs.EachRecord(func(r *kgo.Record) {
				if !want[string(r.Value)] || got[string(r.Value)] {
					t.Fatalf("%s: unexpected or repeated record %q", what, r.Value)
				}
				got[string(r.Value)] = true
			})
		}
		t.Logf("%s: %d records, equal to those produced", what, len(got))
	}
	consumeAll("through the proxy (source, OAUTHBEARER)", kgo.SeedBrokers(p.Addr))
	consumeAll("target directly (mirrored over mTLS)", kgo.SeedBrokers(dst.Addr(kafkatest.SSL)), kgo.DialTLSConfig(dst.ClientTLSConfig()))

	log, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tokens) == 0 {
		t.Fatal("the token endpoint issued no token")
	}
	t.Logf("tokens issued: %d", len(tokens))
	for _, s := range append([]string{secret}, tokens...) {
		if strings.Contains(string(log), s) {
			t.Fatalf("the proxy's log shows a secret or token %q", s)
		}
	}
}
