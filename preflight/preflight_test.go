package preflight

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func fakeCluster(t *testing.T, name string) (Cluster, *kadm.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return Cluster{Name: name, Client: cl, Auth: "plaintext, no SASL"}, kadm.NewClient(cl)
}

// TestTopicMismatches checks the findings that need no ACLs: a target topic
// with fewer partitions fails, one with more warns, a smaller
// max.message.bytes fails, a target topic holding records fails, and a
// missing topic is reported creatable.
func TestTopicMismatches(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, srcAdm := fakeCluster(t, "source")
	dst, dstAdm := fakeCluster(t, "target")
	create := func(adm *kadm.Client, topic string, partitions int32, configs map[string]*string) {
		t.Helper()
		if _, err := adm.CreateTopic(ctx, partitions, 1, configs, topic); err != nil {
			t.Fatalf("create %s: %v", topic, err)
		}
	}
	small, big := "1000", "2000000"
	create(srcAdm, "fewer", 3, nil)
	create(dstAdm, "fewer", 2, nil)
	create(srcAdm, "more", 1, nil)
	create(dstAdm, "more", 4, nil)
	create(srcAdm, "limits", 1, map[string]*string{"max.message.bytes": &big})
	create(dstAdm, "limits", 1, map[string]*string{"max.message.bytes": &small})
	create(srcAdm, "missing", 2, nil)
	create(srcAdm, "excluded", 1, nil)
	create(srcAdm, "filled", 1, nil)
	create(dstAdm, "filled", 1, nil)
	if err := dst.Client.ProduceSync(ctx, &kgo.Record{Topic: "filled", Value: []byte("not kmigrate's")}).FirstErr(); err != nil {
		t.Fatalf("produce to the target: %v", err)
	}

	rep := Run(ctx, Config{Source: src, Target: &dst, Topics: func(topic string) bool { return topic != "excluded" }})
	find := func(s Status, cluster, subject string) *Finding {
		for i, f := range rep.Findings {
			if f.Status == s && f.Cluster == cluster && f.Subject == subject {
				return &rep.Findings[i]
			}
		}
		return nil
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", text.String())
	if f := find(Fail, "target", "topic fewer"); f == nil || !strings.Contains(f.Detail, "2 partitions, the source has 3") {
		t.Errorf("fewer partitions on the target: want a failure, got %+v", f)
	}
	if f := find(Warn, "target", "topic more"); f == nil || !strings.Contains(f.Detail, "4 partitions, the source has 1") {
		t.Errorf("more partitions on the target: want a warning, got %+v", f)
	}
	if f := find(Fail, "target", "topic limits"); f == nil || !strings.Contains(f.Detail, "max.message.bytes 1000 is below the source's 2000000") {
		t.Errorf("smaller max.message.bytes: want a failure, got %+v", f)
	}
	if f := find(OK, "target", "1 missing topic"); f == nil {
		t.Errorf("missing topic: want it reported creatable")
	}
	for _, f := range rep.Findings {
		if strings.Contains(f.Subject, "excluded") {
			t.Errorf("an excluded topic was checked: %+v", f)
		}
	}
	if f := find(Fail, "target", "topic filled"); f == nil || !strings.Contains(f.Detail, "already holds 1 records") {
		t.Errorf("non-empty target topic: want a failure, got %+v", f)
	}
	if got := rep.Count(Fail); got != 3 {
		t.Errorf("failures: got %d, want 3", got)
	}
	if !strings.Contains(text.String(), "3 failures") || !strings.Contains(text.String(), "not ready") {
		t.Errorf("the verdict line is missing:\n%s", text.String())
	}
}

// TestUnreachableCluster: a cluster nobody answers on is one failure that
// names it, and the checks that need it are skipped.
func TestUnreachableCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.RetryTimeout(2*time.Second), kgo.DialTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	rep := Run(ctx, Config{Source: Cluster{Name: "source", Client: cl, Auth: "plaintext, no SASL"}, Topics: func(string) bool { return true }})
	if len(rep.Findings) != 1 || rep.Findings[0].Status != Fail || rep.Findings[0].Check != "connect" {
		t.Fatalf("want one connect failure, got %+v", rep.Findings)
	}
}
