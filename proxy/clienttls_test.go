package proxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// selfSigned returns a server certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kmigrate-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestClientTLS(t *testing.T) {
	fake, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	cert, pool := selfSigned(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := Start(ctx, Config{Listen: "127.0.0.1:0", Source: Upstream{Bootstrap: fake.ListenAddrs()},
		ClientTLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.DefaultProduceTopic("t"),
		kgo.DialTLSConfig(&tls.Config{RootCAs: pool}), kgo.RequestRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("over tls")}).FirstErr(); err != nil {
		t.Fatalf("produce over client TLS: %v", err)
	}

	// A plaintext client must not get through a TLS listener.
	plain, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()), kgo.DefaultProduceTopic("t"), kgo.RecordRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
	defer pcancel()
	if err := plain.ProduceSync(pctx, &kgo.Record{Value: []byte("plaintext")}).FirstErr(); err == nil {
		t.Fatal("plaintext client produced through a TLS listener")
	}
}

// testCA issues certificates for the mTLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue signs a leaf certificate: a server's for 127.0.0.1, or a client's.
func (ca *testCA) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestClientMTLS: with client certificates required, a client with a
// certificate of the configured CA gets through; without one, or with one
// of another CA, the handshake fails and nothing goes upstream.
func TestClientMTLS(t *testing.T) {
	ca := newTestCA(t, "kmigrate-test-ca")
	ap := startAuthProxy(t, Config{ClientTLS: &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "proxy", true)},
		ClientCAs:    ca.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}})
	clientTLS := func(certs ...tls.Certificate) kgo.Opt {
		return kgo.DialTLSConfig(&tls.Config{RootCAs: ca.pool, Certificates: certs})
	}
	saslRoundTrip(t, ap.Addr(), "mtls", 20, clientTLS(ca.issue(t, "app", false)))
	if got := ap.authCount(t, "TLS", "success"); got < 1 {
		t.Errorf("kmigrate_client_auth_total{mechanism=TLS,result=success} = %v, want ≥ 1", got)
	}

	before := ap.produces.Load()
	intruder := newTestCA(t, "another-ca").issue(t, "intruder", false)
	for name, opt := range map[string]kgo.Opt{
		"no client certificate": clientTLS(),
		// GetClientCertificate sends it anyway: Go's client would skip a
		// certificate the server's list of authorities does not name.
		"a certificate of another authority": kgo.DialTLSConfig(&tls.Config{RootCAs: ca.pool,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &intruder, nil }}),
	} {
		t.Run(name, func(t *testing.T) {
			failures := ap.authCount(t, "TLS", "failure")
			if err := produceErr(t, ap.Addr(), "mtls", opt); err == nil {
				t.Fatal("produced without a valid client certificate")
			}
			// In TLS 1.3 the client's side of the handshake ends before
			// the proxy has checked its certificate: the client can see
			// the refusal before the proxy counted it.
			deadline := time.Now().Add(5 * time.Second)
			got := ap.authCount(t, "TLS", "failure")
			for got <= failures && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				got = ap.authCount(t, "TLS", "failure")
			}
			if got <= failures {
				t.Errorf("kmigrate_client_auth_total{mechanism=TLS,result=failure} stayed %v for 5s", got)
			}
		})
	}
	if got := ap.produces.Load(); got != before {
		t.Fatalf("the upstream received %d Produce requests from clients without a valid certificate", got-before)
	}
}
