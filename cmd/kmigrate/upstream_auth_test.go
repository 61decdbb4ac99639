package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// buildSource loads args (and env) like "kmigrate proxy" and builds the
// source upstream.
func buildSource(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	o, _, _, err := loadTestConfig(t, "", env, append([]string{"--source-bootstrap", "b-1.example:9096"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	up, err := o.source.build("source")
	if err != nil {
		return "", err
	}
	if up.SASL == nil {
		return "", nil
	}
	return up.SASL.Name(), nil
}

func TestUpstreamAuthFlags(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("a.b.\n"), 0o600)

	// AWS credentials from the environment only.
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")

	for _, c := range []struct {
		args    []string
		env     map[string]string
		mech    string // "" with wantErr
		wantErr string
	}{
		{args: []string{"--source-sasl-mechanism", "OAUTHBEARER", "--source-oauth-token-file", tokenFile}, mech: "OAUTHBEARER"},
		{args: []string{"--source-sasl-mechanism", "oauthbearer", "--source-oauth-token-endpoint", "https://idp.example/token", "--source-oauth-client-id", "kmigrate", "--source-oauth-scope", "kafka,read", "--source-oauth-extensions", "logicalCluster=lkc-1"},
			env: map[string]string{"KMIGRATE_SOURCE_OAUTH_CLIENT_SECRET": "s"}, mech: "OAUTHBEARER"},
		{args: []string{"--source-sasl-mechanism", "AWS_MSK_IAM", "--source-aws-region", "eu-west-1"}, mech: "AWS_MSK_IAM"},
		{args: []string{"--source-sasl-mechanism", "SCRAM-SHA-512", "--source-sasl-username", "u", "--source-sasl-password", "p"}, mech: "SCRAM-SHA-512"},
		{args: []string{"--source-sasl-mechanism", "OAUTHBEARER"}, wantErr: "needs --source-oauth-token-file or --source-oauth-token-endpoint"},
		{args: []string{"--source-sasl-mechanism", "OAUTHBEARER", "--source-oauth-token-file", tokenFile, "--source-oauth-token-endpoint", "https://idp.example/token"}, wantErr: "not both"},
		{args: []string{"--source-sasl-mechanism", "OAUTHBEARER", "--source-oauth-token-endpoint", "https://idp.example/token"}, wantErr: "--source-oauth-client-id is required"},
		{args: []string{"--source-sasl-mechanism", "OAUTHBEARER", "--source-oauth-token-file", filepath.Join(dir, "absent")}, wantErr: "token file"},
		{args: []string{"--source-sasl-mechanism", "OAUTHBEARER", "--source-oauth-token-file", tokenFile, "--source-oauth-extensions", "auth=x"}, wantErr: "reserved"},
		{args: []string{"--source-sasl-mechanism", "SCRAM-SHA-512", "--source-oauth-token-file", tokenFile}, wantErr: "need --source-sasl-mechanism OAUTHBEARER or AWS_MSK_IAM"},
		{args: []string{"--source-sasl-mechanism", "AWS_MSK_IAM", "--source-oauth-token-file", tokenFile}, wantErr: "for OAUTHBEARER, not AWS_MSK_IAM"},
		{args: []string{"--source-sasl-mechanism", "GSSAPI"}, wantErr: "OAUTHBEARER or AWS_MSK_IAM"},
	} {
		mech, err := buildSource(t, c.env, c.args...)
		switch {
		case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
			t.Errorf("%v: err = %v, want %q", c.args, err, c.wantErr)
		case c.wantErr == "" && (err != nil || mech != c.mech):
			t.Errorf("%v: mechanism %q, err %v; want %s", c.args, mech, err, c.mech)
		}
	}
}

// TestUpstreamAuthPrintConfig: the client secret is masked, the places of
// secrets (a file, an endpoint) are not.
func TestUpstreamAuthPrintConfig(t *testing.T) {
	fs, _ := newProxyFlags()
	env := map[string]string{"KMIGRATE_TARGET_OAUTH_CLIENT_SECRET": "env-client-secret"}
	origins, _, err := loadConfig(fs, []string{"--source-oauth-client-secret", "flag-client-secret",
		"--source-oauth-token-endpoint", "https://idp.example/token", "--target-oauth-token-file", "/var/run/token"},
		func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := writeEffectiveConfig(&out, fs, origins); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, secret := range []string{"flag-client-secret", "env-client-secret"} {
		if strings.Contains(text, secret) {
			t.Errorf("print-config shows %q:\n%s", secret, text)
		}
	}
	for _, want := range []string{"source-oauth-client-secret: '***'", "target-oauth-client-secret: '***'", "source-oauth-token-endpoint: https://idp.example/token", "target-oauth-token-file: /var/run/token"} {
		if !strings.Contains(text, want) {
			t.Errorf("print-config lacks %q:\n%s", want, text)
		}
	}
}
