package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestVerifyAPI runs GET /v1/verify and `kmigrate verify` against a node
// mirroring a live topic (embedded clusters), then writes a record straight
// into the target and checks that both report the mismatch.
func TestVerifyAPI(t *testing.T) {
	t.Setenv(adminTokenEnv, "")
	n := startAdminNode(t, "--admin-token", testToken)

	verify := func(t *testing.T, query string) (int, VerifyAnswer, []byte) {
		t.Helper()
		code, body := n.call(t, http.MethodGet, "/v1/verify"+query, testToken)
		var ans VerifyAnswer
		if code == http.StatusOK {
			if err := json.Unmarshal(body, &ans); err != nil {
				t.Fatalf("%s: %v", body, err)
			}
		}
		return code, ans, body
	}

	t.Run("consistent", func(t *testing.T) {
		// A bare verify checks every mirrored topic; the producer keeps
		// writing, so partitions may lag but must not mismatch.
		var ans VerifyAnswer
		// Until the mirror has mapped a partition, it is unmapped.
		waitUntil(t, 30*time.Second, "verify to pass on the 3 mirrored partitions", func() bool {
			code, a, body := verify(t, "")
			if code != http.StatusOK {
				t.Fatalf("verify: %d %s", code, body)
			}
			for _, p := range a.Partitions {
				if p.Verdict == offsetsync.VerifyMismatch || p.Verdict == offsetsync.VerifyError {
					t.Fatalf("a live mirror must not mismatch: %v", a.Problems())
				}
			}
			ans = a
			compared := 0
			for _, p := range a.Partitions {
				compared += p.Checked
			}
			// Wait for the mirror to have copied something to compare.
			return len(ans.Partitions) == 3 && ans.OK && compared > 0
		})
		checked := 0
		for _, p := range ans.Partitions {
			if p.Topic != n.topic || !p.Verdict.Passes() || p.Source.Checksum != p.Target.Checksum {
				t.Errorf("partition: %+v", p)
			}
			checked += p.Checked
		}
		if checked == 0 || ans.ChecksumRecords != offsetsync.DefaultChecksumRecords {
			t.Errorf("no record compared (window %d): %+v", ans.ChecksumRecords, ans.Partitions)
		}
		// The workload's group commits on the source.
		if len(ans.Groups) != 1 || ans.Groups[0].Group != n.group || len(ans.Groups[0].Partitions) == 0 {
			t.Fatalf("groups: %+v", ans.Groups)
		}
		for _, gp := range ans.Groups[0].Partitions {
			if gp.Source < 0 || gp.Target != -1 {
				t.Errorf("group partition: %+v", gp)
			}
		}

		code, ans, body := verify(t, "?topic="+n.topic+"&group=someone-else&records=0")
		if code != http.StatusOK || len(ans.Partitions) != 3 || ans.ChecksumRecords != 0 || ans.Partitions[0].Checked != 0 {
			t.Errorf("records=0: %d %s", code, body)
		}
		if len(ans.Groups) != 1 || ans.Groups[0].Group != "someone-else" || len(ans.Groups[0].Partitions) != 0 {
			t.Errorf("an explicit group without commits is listed empty: %+v", ans.Groups)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		for query, want := range map[string]int{
			"?topic=no-such-topic": http.StatusNotFound,
			"?records=abc":         http.StatusBadRequest,
			"?records=-1":          http.StatusBadRequest,
			"?records=99999999":    http.StatusBadRequest,
			"?topic=":              http.StatusBadRequest,
		} {
			code, _, body := verify(t, query)
			var e struct{ Error string }
			if code != want || json.Unmarshal(body, &e) != nil || e.Error == "" {
				t.Errorf("GET /v1/verify%s: %d %s, want %d with an error", query, code, body, want)
			}
		}
		if code, body := n.call(t, http.MethodGet, "/v1/verify", ""); code != http.StatusUnauthorized {
			t.Errorf("without a token: %d %s", code, body)
		}
		_, _, body := verify(t, "?topic=no-such-topic")
		if !strings.Contains(string(body), "no-such-topic") || !strings.Contains(string(body), "unknown topic") {
			t.Errorf("unknown topic answer does not say so: %s", body)
		}
	})

	t.Run("CLI", func(t *testing.T) {
		var out bytes.Buffer
		if err := runVerify([]string{"--admin", n.admin, "--admin-token", testToken, "--topic", n.topic, "--records", "200"}, &out); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		for _, want := range []string{"PARTITIONS", "GROUPS", n.topic, n.group, "OK: a cutover may proceed", "200 records compared"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
		t.Logf("kmigrate verify:\n%s", out.String())

		out.Reset()
		if err := runVerify([]string{"--admin", n.admin, "--admin-token", testToken, "--json"}, &out); err != nil {
			t.Fatal(err)
		}
		var ans VerifyAnswer
		if err := json.Unmarshal(out.Bytes(), &ans); err != nil || !ans.OK || len(ans.Partitions) != 3 {
			t.Errorf("--json: %v %s", err, out.String())
		}

		err := runVerify([]string{"--admin", n.admin, "--admin-token", testToken, "--topic", "no-such-topic"}, &out)
		if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "no-such-topic") {
			t.Errorf("unknown topic: %v", err)
		}
		if err := runVerify([]string{"--admin", n.admin}, &out); err == nil || !strings.Contains(err.Error(), "--admin-token") {
			t.Errorf("without a token: %v", err)
		}
	})

	// Last: this corrupts the target.
	t.Run("stray target record", func(t *testing.T) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(n.target), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: n.topic, Partition: 1, Value: []byte("not from the mirror")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		code, ans, body := verify(t, "?topic="+n.topic)
		if code != http.StatusOK || ans.OK || len(ans.Problems()) != 1 || !strings.HasPrefix(ans.Problems()[0], n.topic+"/1: mismatch: ") {
			t.Fatalf("stray record: %d %s", code, body)
		}
		t.Logf("reported: %s", ans.Problems()[0])

		var out bytes.Buffer
		err = runVerify([]string{"--admin", n.admin, "--admin-token", testToken}, &out)
		if err == nil || !strings.Contains(err.Error(), "1 partitions refuse a cutover") || !strings.Contains(out.String(), "MISMATCH") ||
			!strings.Contains(out.String(), "REFUSED") {
			t.Errorf("CLI on a mismatch: %v\n%s", err, out.String())
		}

		// A topic cutover runs verify first and refuses; produces are
		// never held for it.
		code, body = n.call(t, http.MethodPost, "/v1/topics/"+n.topic+"/cutover", testToken)
		if code != http.StatusPreconditionFailed || !strings.Contains(string(body), "mismatch") {
			t.Fatalf("topic cutover on a mismatch: %d %s", code, body)
		}
		if code, body := n.call(t, http.MethodGet, "/v1/topics/"+n.topic, testToken); code != http.StatusOK || !strings.Contains(string(body), `"primary":"source"`) {
			t.Fatalf("topic after a refused cutover: %d %s", code, body)
		}
	})
}
