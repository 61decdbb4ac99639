package main

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// loadTestConfig loads the proxy's settings from args, env and (if not
// empty) a config file with the given YAML, never from the real environment.
func loadTestConfig(t *testing.T, fileYAML string, env map[string]string, args ...string) (*proxyOptions, configOrigins, []string, error) {
	t.Helper()
	if fileYAML != "" {
		path := filepath.Join(t.TempDir(), "kmigrate.yaml")
		if err := os.WriteFile(path, []byte(fileYAML), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append([]string{"--config", path}, args...)
	}
	var environ []string
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	fs, o := newProxyFlags()
	origins, warnings, err := loadConfig(fs, args, lookup, environ)
	return o, origins, warnings, err
}

func TestConfigPrecedence(t *testing.T) {
	file := `
listen: 0.0.0.0:19092
node-id: 1
log-level: warn
produce-mode: sync
`
	env := map[string]string{
		"KMIGRATE_NODE_ID":   "2",
		"KMIGRATE_LOG_LEVEL": "error",
	}
	o, origins, _, err := loadTestConfig(t, file, env, "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, got, want, from string }{
		{"log-level", o.logLevel, "debug", "flag"},                       // flag > env > file
		{"node-id", strconv.Itoa(o.nodeID), "2", "env KMIGRATE_NODE_ID"}, // env > file
		{"listen", o.listen, "0.0.0.0:19092", ":2"},                      // file > default
		{"produce-mode", o.produceMode, "sync", ":5"},
		{"admin-listen", o.adminListen, "127.0.0.1:9644", ""}, // default
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
		if from := origins[c.name]; (c.from == "" && from != "") || !strings.HasSuffix(from, c.from) {
			t.Errorf("%s comes from %q, want …%q", c.name, from, c.from)
		}
	}
}

func TestConfigEnv(t *testing.T) {
	// The names are derived from the flags, and match the variables the
	// README has documented since before the config file existed.
	for flagName, want := range map[string]string{
		"source-bootstrap":     "KMIGRATE_SOURCE_BOOTSTRAP",
		"admin-token":          "KMIGRATE_ADMIN_TOKEN",
		"source-sasl-password": "KMIGRATE_SOURCE_SASL_PASSWORD",
		"target-sasl-password": "KMIGRATE_TARGET_SASL_PASSWORD",
		"config":               "KMIGRATE_CONFIG",
	} {
		if got := envName(flagName); got != want {
			t.Errorf("envName(%q) = %s, want %s", flagName, got, want)
		}
	}
	o, _, warnings, err := loadTestConfig(t, "", map[string]string{
		"KMIGRATE_SOURCE_BOOTSTRAP":  "src:9092",
		"KMIGRATE_RAFT_VOTER":        "true",
		"KMIGRATE_CACHE":             "/tmp/not-a-setting", // other tools' variables are left alone
		"KMIGRATE_SOURCE_BOOTSTRAPS": "typo:9092",
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.source.bootstrap != "src:9092" || !o.cp.voter {
		t.Errorf("source-bootstrap %q, raft-voter %v: the environment was not applied", o.source.bootstrap, o.cp.voter)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "KMIGRATE_SOURCE_BOOTSTRAPS") || !strings.Contains(warnings[0], "KMIGRATE_SOURCE_BOOTSTRAP?") {
		t.Errorf("warnings %q, want one about the misspelt KMIGRATE_SOURCE_BOOTSTRAPS", warnings)
	}

	// KMIGRATE_CONFIG names the file like --config.
	path := filepath.Join(t.TempDir(), "k.yaml")
	if err := os.WriteFile(path, []byte("listen: 0.0.0.0:1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o, _, _, err = loadTestConfig(t, "", map[string]string{"KMIGRATE_CONFIG": path})
	if err != nil || o.listen != "0.0.0.0:1" {
		t.Errorf("KMIGRATE_CONFIG: listen %q, err %v", o.listen, err)
	}
}

func TestConfigFileShapes(t *testing.T) {
	// Nested keys join with "-"; lists become comma-separated values.
	o, _, _, err := loadTestConfig(t, `
source:
  bootstrap: [a:9092, b:9092]
  tls: true
target-bootstrap: t:9092
topics: orders.*
`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.source.bootstrap != "a:9092,b:9092" || !o.source.tls || o.mirror.target.bootstrap != "t:9092" || o.mirror.topics != "orders.*" {
		t.Errorf("got source %q tls %v, target %q, topics %q", o.source.bootstrap, o.source.tls, o.mirror.target.bootstrap, o.mirror.topics)
	}
	if _, _, _, err := loadTestConfig(t, "- just\n- a list\n", nil); err == nil || !strings.Contains(err.Error(), "expected a mapping") {
		t.Errorf("a list as the whole file: %v", err)
	}
	if _, _, _, err := loadTestConfig(t, "listen: a\nlisten: b\n", nil); err == nil || !strings.Contains(err.Error(), "already set at line 1") {
		t.Errorf("a key set twice: %v", err)
	}
}

func TestConfigUnknownKey(t *testing.T) {
	_, _, _, err := loadTestConfig(t, "source-bootstrap: a:9092\nsource-bootstarp: b:9092\nprint-config: true\n", nil)
	if err == nil {
		t.Fatal("unknown key accepted")
	}
	for _, want := range []string{
		`line 2: unknown key "source-bootstarp" (did you mean "source-bootstrap"?)`,
		`line 3: "print-config" can only be given on the command line`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	_, _, _, err = loadTestConfig(t, "zzzzzzzzzzzzzzzz: 1\n", nil)
	if err == nil || !strings.Contains(err.Error(), "kmigrate proxy -h") {
		t.Errorf("a key like no other: %v, want a pointer to the list of keys", err)
	}
}

func TestConfigBadValue(t *testing.T) {
	_, _, _, err := loadTestConfig(t, "max-frame-bytes: lots\nraft-voter: maybe\n", map[string]string{"KMIGRATE_NODE_ID": "one"})
	if err == nil {
		t.Fatal("bad values accepted")
	}
	for _, want := range []string{
		`line 1: max-frame-bytes: "lots" is not valid, expected an integer`,
		`line 2: raft-voter: "maybe" is not valid, expected true or false`,
		`environment KMIGRATE_NODE_ID: node-id: "one" is not valid, expected an integer`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// A bad value the command line overrides is never looked at: the
	// command line is how an operator fixes a shared file for one node.
	if _, _, _, err := loadTestConfig(t, "node-id: one\n", nil, "--node-id", "2"); err != nil {
		t.Errorf("bad file value under a flag: %v", err)
	}
}

func TestConfigPrintMasksSecrets(t *testing.T) {
	const fromFlag, fromEnv, fromFile = "flag-secret-1", "env-secret-2", "file-secret-3"
	fs, _ := newProxyFlags()
	path := filepath.Join(t.TempDir(), "kmigrate.yaml")
	if err := os.WriteFile(path, []byte("target-sasl-password: "+fromFile+"\ntarget-sasl-username: alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KMIGRATE_SOURCE_SASL_PASSWORD": fromEnv}
	origins, _, err := loadConfig(fs, []string{"--config", path, "--admin-token", fromFlag, "--source-bootstrap", "src:9092"},
		func(k string) (string, bool) { v, ok := env[k]; return v, ok }, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := writeEffectiveConfig(&out, fs, origins); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, secret := range []string{fromFlag, fromEnv, fromFile} {
		if strings.Contains(text, secret) {
			t.Errorf("the output shows the secret %q:\n%s", secret, text)
		}
	}
	var printed map[string]any
	if err := yaml.Unmarshal(out.Bytes(), &printed); err != nil {
		t.Fatalf("the output is not YAML: %v\n%s", err, text)
	}
	for key, want := range map[string]any{
		"admin-token": "***", "source-sasl-password": "***", "target-sasl-password": "***",
		"target-sasl-username": "alice", "source-bootstrap": "src:9092", "max-frame-bytes": 100 << 20, "raft-voter": false,
	} {
		if printed[key] != want {
			t.Errorf("%s printed as %#v, want %#v", key, printed[key], want)
		}
	}
	if _, ok := printed["config"]; ok {
		t.Error("the output names --config, which a config file cannot set")
	}

	// The output is itself a valid config file (secrets aside).
	if _, _, _, err := loadTestConfig(t, text, nil); err != nil {
		t.Errorf("the printed configuration does not load back: %v", err)
	}
}

func TestConfigSecretNames(t *testing.T) {
	fs, _ := newProxyFlags()
	var secrets []string
	fs.VisitAll(func(f *flag.Flag) {
		if isSecret(f.Name) {
			secrets = append(secrets, f.Name)
		}
	})
	want := "admin-token source-oauth-client-secret source-sasl-password target-oauth-client-secret target-sasl-password"
	if got := strings.Join(secrets, " "); got != want {
		t.Errorf("secret settings %q, want %q: a new secret flag needs password, secret or token in its name", got, want)
	}
}
