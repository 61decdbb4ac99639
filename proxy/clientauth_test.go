package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	kscram "github.com/twmb/franz-go/pkg/sasl/scram"
)

var allMechanisms = []string{MechPlain, MechScramSHA256, MechScramSHA512}

// testCredentials writes a credentials file: alice has a password, bob only
// SCRAM-SHA-512 hashes (derived here from "bob-secret").
func testCredentials(t *testing.T) (*Credentials, string) {
	t.Helper()
	hash, err := FormatStoredCredentials(MechScramSHA512, "bob", "bob-secret")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "clients.yaml")
	data := fmt.Sprintf("users:\n  alice:\n    password: alice-secret\n  bob:\n    scram-sha-512: %q\n", hash)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := LoadCredentials(path)
	if err != nil {
		t.Fatal(err)
	}
	return creds, path
}

func clientMechanism(t *testing.T, mech, user, pass string) sasl.Mechanism {
	t.Helper()
	switch mech {
	case MechPlain:
		return plain.Auth{User: user, Pass: pass}.AsMechanism()
	case MechScramSHA256:
		return kscram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case MechScramSHA512:
		return kscram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	}
	t.Fatalf("no client mechanism %q", mech)
	return nil
}

// authProxy is a proxy that authenticates clients in front of a one-broker
// kfake cluster that counts the Produce requests it receives.
type authProxy struct {
	*Proxy
	fake     *kfake.Cluster
	produces atomic.Int64
	reg      *prometheus.Registry
}

func startAuthProxy(t *testing.T, cfg Config) *authProxy {
	t.Helper()
	fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Close)
	ap := &authProxy{fake: fake, reg: prometheus.NewRegistry()}
	fake.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		fake.KeepControl()
		ap.produces.Add(1)
		return nil, nil, false
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Listen, cfg.Source, cfg.Metrics = "127.0.0.1:0", Upstream{Bootstrap: fake.ListenAddrs()}, NewMetrics(ap.reg)
	if ap.Proxy, err = Start(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ap.Close() })
	return ap
}

// authCount reads kmigrate_client_auth_total{mechanism, result}.
func (ap *authProxy) authCount(t *testing.T, mechanism, result string) float64 {
	t.Helper()
	families, err := ap.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "kmigrate_client_auth_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["mechanism"] == mechanism && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// saslRoundTrip produces n records through addr with opts and reads them
// back in order.
func saslRoundTrip(t *testing.T, addr, topic string, n int, opts ...kgo.Opt) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opts = append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.ConsumeTopics(topic),
		kgo.AllowAutoTopicCreation(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := 0; i < n; i++ {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("%s-%d", topic, i))}).FirstErr(); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d", got, n)
		}
		for _, e := range fs.Errors() {
			t.Fatalf("fetch: %v", e.Err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if want := fmt.Sprintf("%s-%d", topic, got); string(r.Value) != want {
				t.Fatalf("record %d is %q, want %q", got, r.Value, want)
			}
			got++
		})
	}
}

// produceErr is the error of one produce with opts through addr.
func produceErr(t *testing.T, addr, topic string, opts ...kgo.Opt) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.RecordRetries(0), kgo.RequestRetries(0)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	return cl.ProduceSync(ctx, &kgo.Record{Value: []byte("must not arrive")}).FirstErr()
}

func TestClientSASL(t *testing.T) {
	creds, _ := testCredentials(t)
	ap := startAuthProxy(t, Config{ClientSASL: &ClientSASL{Mechanisms: allMechanisms, Credentials: creds}})
	for _, mech := range allMechanisms {
		t.Run(mech, func(t *testing.T) {
			saslRoundTrip(t, ap.Addr(), "alice-"+strings.ToLower(mech), 20, kgo.SASL(clientMechanism(t, mech, "alice", "alice-secret")))
			if got := ap.authCount(t, mech, "success"); got < 1 {
				t.Errorf("kmigrate_client_auth_total{mechanism=%s,result=success} = %v, want ≥ 1", mech, got)
			}
		})
	}
	// bob has only SCRAM-SHA-512 hashes: PLAIN is checked against them.
	for _, mech := range []string{MechScramSHA512, MechPlain} {
		t.Run("hashed user "+mech, func(t *testing.T) {
			saslRoundTrip(t, ap.Addr(), "bob-"+strings.ToLower(mech), 5, kgo.SASL(clientMechanism(t, mech, "bob", "bob-secret")))
		})
	}

	before := ap.produces.Load()
	refused := []struct{ name, mech, user, pass string }{
		{"wrong password PLAIN", MechPlain, "alice", "wrong"},
		{"wrong password SCRAM-SHA-256", MechScramSHA256, "alice", "wrong"},
		{"wrong password SCRAM-SHA-512", MechScramSHA512, "alice", "wrong"},
		{"unknown user SCRAM-SHA-512", MechScramSHA512, "mallory", "alice-secret"},
		{"unknown user PLAIN", MechPlain, "mallory", "alice-secret"},
		{"hashed user without SCRAM-SHA-256 hashes", MechScramSHA256, "bob", "bob-secret"},
		{"hashed user wrong PLAIN password", MechPlain, "bob", "wrong"},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			failures := ap.authCount(t, c.mech, "failure")
			err := produceErr(t, ap.Addr(), "t", kgo.SASL(clientMechanism(t, c.mech, c.user, c.pass)))
			if !errors.Is(err, kerr.SaslAuthenticationFailed) || !strings.Contains(err.Error(), authFailedMessage) {
				t.Fatalf("produce with %s: err = %v, want SASL_AUTHENTICATION_FAILED %q", c.name, err, authFailedMessage)
			}
			if got := ap.authCount(t, c.mech, "failure"); got <= failures {
				t.Errorf("kmigrate_client_auth_total{mechanism=%s,result=failure} stayed %v", c.mech, got)
			}
		})
	}
	t.Run("no SASL", func(t *testing.T) {
		// franz-go recognises a connection closed right after its first
		// request as a broker requiring SASL.
		if err := produceErr(t, ap.Addr(), "t"); err == nil || !strings.Contains(err.Error(), "SASL") {
			t.Fatalf("a client without SASL: err = %v, want the connection closed (\"is SASL missing?\")", err)
		}
	})
	if got := ap.produces.Load(); got != before {
		t.Fatalf("the upstream received %d Produce requests from refused clients", got-before)
	}
}

// TestClientSASLOff: without client SASL a client that tries it gets a
// clear refusal, as before.
func TestClientSASLOff(t *testing.T) {
	ap := startAuthProxy(t, Config{})
	err := produceErr(t, ap.Addr(), "t", kgo.SASL(clientMechanism(t, MechPlain, "alice", "alice-secret")))
	if !errors.Is(err, kerr.UnsupportedSaslMechanism) {
		t.Fatalf("SASL client of a proxy without client SASL: err = %v, want UNSUPPORTED_SASL_MECHANISM", err)
	}
	saslRoundTrip(t, ap.Addr(), "no-sasl", 3)
}

// rawConn speaks the Kafka protocol by hand, to drive the state machine
// where real clients never go.
type rawConn struct {
	t    *testing.T
	conn net.Conn
	corr int32
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{t: t, conn: conn}
}

// call sends req and decodes the answer into resp.
func (r *rawConn) call(req kmsg.Request, resp kmsg.Response) {
	r.t.Helper()
	r.send(req)
	resp.SetVersion(req.GetVersion())
	if err := r.recv(resp); err != nil {
		r.t.Fatalf("%s: %v", kmsg.NameForKey(req.Key()), err)
	}
}

func (r *rawConn) send(req kmsg.Request) {
	r.t.Helper()
	r.corr++
	frame := kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw")).AppendRequest(nil, req, r.corr)
	if _, err := r.conn.Write(frame); err != nil {
		r.t.Fatalf("write %s: %v", kmsg.NameForKey(req.Key()), err)
	}
}

func (r *rawConn) recv(resp kmsg.Response) error {
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var size [4]byte
	if _, err := io.ReadFull(r.conn, size[:]); err != nil {
		return err
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(r.conn, body); err != nil {
		return err
	}
	if got := int32(binary.BigEndian.Uint32(body)); got != r.corr {
		return fmt.Errorf("correlation id %d, want %d", got, r.corr)
	}
	body = body[4:]
	if resp.IsFlexible() && resp.Key() != apiVersionsKey {
		body = body[1:] // empty header tags
	}
	return resp.ReadFrom(body)
}

// closedByPeer reports whether the proxy closed the connection (and sent
// nothing more).
func (r *rawConn) closedByPeer() bool {
	r.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := r.conn.Read(make([]byte, 1))
	return n == 0 && errors.Is(err, io.EOF)
}

func handshake(v int16, mech string) *kmsg.SASLHandshakeRequest {
	req := kmsg.NewPtrSASLHandshakeRequest()
	req.Version, req.Mechanism = v, mech
	return req
}

func authenticate(v int16, auth string) *kmsg.SASLAuthenticateRequest {
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.Version, req.SASLAuthBytes = v, []byte(auth)
	return req
}

func produceRequest() *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, -1, 1000
	topic := kmsg.NewProduceRequestTopic()
	topic.Topic = "t"
	topic.Partitions = []kmsg.ProduceRequestTopicPartition{kmsg.NewProduceRequestTopicPartition()}
	req.Topics = []kmsg.ProduceRequestTopic{topic}
	return req
}

func TestClientSASLStateMachine(t *testing.T) {
	creds, _ := testCredentials(t)
	ap := startAuthProxy(t, Config{ClientSASL: &ClientSASL{Mechanisms: []string{MechPlain, MechScramSHA512}, Credentials: creds}})

	t.Run("ApiVersions before authentication lists the proxy's SASL versions", func(t *testing.T) {
		c := dialRaw(t, ap.Addr())
		req := kmsg.NewPtrApiVersionsRequest()
		req.Version = 3
		resp := kmsg.NewPtrApiVersionsResponse()
		c.call(req, resp)
		got := map[int16][2]int16{}
		for _, k := range resp.ApiKeys {
			got[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
		}
		// librdkafka needs SaslHandshake v0 listed to enable SASL.
		if got[17] != [2]int16{0, 1} || got[36] != [2]int16{0, 2} {
			t.Fatalf("SaslHandshake %v, SaslAuthenticate %v; want [0 1] and [0 2]", got[17], got[36])
		}
	})
	t.Run("a request before the handshake closes the connection", func(t *testing.T) {
		c := dialRaw(t, ap.Addr())
		c.send(produceRequest())
		if !c.closedByPeer() {
			t.Fatal("Produce before authentication: connection still open")
		}
	})
	t.Run("a request between handshake and authentication closes the connection", func(t *testing.T) {
		c := dialRaw(t, ap.Addr())
		c.call(handshake(1, MechPlain), kmsg.NewPtrSASLHandshakeResponse())
		c.send(produceRequest())
		if !c.closedByPeer() {
			t.Fatal("Produce after SaslHandshake, before SaslAuthenticate: connection still open")
		}
	})
	t.Run("a mechanism not offered", func(t *testing.T) {
		c := dialRaw(t, ap.Addr())
		resp := kmsg.NewPtrSASLHandshakeResponse()
		c.call(handshake(1, "GSSAPI"), resp)
		if resp.ErrorCode != kerr.UnsupportedSaslMechanism.Code || strings.Join(resp.SupportedMechanisms, ",") != "PLAIN,SCRAM-SHA-512" {
			t.Fatalf("GSSAPI: error %v, mechanisms %v", kerr.ErrorForCode(resp.ErrorCode), resp.SupportedMechanisms)
		}
		if !c.closedByPeer() {
			t.Fatal("connection open after an unsupported mechanism")
		}
	})
	t.Run("SaslHandshake v0", func(t *testing.T) {
		c := dialRaw(t, ap.Addr())
		resp := kmsg.NewPtrSASLHandshakeResponse()
		c.call(handshake(0, MechPlain), resp)
		if resp.ErrorCode != kerr.UnsupportedVersion.Code {
			t.Fatalf("v0 handshake: error %v, want UNSUPPORTED_VERSION", kerr.ErrorForCode(resp.ErrorCode))
		}
		if !c.closedByPeer() {
			t.Fatal("connection open after a v0 handshake")
		}
	})
	t.Run("SaslAuthenticate without a handshake", func(t *testing.T) {
		c := dialRaw(t, ap.Addr())
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		c.call(authenticate(2, "\x00alice\x00alice-secret"), resp)
		if resp.ErrorCode != kerr.IllegalSaslState.Code {
			t.Fatalf("error %v, want ILLEGAL_SASL_STATE", kerr.ErrorForCode(resp.ErrorCode))
		}
		if !c.closedByPeer() {
			t.Fatal("connection open")
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		c := dialRaw(t, ap.Addr())
		c.call(handshake(1, MechPlain), kmsg.NewPtrSASLHandshakeResponse())
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		c.call(authenticate(1, "\x00alice\x00nope"), resp)
		if resp.ErrorCode != kerr.SaslAuthenticationFailed.Code || resp.ErrorMessage == nil || *resp.ErrorMessage != authFailedMessage {
			t.Fatalf("wrong password: error %v %v", kerr.ErrorForCode(resp.ErrorCode), resp.ErrorMessage)
		}
		if !c.closedByPeer() {
			t.Fatal("connection open after a failed authentication")
		}
	})
	t.Run("authorization id of another user", func(t *testing.T) {
		c := dialRaw(t, ap.Addr())
		c.call(handshake(1, MechPlain), kmsg.NewPtrSASLHandshakeResponse())
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		c.call(authenticate(0, "bob\x00alice\x00alice-secret"), resp)
		if resp.ErrorCode != kerr.SaslAuthenticationFailed.Code {
			t.Fatalf("authzid bob as alice: error %v", kerr.ErrorForCode(resp.ErrorCode))
		}
	})
	t.Run("authenticated", func(t *testing.T) {
		c := dialRaw(t, ap.Addr())
		c.call(handshake(1, MechPlain), kmsg.NewPtrSASLHandshakeResponse())
		resp := kmsg.NewPtrSASLAuthenticateResponse()
		c.call(authenticate(2, "alice\x00alice\x00alice-secret"), resp)
		if resp.ErrorCode != 0 || resp.SessionLifetimeMillis != 0 {
			t.Fatalf("authenticate: error %v, session lifetime %d", kerr.ErrorForCode(resp.ErrorCode), resp.SessionLifetimeMillis)
		}
		// Again: re-authentication is not offered, the connection stays.
		c.call(authenticate(2, "\x00alice\x00alice-secret"), resp)
		if resp.ErrorCode != kerr.IllegalSaslState.Code {
			t.Fatalf("second SaslAuthenticate: error %v, want ILLEGAL_SASL_STATE", kerr.ErrorForCode(resp.ErrorCode))
		}
		md := kmsg.NewPtrMetadataResponse()
		c.call(&kmsg.MetadataRequest{Version: 9}, md)
		if len(md.Brokers) != 1 {
			t.Fatalf("Metadata after authentication: %d brokers", len(md.Brokers))
		}
	})
	if n := ap.produces.Load(); n != 0 {
		t.Fatalf("the upstream received %d Produce requests from unauthenticated connections", n)
	}
	if got := ap.authCount(t, "none", "failure"); got != 3 {
		t.Errorf("kmigrate_client_auth_total{mechanism=none,result=failure} = %v, want 3 (a request before the handshake, SaslHandshake v0, SaslAuthenticate first)", got)
	}
}

// TestParseCredentials: the file's mistakes are named, never its secrets.
func TestParseCredentials(t *testing.T) {
	good, err := FormatStoredCredentials(MechScramSHA256, "u", "hunter2")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"empty":               "",
		"no users":            "users: {}\n",
		"unknown field":       "users:\n  u:\n    pasword: hunter2\n",
		"neither":             "users:\n  u: {}\n",
		"both":                "users:\n  u:\n    password: hunter2\n    scram-sha-256: \"" + good + "\"\n",
		"wrong mechanism":     "users:\n  u:\n    scram-sha-512: \"" + good + "\"\n",
		"few iterations":      "users:\n  u:\n    scram-sha-256: \"SCRAM-SHA-256$10:c2FsdA==$AAAA:AAAA\"\n",
		"short keys":          "users:\n  u:\n    scram-sha-256: \"SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA\"\n",
		"not a hash":          "users:\n  u:\n    scram-sha-256: hunter2\n",
		"not base64":          "users:\n  u:\n    scram-sha-256: \"SCRAM-SHA-256$4096:!!$hunter2:hunter2\"\n",
		"list instead of map": "users:\n  - hunter2\n",
	}
	for name, data := range cases {
		_, err := ParseCredentials([]byte(data))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("%s: the error quotes the secret: %v", name, err)
		}
	}
	c, err := ParseCredentials([]byte("users:\n  u:\n    scram-sha-256: \"" + good + "\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.checkPlain("u", "hunter2") || c.checkPlain("u", "hunter3") || c.checkPlain("v", "hunter2") {
		t.Fatal("PLAIN against SCRAM-SHA-256 hashes: wrong verdicts")
	}
}

// TestClientSASLPassThroughConfig: pass-through needs PLAIN and a source
// the proxy logs in to with SASL (TestClientSASLPassThroughRealKafka runs it).
func TestClientSASLPassThroughConfig(t *testing.T) {
	fake, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	creds, _ := testCredentials(t)
	for name, cs := range map[string]*ClientSASL{
		"without SASL toward the source":    {Mechanisms: []string{MechPlain}, PassThrough: true},
		"without PLAIN":                     {Mechanisms: []string{MechScramSHA512}, PassThrough: true, Credentials: creds},
		"SCRAM offered without credentials": {Mechanisms: []string{MechPlain, MechScramSHA256}, PassThrough: true},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		p, err := Start(ctx, Config{Listen: "127.0.0.1:0", Source: Upstream{Bootstrap: fake.ListenAddrs()}, ClientSASL: cs})
		cancel()
		if err == nil {
			p.Close()
			t.Errorf("%s: started", name)
		}
	}
}
