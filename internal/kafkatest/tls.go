package kafkatest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// certs is a throw-away CA, a server certificate it signed, valid for
// 127.0.0.1, ::1 and localhost, and a client certificate for mTLS, all
// PEM-encoded.
type certs struct {
	caPEM    []byte // CA certificate
	certPEM  []byte // server certificate followed by the CA (the chain)
	keyPEM   []byte // server private key, unencrypted PKCS#8
	clientCA *x509.CertPool

	clientCertPEM []byte // client certificate, CN=ClientCertCN
	clientKeyPEM  []byte // its key, unencrypted PKCS#8
}

// ClientCertCN is the common name of the client certificate a cluster with
// Options.MTLS trusts; Kafka's principal for it is "User:CN=kmigrate-client".
const ClientCertCN = "kmigrate-client"

// newCerts generates the TLS material for one cluster. RSA rather than ECDSA
// because every JVM and TLS client understands it; generation takes well
// under a second.
func newCerts() (*certs, error) {
	now := time.Now()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "kmigrate kafkatest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create server certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal server key: %w", err)
	}

	clientCert, clientKey, err := leafCert(caCert, caKey, &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: ClientCertCN},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}

	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &certs{
		caPEM:         caPEM,
		certPEM:       append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), caPEM...),
		keyPEM:        pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
		clientCA:      pool,
		clientCertPEM: clientCert,
		clientKeyPEM:  clientKey,
	}, nil
}

// leafCert makes a key and a certificate from tmpl signed by the CA,
// both PEM-encoded.
func leafCert(ca *x509.Certificate, caKey *rsa.PrivateKey, tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}

// tlsConfig is a client configuration that trusts only the cluster's CA.
func (c *certs) tlsConfig() *tls.Config {
	// ServerName stays empty so that each dialer derives it from the
	// address it connects to (the certificate covers IPs and localhost).
	return &tls.Config{RootCAs: c.clientCA, MinVersion: tls.VersionTLS12}
}

// pemProperty renders PEM text as a single-line java.util.Properties value:
// Properties.load turns the "\n" escapes back into newlines, so Kafka's
// ssl.keystore.key / ssl.keystore.certificate.chain see normal PEM.
func pemProperty(b []byte) string {
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", `\n`)
}
