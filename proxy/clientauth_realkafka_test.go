package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The client users of the proxy differ from the broker's (kafkatest's
// admin): the proxy checks clients itself and reaches the broker with its
// own SCRAM credentials.
const (
	appUser     = "app"
	appPassword = "app-secret"
)

// clientAuthKafka is a proxy that authenticates clients in front of the
// shared secure broker.
type clientAuthKafka struct {
	kafka *kafkatest.Cluster
	proxy *Proxy
	admin *kadm.Client // direct to the broker, not through the proxy
}

func startClientAuthKafka(t *testing.T, clientTLS *tls.Config) *clientAuthKafka {
	t.Helper()
	kafka := secureKafka.Get(t)
	path := filepath.Join(t.TempDir(), "clients.yaml")
	if err := os.WriteFile(path, []byte("users:\n  "+appUser+":\n    password: "+appPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := LoadCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	upstreamMech, err := kafkatest.SASLMechanism(kafkatest.MechScramSHA512, kafkatest.DefaultUser)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Start(ctx, Config{
		Listen:     "127.0.0.1:0",
		Source:     Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SASLPlaintext)}, SASL: upstreamMech},
		ClientTLS:  clientTLS,
		ClientSASL: &ClientSASL{Mechanisms: allMechanisms, Credentials: creds},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	direct, err := kafka.SASLClient(kafkatest.MechScramSHA512, kafkatest.DefaultUser)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(direct.Close)
	return &clientAuthKafka{kafka: kafka, proxy: p, admin: kadm.NewClient(direct)}
}

// createTopic makes a one-partition topic on the broker, so that order is
// total and records compare one by one.
func (k *clientAuthKafka) createTopic(t *testing.T, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := k.admin.CreateTopic(ctx, 1, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// assertNoTopic checks on the broker that a refused client created nothing.
func (k *clientAuthKafka) assertNoTopic(t *testing.T, topic string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	topics, err := k.admin.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has(topic) {
		t.Fatalf("topic %s exists on the broker: a refused client's request reached it", topic)
	}
}

// javaClientConfig writes a Java client .properties file for the proxy.
func javaClientConfig(t *testing.T, protocol, mech, user, password string, extra map[string]string) string {
	t.Helper()
	module := "org.apache.kafka.common.security.scram.ScramLoginModule"
	if mech == MechPlain {
		module = "org.apache.kafka.common.security.plain.PlainLoginModule"
	}
	props := map[string]string{
		"security.protocol": protocol,
		"sasl.mechanism":    mech,
		"sasl.jaas.config":  fmt.Sprintf("%s required username=%q password=%q;", module, user, password),
	}
	for k, v := range extra {
		props[k] = v
	}
	var b strings.Builder
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range props {
			if !yield(k) {
				return
			}
		}
	}) {
		fmt.Fprintf(&b, "%s=%s\n", k, props[k])
	}
	path := filepath.Join(t.TempDir(), "client.properties")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func numberedLines(prefix string, n int) []string {
	lines := make([]string, n)
	for i := range lines {
		lines[i] = fmt.Sprintf("%s-%04d", prefix, i)
	}
	return lines
}

// javaProduceConsume sends lines with Kafka's console producer and reads
// them back with its console consumer, both through the proxy with config.
func javaProduceConsume(t *testing.T, addr, topic, config string, lines []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	in := strings.NewReader(strings.Join(lines, "\n") + "\n")
	if _, stderr, err := kafkatest.ToolStdin(ctx, in, kafkatest.MainConsoleProducer, "--bootstrap-server", addr,
		"--topic", topic, "--producer.config", config); err != nil {
		t.Fatalf("console producer: %v\n%s", err, stderr)
	}
	out, stderr, err := kafkatest.Tool(ctx, kafkatest.MainConsoleConsumer, "--bootstrap-server", addr, "--topic", topic,
		"--from-beginning", "--max-messages", strconv.Itoa(len(lines)), "--timeout-ms", "60000", "--consumer.config", config)
	if err != nil {
		t.Fatalf("console consumer: %v\n%s", err, stderr)
	}
	if got := strings.Split(strings.TrimSpace(out), "\n"); !slices.Equal(got, lines) {
		t.Fatalf("console consumer read %d records, want the %d produced in order; first differences: got %q", len(got), len(lines), got[:min(5, len(got))])
	}
}

// kcatProduceConsume does the same with librdkafka's kcat; args carry the
// security settings.
func kcatProduceConsume(t *testing.T, addr, topic string, lines []string, args ...string) {
	t.Helper()
	kcat, err := kafkatest.Kcat()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := func(stdin []byte, extra ...string) []byte {
		cmd := exec.CommandContext(ctx, kcat, append(append([]string{"-b", addr}, args...), extra...)...)
		var out, errb bytes.Buffer
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errb
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Run(); err != nil {
			t.Fatalf("kcat %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, errb.String())
		}
		return out.Bytes()
	}
	run([]byte(strings.Join(lines, "\n")+"\n"), "-P", "-t", topic, "-X", "acks=all")
	out := run(nil, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%s\n")
	if got := strings.Split(strings.TrimSpace(string(out)), "\n"); !slices.Equal(got, lines) {
		t.Fatalf("kcat read %d records, want the %d produced in order; first: %q", len(got), len(lines), got[:min(5, len(got))])
	}
}

// TestClientSASLRealKafka: real clients authenticate to the proxy in front
// of a real broker (which the proxy reaches with SCRAM of its own).
func TestClientSASLRealKafka(t *testing.T) {
	k := startClientAuthKafka(t, nil)
	addr := k.proxy.Addr()

	for _, mech := range allMechanisms {
		t.Run("franz-go "+mech, func(t *testing.T) {
			saslRoundTrip(t, addr, "franz-"+strings.ToLower(mech), 100, kgo.SASL(clientMechanism(t, mech, appUser, appPassword)))
		})
	}
	t.Run("Java console SCRAM-SHA-512", func(t *testing.T) {
		k.createTopic(t, "java-scram")
		config := javaClientConfig(t, "SASL_PLAINTEXT", MechScramSHA512, appUser, appPassword, nil)
		javaProduceConsume(t, addr, "java-scram", config, numberedLines("java", 500))
	})
	t.Run("kcat SCRAM-SHA-256", func(t *testing.T) {
		k.createTopic(t, "kcat-scram")
		kcatProduceConsume(t, addr, "kcat-scram", numberedLines("kcat", 500),
			"-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-256",
			"-X", "sasl.username="+appUser, "-X", "sasl.password="+appPassword)
	})

	t.Run("franz-go wrong password", func(t *testing.T) {
		err := produceErr(t, addr, "denied-franz", kgo.SASL(clientMechanism(t, MechScramSHA512, appUser, "wrong")), kgo.AllowAutoTopicCreation())
		if !errors.Is(err, kerr.SaslAuthenticationFailed) || !strings.Contains(err.Error(), authFailedMessage) {
			t.Fatalf("err = %v, want SASL_AUTHENTICATION_FAILED %q", err, authFailedMessage)
		}
		k.assertNoTopic(t, "denied-franz")
	})
	// librdkafka's final SCRAM message takes its own path
	// (scram_librdkafka.go): a wrong password must fail there too.
	t.Run("kcat wrong password", func(t *testing.T) {
		kcat, err := kafkatest.Kcat()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, kcat, "-b", addr, "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=SCRAM-SHA-256",
			"-X", "sasl.username="+appUser, "-X", "sasl.password=wrong", "-P", "-t", "denied-kcat")
		cmd.Stdin = strings.NewReader("must-not-arrive\n")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), authFailedMessage) {
			t.Fatalf("kcat with a wrong password: err = %v, want a failure with %q:\n%s", err, authFailedMessage, out)
		}
		k.assertNoTopic(t, "denied-kcat")
	})
	t.Run("Java wrong password", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		config := javaClientConfig(t, "SASL_PLAINTEXT", MechScramSHA512, appUser, "wrong", map[string]string{"max.block.ms": "10000"})
		_, stderr, _ := kafkatest.ToolStdin(ctx, strings.NewReader("must-not-arrive\n"), kafkatest.MainConsoleProducer,
			"--bootstrap-server", addr, "--topic", "denied-java", "--producer.config", config)
		if !strings.Contains(stderr, "SaslAuthenticationException") || !strings.Contains(stderr, authFailedMessage) {
			t.Fatalf("console producer with a wrong password: stderr lacks SaslAuthenticationException %q:\n%s", authFailedMessage, stderr)
		}
		k.assertNoTopic(t, "denied-java")
	})
}

// TestClientSASLSSLRealKafka: TLS and SASL toward the proxy together
// (SASL_SSL) with librdkafka and the Java client, and client certificates
// (mTLS) with franz-go.
func TestClientSASLSSLRealKafka(t *testing.T) {
	ca := newTestCA(t, "kmigrate-clients-ca")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	serverCert := ca.issue(t, "proxy", true)

	t.Run("kcat SASL_SSL SCRAM-SHA-512", func(t *testing.T) {
		k := startClientAuthKafka(t, &tls.Config{Certificates: []tls.Certificate{serverCert}})
		k.createTopic(t, "kcat-sasl-ssl")
		kcatProduceConsume(t, k.proxy.Addr(), "kcat-sasl-ssl", numberedLines("ssl", 300),
			"-X", "security.protocol=SASL_SSL", "-X", "ssl.ca.location="+caFile, "-X", "sasl.mechanisms=SCRAM-SHA-512",
			"-X", "sasl.username="+appUser, "-X", "sasl.password="+appPassword)
	})
	t.Run("Java SASL_SSL SCRAM-SHA-256", func(t *testing.T) {
		k := startClientAuthKafka(t, &tls.Config{Certificates: []tls.Certificate{serverCert}})
		k.createTopic(t, "java-sasl-ssl")
		config := javaClientConfig(t, "SASL_SSL", MechScramSHA256, appUser, appPassword,
			map[string]string{"ssl.truststore.type": "PEM", "ssl.truststore.location": caFile})
		javaProduceConsume(t, k.proxy.Addr(), "java-sasl-ssl", config, numberedLines("java-ssl", 300))
	})
	t.Run("franz-go mTLS and SASL", func(t *testing.T) {
		k := startClientAuthKafka(t, &tls.Config{Certificates: []tls.Certificate{serverCert},
			ClientCAs: ca.pool, ClientAuth: tls.RequireAndVerifyClientCert})
		auth := kgo.SASL(clientMechanism(t, MechScramSHA256, appUser, appPassword))
		withCert := kgo.DialTLSConfig(&tls.Config{RootCAs: ca.pool, Certificates: []tls.Certificate{ca.issue(t, "app", false)}})
		saslRoundTrip(t, k.proxy.Addr(), "mtls-sasl", 100, withCert, auth)

		err := produceErr(t, k.proxy.Addr(), "denied-no-cert", kgo.DialTLSConfig(&tls.Config{RootCAs: ca.pool}), auth, kgo.AllowAutoTopicCreation())
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("without a client certificate: err = %v, want a TLS handshake failure", err)
		}
		k.assertNoTopic(t, "denied-no-cert")
	})
}

// TestClientSASLPassThroughRealKafka: with pass-through, a PLAIN client is
// checked by a broker that authorizes with ACLs, and its requests reach the
// broker as the client: a topic the client has no ACL for is refused,
// although the proxy's own principal (a super user) could write it.
func TestClientSASLPassThroughRealKafka(t *testing.T) {
	kafka := kafkatest.StartT(t, kafkatest.Options{Name: "acl", SASL: true, HeapMB: 384, BrokerConfig: map[string]string{
		"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		// The harness talks PLAINTEXT (ANONYMOUS) between broker and controller.
		"super.users": "User:admin;User:ANONYMOUS",
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	direct, err := kafka.SASLClient(kafkatest.MechScramSHA512, kafkatest.DefaultUser)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	admin := kadm.NewClient(direct)
	const user, password = "alice", "alice-pw"
	altered, err := admin.AlterUserSCRAMs(ctx, nil, []kadm.UpsertSCRAM{{User: user, Mechanism: kadm.ScramSha512, Iterations: 4096, Password: password}})
	if err == nil {
		err = altered.Error()
	}
	if err != nil {
		t.Fatalf("create SCRAM user %s on the broker: %v", user, err)
	}
	for _, topic := range []string{"pt-allowed", "pt-allowed-probe", "pt-denied"} {
		if resp, err := admin.CreateTopic(ctx, 1, 1, nil, topic); err != nil || resp.Err != nil {
			t.Fatalf("create %s: %v %v", topic, err, resp.Err)
		}
	}
	acls, err := admin.CreateACLs(ctx, kadm.NewACLs().Allow("User:"+user).Topics("pt-allowed").
		Operations(kadm.OpWrite, kadm.OpRead, kadm.OpDescribe).ResourcePatternType(kadm.ACLPatternPrefixed))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range acls {
		if a.Err != nil {
			t.Fatalf("create ACL: %v %s", a.Err, a.ErrMessage)
		}
	}

	upstreamMech, _ := kafkatest.SASLMechanism(kafkatest.MechScramSHA512, kafkatest.DefaultUser)
	p, err := Start(ctx, Config{
		Listen:     "127.0.0.1:0",
		Source:     Upstream{Name: "source", Bootstrap: []string{kafka.Addr(kafkatest.SASLPlaintext)}, SASL: upstreamMech},
		ClientSASL: &ClientSASL{Mechanisms: []string{MechPlain}, PassThrough: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	alice := kgo.SASL(clientMechanism(t, MechPlain, user, password))

	// ACLs may take a moment to reach the authorizer: probe another
	// topic the prefix covers.
	deadline := time.Now().Add(20 * time.Second)
	for produceErr(t, p.Addr(), "pt-allowed-probe", alice) != nil && time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	saslRoundTrip(t, p.Addr(), "pt-allowed", 100, alice)

	if err := produceErr(t, p.Addr(), "pt-denied", alice); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("alice producing to a topic without her ACL: err = %v, want TOPIC_AUTHORIZATION_FAILED (the broker must see alice, not the proxy)", err)
	}
	err = produceErr(t, p.Addr(), "pt-allowed", kgo.SASL(clientMechanism(t, MechPlain, user, "wrong")))
	if !errors.Is(err, kerr.SaslAuthenticationFailed) || !strings.Contains(err.Error(), authFailedMessage) {
		t.Fatalf("wrong password checked by the broker: err = %v, want SASL_AUTHENTICATION_FAILED %q", err, authFailedMessage)
	}
}
