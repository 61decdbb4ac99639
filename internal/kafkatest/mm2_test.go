package kafkatest_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// TestMirrorMaker2 checks that the jars run MirrorMaker 2 (dedicated mode)
// from one cluster to another, with topic names kept (identity policy), as
// the migration benchmarks will.
func TestMirrorMaker2(t *testing.T) {
	src := shared.Get(t)
	dst := kafkatest.StartT(t, kafkatest.Options{Name: "mm2-target"})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	const topic, n = "mm2-orders", 200
	prod, err := src.Client(kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for i := range n {
		if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprint(i))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}

	cfg := strings.Join([]string{
		"clusters = source, target",
		"source.bootstrap.servers = " + src.Bootstrap(),
		"target.bootstrap.servers = " + dst.Bootstrap(),
		"source->target.enabled = true",
		"source->target.topics = " + topic,
		"replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
		// Single-broker clusters: every internal topic gets one replica.
		"replication.factor = 1",
		"checkpoints.topic.replication.factor = 1",
		"heartbeats.topic.replication.factor = 1",
		"offset-syncs.topic.replication.factor = 1",
		"offset.storage.replication.factor = 1",
		"status.storage.replication.factor = 1",
		"config.storage.replication.factor = 1",
		"refresh.topics.interval.seconds = 1",
		"refresh.groups.interval.seconds = 1",
		"emit.checkpoints.interval.seconds = 1",
		"emit.heartbeats.interval.seconds = 1",
		"",
	}, "\n")
	props := filepath.Join(t.TempDir(), "mm2.properties")
	if err := os.WriteFile(props, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}

	mmCtx, stopMM := context.WithCancel(ctx)
	defer stopMM()
	// The properties file goes first: --clusters takes all following words.
	mm, err := kafkatest.ToolCmd(mmCtx, kafkatest.MainMirrorMaker2, props, "--clusters", "target")
	if err != nil {
		t.Fatal(err)
	}
	var mmLog strings.Builder
	mm.Stdout, mm.Stderr = &mmLog, &mmLog
	if err := mm.Start(); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	// MirrorMaker runs until cancelled; if it exits early, stop waiting.
	pollCtx, stopPoll := context.WithCancel(ctx)
	mmDone := make(chan error, 1)
	go func() {
		mmDone <- mm.Wait()
		stopPoll()
	}()
	defer func() {
		stopMM()
		<-mmDone
		if t.Failed() {
			t.Logf("MirrorMaker 2 output:\n%s", mmLog.String())
		}
	}()

	cons, err := dst.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := 0
	for got < n {
		fs := cons.PollFetches(pollCtx)
		if pollCtx.Err() != nil {
			t.Fatalf("target received %d of %d mirrored records before MirrorMaker exited or the deadline passed (%v)", got, n, ctx.Err())
		}
		got += fs.NumRecords()
	}
	t.Logf("MirrorMaker 2 mirrored %d records in %v (including its start-up)", got, time.Since(began).Round(time.Millisecond))
}
