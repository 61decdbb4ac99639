package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/proxy"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

const testClientPassword = "client-pass-0451"

// writeClientCredentials writes a credentials file with one password user.
func writeClientCredentials(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clients.yaml")
	if err := os.WriteFile(path, []byte("users:\n  app:\n    password: "+testClientPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestClientAuthConfig: the client authentication settings come from a
// nested YAML file and the environment like every other, and their
// mistakes are caught before the proxy starts.
func TestClientAuthConfig(t *testing.T) {
	creds := writeClientCredentials(t)
	file := "client:\n  sasl:\n    mechanisms: [PLAIN, scram-sha-512]\n    credentials: " + creds + "\n"
	o, origins, _, err := loadTestConfig(t, file, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	tlsCfg, sasl, err := o.clientAuth(log)
	if err != nil {
		t.Fatal(err)
	}
	if tlsCfg != nil || sasl == nil || strings.Join(sasl.Mechanisms, ",") != "PLAIN,SCRAM-SHA-512" || sasl.Credentials == nil {
		t.Fatalf("clientAuth = %v, %+v", tlsCfg, sasl)
	}
	if !strings.HasSuffix(origins["client-sasl-credentials"], ":4") {
		t.Errorf("client-sasl-credentials comes from %q", origins["client-sasl-credentials"])
	}
	if strings.Contains(logs.String(), testClientPassword) {
		t.Errorf("the log shows a client password:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "passwords cross the network in clear") {
		t.Errorf("no warning for PLAIN without TLS:\n%s", logs.String())
	}

	env := map[string]string{"KMIGRATE_CLIENT_SASL_MECHANISMS": "SCRAM-SHA-256", "KMIGRATE_CLIENT_SASL_CREDENTIALS": creds}
	if o, _, _, err = loadTestConfig(t, "", env); err != nil {
		t.Fatal(err)
	}
	if _, sasl, err = o.clientAuth(log); err != nil || sasl == nil || sasl.Mechanisms[0] != proxy.MechScramSHA256 {
		t.Fatalf("from the environment: %+v, %v", sasl, err)
	}

	// Pass-through checks PLAIN at the source: no file needed.
	if o, _, _, err = loadTestConfig(t, "", nil, "--client-sasl-mechanisms", "PLAIN", "--client-sasl-passthrough"); err != nil {
		t.Fatal(err)
	}
	if _, sasl, err = o.clientAuth(log); err != nil || sasl == nil || !sasl.PassThrough || sasl.Credentials != nil {
		t.Fatalf("PLAIN passed through: %+v, %v", sasl, err)
	}

	for name, args := range map[string][]string{
		"mechanisms without credentials":  {"--client-sasl-mechanisms", "PLAIN"},
		"credentials without mechanisms":  {"--client-sasl-credentials", creds},
		"unknown mechanism":               {"--client-sasl-mechanisms", "GSSAPI", "--client-sasl-credentials", creds},
		"missing file":                    {"--client-sasl-mechanisms", "PLAIN", "--client-sasl-credentials", creds + ".missing"},
		"client CA without a certificate": {"--client-tls-ca", creds},
		"pass-through without PLAIN":      {"--client-sasl-mechanisms", "SCRAM-SHA-512", "--client-sasl-passthrough", "--client-sasl-credentials", creds},
		"pass-through and SCRAM, no file": {"--client-sasl-mechanisms", "PLAIN,SCRAM-SHA-512", "--client-sasl-passthrough"},
	} {
		o, _, _, err := loadTestConfig(t, "", nil, args...)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := o.clientAuth(log); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestConfigPrintClientAuth: --print-config shows where the credentials
// are, never what they hold.
func TestConfigPrintClientAuth(t *testing.T) {
	creds := writeClientCredentials(t)
	fs, _ := newProxyFlags()
	origins, _, err := loadConfig(fs, []string{"--client-sasl-mechanisms", "SCRAM-SHA-512", "--client-sasl-credentials", creds},
		func(string) (string, bool) { return "", false }, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := writeEffectiveConfig(&out, fs, origins); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), testClientPassword) {
		t.Fatalf("--print-config shows a client password:\n%s", out.String())
	}
	for _, want := range []string{"client-sasl-credentials: " + creds, "client-sasl-mechanisms: SCRAM-SHA-512"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--print-config lacks %q", want)
		}
	}
}

// TestSCRAMCredential: the hashes kmigrate scram-credential prints load as
// a credentials file and do not contain the password.
func TestSCRAMCredential(t *testing.T) {
	var out bytes.Buffer
	if err := runSCRAMCredential([]string{"--mechanism", "scram-sha-256", "--user", "app"}, strings.NewReader(testClientPassword+"\n"), &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), testClientPassword) || !strings.Contains(out.String(), "scram-sha-256: \"SCRAM-SHA-256$4096:") {
		t.Fatalf("output:\n%s", out.String())
	}
	if _, err := proxy.ParseCredentials(out.Bytes()); err != nil {
		t.Fatalf("the output does not load: %v\n%s", err, out.String())
	}
	if err := runSCRAMCredential(nil, strings.NewReader(""), &out); err == nil {
		t.Error("an empty password was accepted")
	}
}

// TestProxyClientSASL runs a node with client SASL from its flags: a client
// with the password produces, one without is refused, and /metrics counts
// both.
func TestProxyClientSASL(t *testing.T) {
	src, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	listen, admin := freePort(), freePort()
	ctx, cancel := context.WithCancel(context.Background())
	done, ready := make(chan error, 1), make(chan struct{})
	go func() {
		done <- serveProxy(ctx, []string{"--source-bootstrap", src.ListenAddrs()[0], "--listen", listen,
			"--admin-listen", admin, "--raft-addr", freePort(), "--data-dir", t.TempDir(), "--log-level", "error",
			"--client-sasl-mechanisms", "SCRAM-SHA-512", "--client-sasl-credentials", writeClientCredentials(t)},
			func() { close(ready) })
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("node: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("node did not start within 60 s")
	}
	t.Cleanup(func() { cancel(); <-done })

	produce := func(password string) error {
		cl, err := kgo.NewClient(kgo.SeedBrokers(listen), kgo.DefaultProduceTopic("orders"), kgo.RequestRetries(0), kgo.RecordRetries(0),
			kgo.SASL(scram.Auth{User: "app", Pass: password}.AsSha512Mechanism()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		pctx, pcancel := context.WithTimeout(ctx, 15*time.Second)
		defer pcancel()
		return cl.ProduceSync(pctx, &kgo.Record{Value: []byte("order")}).FirstErr()
	}
	if err := produce(testClientPassword); err != nil {
		t.Fatalf("produce with the right password: %v", err)
	}
	if err := produce("wrong"); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("produce with a wrong password: err = %v, want SASL_AUTHENTICATION_FAILED", err)
	}
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	// franz-go authenticates each of its connections (metadata, produce).
	for series, value := range map[string]string{
		`kmigrate_client_auth_total{mechanism="SCRAM-SHA-512",result="success"}`: `[1-9][0-9]*`,
		`kmigrate_client_auth_total{mechanism="SCRAM-SHA-512",result="failure"}`: `1`,
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ` + value + `$`).Match(body) {
			t.Errorf("/metrics: want %s %s, got:\n%s", series, value, grepLines(string(body), "kmigrate_client_auth_total"))
		}
	}
}

func grepLines(text, word string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
