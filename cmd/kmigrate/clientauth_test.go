package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmigrate/kmigrate/proxy"
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

	for name, args := range map[string][]string{
		"mechanisms without credentials":  {"--client-sasl-mechanisms", "PLAIN"},
		"credentials without mechanisms":  {"--client-sasl-credentials", creds},
		"unknown mechanism":               {"--client-sasl-mechanisms", "GSSAPI", "--client-sasl-credentials", creds},
		"missing file":                    {"--client-sasl-mechanisms", "PLAIN", "--client-sasl-credentials", creds + ".missing"},
		"client CA without a certificate": {"--client-tls-ca", creds},
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
