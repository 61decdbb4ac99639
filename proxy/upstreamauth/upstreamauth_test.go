package upstreamauth

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/twmb/franz-go/pkg/sasl"
)

// firstMessage is what mech sends first to a broker at host.
func firstMessage(t *testing.T, mech sasl.Mechanism, host string) ([]byte, error) {
	t.Helper()
	_, msg, err := mech.Authenticate(context.Background(), host)
	return msg, err
}

// bearer extracts the token of an OAUTHBEARER first message (RFC 7628).
func bearer(t *testing.T, msg []byte) string {
	t.Helper()
	for _, kv := range bytes.Split(msg, []byte{1}) {
		if v, ok := bytes.CutPrefix(kv, []byte("auth=Bearer ")); ok {
			return string(v)
		}
	}
	t.Fatalf("no bearer token in %q", msg)
	return ""
}

func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "token")
	write := func(p, token string) {
		if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(path, "token-one")
	mech, err := TokenFile(path, map[string]string{"logicalCluster": "lkc-1"})
	if err != nil {
		t.Fatal(err)
	}
	expect := func(want string) {
		t.Helper()
		msg, err := firstMessage(t, mech, "broker:9092")
		if err != nil {
			t.Fatal(err)
		}
		if got := bearer(t, msg); got != want {
			t.Fatalf("token %q, want %q", got, want)
		}
		if !bytes.Contains(msg, []byte("\x01logicalCluster=lkc-1\x01")) {
			t.Fatalf("extension missing from %q", msg)
		}
	}
	expect("token-one")

	// Replaced by rename, as agents do (same size, maybe same mtime).
	write(filepath.Join(dir, "new"), "token-two")
	if err := os.Rename(filepath.Join(dir, "new"), path); err != nil {
		t.Fatal(err)
	}
	expect("token-two")

	// Rewritten in place.
	write(path, "token-three-longer")
	expect("token-three-longer")

	// An empty file is refused without forgetting where to look.
	write(path, "")
	if _, err := firstMessage(t, mech, "broker:9092"); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty token file: err = %v", err)
	}
	write(path, "token-four")
	expect("token-four")

	os.Remove(path)
	if _, err := firstMessage(t, mech, "broker:9092"); err == nil || !strings.Contains(err.Error(), "token file") {
		t.Fatalf("missing token file: err = %v", err)
	}
	if _, err := TokenFile(filepath.Join(dir, "absent"), nil); err == nil {
		t.Fatal("TokenFile accepts a file that does not exist")
	}
}

// tokenEndpoint is an OAuth 2.0 token endpoint for one client; it counts
// the tokens it issued.
func tokenEndpoint(t *testing.T, id, secret string, lifetime time.Duration) (*httptest.Server, *atomic.Int32) {
	var issued atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		gotID, gotSecret, ok := r.BasicAuth()
		if !ok {
			gotID, gotSecret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
		}
		w.Header().Set("Content-Type", "application/json")
		if r.PostForm.Get("grant_type") != "client_credentials" || gotID != id || gotSecret != secret {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client"}`)
			return
		}
		n := issued.Add(1)
		json.NewEncoder(w).Encode(map[string]any{
			"access_token": fmt.Sprintf("token-%d-scope-%s", n, r.PostForm.Get("scope")),
			"token_type":   "Bearer",
			"expires_in":   int(lifetime.Seconds()),
		})
	}))
	t.Cleanup(srv.Close)
	return srv, &issued
}

func TestClientCredentials(t *testing.T) {
	const secret = "s3cret-value"
	srv, issued := tokenEndpoint(t, "kmigrate", secret, time.Hour)
	mech, err := ClientCredentials{TokenURL: srv.URL, ClientID: "kmigrate", ClientSecret: secret, Scopes: []string{"kafka"}}.Mechanism()
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		msg, err := firstMessage(t, mech, "broker:9092")
		if err != nil {
			t.Fatal(err)
		}
		if got := bearer(t, msg); got != "token-1-scope-kafka" {
			t.Fatalf("token %q, want the first one, cached", got)
		}
	}
	if n := issued.Load(); n != 1 {
		t.Fatalf("%d tokens fetched for 5 connections, want 1 (cached)", n)
	}

	// A token within RefreshBefore of its expiry is replaced.
	short, shortIssued := tokenEndpoint(t, "kmigrate", secret, 30*time.Second)
	mech, _ = ClientCredentials{TokenURL: short.URL, ClientID: "kmigrate", ClientSecret: secret}.Mechanism()
	for range 3 {
		if _, err := firstMessage(t, mech, "broker:9092"); err != nil {
			t.Fatal(err)
		}
	}
	if n := shortIssued.Load(); n != 3 {
		t.Fatalf("%d tokens fetched for 3 connections with tokens of 30 s, want 3 (refreshed a minute before expiry)", n)
	}

	// Wrong secret: the error says where, never what.
	mech, _ = ClientCredentials{TokenURL: srv.URL, ClientID: "kmigrate", ClientSecret: "wrong-secret-xyz"}.Mechanism()
	_, err = firstMessage(t, mech, "broker:9092")
	if err == nil || !strings.Contains(err.Error(), srv.URL) {
		t.Fatalf("wrong client secret: err = %v, want the endpoint named", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-xyz") {
		t.Fatalf("the error shows the secret: %v", err)
	}
}

// TestMSKIAM checks franz-go's AWS_MSK_IAM first message against the
// documented format (aws-msk-iam-auth), recomputing the SigV4 signature of
// the presigned "GET /" request independently.
func TestMSKIAM(t *testing.T) {
	const (
		akid   = "AKIDEXAMPLE"
		secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
		token  = "session/token+with=odd chars"
		host   = "b-1.demo.abc123.c2.kafka.eu-west-1.amazonaws.com"
		region = "eu-west-1"
	)
	for _, session := range []string{"", token} {
		creds := credentials.NewStaticCredentialsProvider(akid, secret, session)
		before := time.Now().UTC().Add(-time.Second)
		msg, err := firstMessage(t, MSKIAM(creds, "kmigrate-test"), host+":9098")
		after := time.Now().UTC().Add(time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]string
		if err := json.Unmarshal(msg, &m); err != nil {
			t.Fatalf("first message is not a JSON object of strings: %v\n%s", err, msg)
		}
		date := m["x-amz-date"]
		ts, err := time.Parse("20060102T150405Z", date)
		if err != nil || ts.Before(before.Truncate(time.Second)) || ts.After(after) {
			t.Fatalf("x-amz-date %q (%v) is not now", date, err)
		}
		want := map[string]string{
			"version":             "2020_10_22",
			"host":                host,
			"user-agent":          "kmigrate-test",
			"action":              "kafka-cluster:Connect",
			"x-amz-algorithm":     "AWS4-HMAC-SHA256",
			"x-amz-credential":    akid + "/" + date[:8] + "/" + region + "/kafka-cluster/aws4_request",
			"x-amz-date":          date,
			"x-amz-signedheaders": "host",
			"x-amz-expires":       "900",
		}
		if session != "" {
			want["x-amz-security-token"] = session
		}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("%s = %q, want %q", k, m[k], v)
			}
		}
		if len(m) != len(want)+1 {
			t.Errorf("keys %v, want those of %v and x-amz-signature", keys(m), keys(want))
		}

		// SigV4 of the presigned request, from the AWS documentation:
		// canonical query string sorted by key, RFC 3986 escaping.
		q := url.Values{}
		for k, v := range map[string]string{
			"Action": "kafka-cluster:Connect", "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
			"X-Amz-Credential": want["x-amz-credential"], "X-Amz-Date": date,
			"X-Amz-Expires": "900", "X-Amz-SignedHeaders": "host",
		} {
			q.Set(k, v)
		}
		if session != "" {
			q.Set("X-Amz-Security-Token", session)
		}
		canonicalQuery := strings.ReplaceAll(q.Encode(), "+", "%20")
		emptyHash := sha256.Sum256(nil)
		canonical := strings.Join([]string{"GET", "/", canonicalQuery, "host:" + host, "", "host", hex.EncodeToString(emptyHash[:])}, "\n")
		canonicalHash := sha256.Sum256([]byte(canonical))
		scope := date[:8] + "/" + region + "/kafka-cluster/aws4_request"
		stringToSign := "AWS4-HMAC-SHA256\n" + date + "\n" + scope + "\n" + hex.EncodeToString(canonicalHash[:])
		key := []byte("AWS4" + secret)
		for _, part := range []string{date[:8], region, "kafka-cluster", "aws4_request", stringToSign} {
			h := hmac.New(sha256.New, key)
			h.Write([]byte(part))
			key = h.Sum(nil)
		}
		if got, want := m["x-amz-signature"], hex.EncodeToString(key); got != want {
			t.Errorf("session %q: x-amz-signature %s, recomputed %s", session, got, want)
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestDefaultAWSCredentials reads the credential chain from the
// environment alone (no files, no instance metadata).
func TestDefaultAWSCredentials(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	t.Setenv("AWS_SESSION_TOKEN", "env-session")
	creds, err := DefaultAWSCredentials(context.Background(), "us-east-2", "")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := firstMessage(t, MSKIAM(creds, "ua"), "b-2.demo.xyz.c3.kafka.us-east-2.amazonaws.com:9098")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	json.Unmarshal(msg, &m)
	if !strings.HasPrefix(m["x-amz-credential"], "AKIDENV/") || m["x-amz-security-token"] != "env-session" {
		t.Fatalf("credentials not from the environment: %s", msg)
	}
	if !strings.Contains(m["x-amz-credential"], "/us-east-2/") {
		t.Fatalf("region not from the host: %s", m["x-amz-credential"])
	}
}
