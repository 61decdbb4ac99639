package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// preflightFinding mirrors preflight.Finding as `kmigrate preflight
// --format json` prints it; the test reads the binary's output like a
// script would.
type preflightFinding struct {
	Status, Cluster, Check, Subject, Detail string
}

type preflightOutput struct {
	OK       bool
	Failures int
	Findings []preflightFinding
}

// TestPreflightReportsMissingACLs runs `kmigrate preflight` against two
// real brokers with ACLs enabled, as a principal that holds only part of
// what the proxy needs: every missing permission and the topic mismatch are
// reported as failures, and once the ACLs are granted the same command
// passes. A wrong password is reported naming the cluster and the mechanism,
// without the secret.
func TestPreflightReportsMissingACLs(t *testing.T) {
	migrator := kafkatest.User{Name: "migrator", Password: "migrator-secret-42"}
	users := []kafkatest.User{kafkatest.DefaultUser, migrator}
	src := kafkatest.StartT(t, kafkatest.Options{Name: "preflight-source", SASL: true, ACLs: true, Users: users})
	dst := kafkatest.StartT(t, kafkatest.Options{Name: "preflight-target", SASL: true, ACLs: true, Users: users})
	srcAdm, dstAdm := directAdmin(t, src), directAdmin(t, dst)
	ctx := testCtx(t, 3*time.Minute)

	// Source: orders (3 partitions), payments (2), hidden (1) and a group
	// with committed offsets. Target: payments with too few partitions;
	// orders and hidden are missing.
	createTopic(t, src, "orders", 3)
	createTopic(t, src, "payments", 2)
	createTopic(t, src, "hidden", 1)
	createTopic(t, dst, "payments", 1)
	commit := kadm.Offsets{}
	commit.Add(kadm.Offset{Topic: "orders", Partition: 0, At: 0, LeaderEpoch: -1})
	if _, err := srcAdm.CommitOffsets(ctx, "billing", commit); err != nil {
		t.Fatalf("commit offsets of group billing on the source: %v", err)
	}

	user := "User:" + migrator.Name
	grant := func(adm *kadm.Client, b *kadm.ACLBuilder) {
		t.Helper()
		res, err := adm.CreateACLs(ctx, b.Allow(user).AllowHosts().ResourcePatternType(kadm.ACLPatternLiteral))
		if err != nil {
			t.Fatalf("create ACLs: %v", err)
		}
		for _, r := range res {
			if r.Err != nil {
				t.Fatalf("create ACL %+v: %v", r, r.Err)
			}
		}
	}
	// Partial grants: orders lacks Write and DescribeConfigs, hidden has
	// nothing, the group only Describe on the source and nothing on the
	// target, no Create on the target, no transactional id anywhere.
	grant(srcAdm, kadm.NewACLs().Topics("orders").Operations(kadm.OpDescribe, kadm.OpRead))
	grant(srcAdm, kadm.NewACLs().Topics("payments").Operations(kadm.OpDescribe, kadm.OpRead, kadm.OpWrite, kadm.OpDescribeConfigs))
	grant(srcAdm, kadm.NewACLs().Groups("billing").Operations(kadm.OpDescribe))
	grant(dstAdm, kadm.NewACLs().Topics("payments").Operations(kadm.OpDescribe, kadm.OpRead, kadm.OpWrite, kadm.OpAlter, kadm.OpDescribeConfigs))

	bin := proxytest.Binary(t)
	preflight := func(password string) (preflightOutput, string, error) {
		t.Helper()
		args := []string{"preflight", "--format", "json",
			"--topics", "orders|payments|hidden", "--groups", "billing", "--transactional-ids", "tx-1",
			"--source-bootstrap", src.Addr(kafkatest.SASLPlaintext), "--source-sasl-mechanism", "SCRAM-SHA-512",
			"--source-sasl-username", migrator.Name, "--source-sasl-password", password,
			"--target-bootstrap", dst.Addr(kafkatest.SASLPlaintext), "--target-sasl-mechanism", "SCRAM-SHA-256",
			"--target-sasl-username", migrator.Name, "--target-sasl-password", migrator.Password,
		}
		cmd := exec.CommandContext(ctx, bin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		runErr := cmd.Run()
		var out preflightOutput
		if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
			t.Fatalf("preflight printed no JSON report (%v): %v\nstdout:\n%s\nstderr:\n%s", runErr, err, stdout.String(), stderr.String())
		}
		return out, stdout.String() + stderr.String(), runErr
	}
	failures := func(out preflightOutput) map[string]string {
		m := make(map[string]string)
		for _, f := range out.Findings {
			if f.Status == "FAIL" {
				m[f.Cluster+"/"+f.Check+"/"+f.Subject] = f.Detail
			}
		}
		return m
	}

	out, text, err := preflight(migrator.Password)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("preflight with missing ACLs: want exit status 1, got %v\n%s", err, text)
	}
	got := failures(out)
	want := map[string][]string{
		"source/acl/topic orders":          {"Write", "DescribeConfigs"},
		"source/acl/topic hidden":          {"Describe"},
		"source/acl/group billing":         {"Read"},
		"source/acl/transactional-id tx-1": {"Describe", "Write"},
		"target/acl/topic orders":          {"Create"},
		"target/topic/topic payments":      {"1 partitions, the source has 2"},
		"target/acl/group billing":         {"Describe", "Read"},
		"target/acl/transactional-id tx-1": {"Describe", "Write"},
	}
	for key, words := range want {
		detail, ok := got[key]
		if !ok {
			t.Errorf("no failure %q in the report", key)
			continue
		}
		for _, w := range words {
			if !strings.Contains(detail, w) {
				t.Errorf("failure %q: %q does not name %q", key, detail, w)
			}
		}
	}
	for key, detail := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("unexpected failure %q: %s", key, detail)
		}
	}
	if t.Failed() {
		t.Fatalf("report:\n%s", text)
	}
	t.Logf("preflight with partial ACLs: %d failures as expected", out.Failures)

	// Grant what was missing and give the target topic the source's
	// partitions: the same command now passes.
	grant(srcAdm, kadm.NewACLs().Topics("orders", "hidden").Operations(kadm.OpDescribe, kadm.OpRead, kadm.OpWrite, kadm.OpDescribeConfigs))
	grant(srcAdm, kadm.NewACLs().Groups("billing").Operations(kadm.OpRead))
	grant(dstAdm, kadm.NewACLs().Clusters().Operations(kadm.OpCreate))
	grant(dstAdm, kadm.NewACLs().Topics("orders", "hidden").Operations(kadm.OpDescribe, kadm.OpRead, kadm.OpWrite, kadm.OpAlter, kadm.OpDescribeConfigs))
	grant(dstAdm, kadm.NewACLs().Groups("billing").Operations(kadm.OpDescribe, kadm.OpRead))
	for _, adm := range []*kadm.Client{srcAdm, dstAdm} {
		grant(adm, kadm.NewACLs().TransactionalIDs("tx-1").Operations(kadm.OpDescribe, kadm.OpWrite))
	}
	if _, err := dstAdm.UpdatePartitions(ctx, 2, "payments"); err != nil {
		t.Fatalf("add a partition to the target's payments: %v", err)
	}
	// ACLs reach the authorizer through the metadata log: give it a moment.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, text, err = preflight(migrator.Password)
		if err == nil && out.OK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("preflight after granting every ACL: %v\n%s", err, text)
		}
		time.Sleep(time.Second)
	}
	t.Logf("preflight after the grants: ok, %d findings, 0 failures", len(out.Findings))

	// A wrong password: the report names the cluster and the mechanism,
	// never the password.
	const wrong = "not-the-password-17"
	out, text, err = preflight(wrong)
	if err == nil {
		t.Fatalf("preflight with a wrong source password passed:\n%s", text)
	}
	detail, ok := failures(out)["source/connect/plaintext, SCRAM-SHA-512 as migrator"]
	if !ok || !strings.Contains(detail, "SASL_AUTHENTICATION_FAILED") {
		t.Fatalf("wrong password: want a source connect failure naming SCRAM-SHA-512 and SASL_AUTHENTICATION_FAILED, got %q\n%s", detail, text)
	}
	if strings.Contains(text, wrong) {
		t.Fatalf("the wrong password appears in preflight's output:\n%s", text)
	}
}
