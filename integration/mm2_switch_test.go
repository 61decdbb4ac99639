package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// TestSwitchTheMirrorMaker2Way measures the switch kmigrate replaces, on the
// same clusters and workload as the cutover tests: MirrorMaker 2 copies the
// topic with checkpoints and group offset sync (sync.group.offsets.enabled,
// 1 s intervals, IdentityReplicationPolicy); the consumer is stopped on the
// source and restarted on the target once MirrorMaker 2 has synced its
// commit; then the producer is stopped and restarted on the target. It
// reports what that costs (downtimes, records delivered twice, records out
// of order) for docs/benchmarks.md, and asserts MirrorMaker 2's own promise:
// every record is delivered at least once.
func TestSwitchTheMirrorMaker2Way(t *testing.T) {
	src, dst := cluster(t), target.Get(t)
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	dir := t.TempDir()
	alias := "mm2src"
	props := filepath.Join(dir, "mm2.properties")
	lines := []string{
		"clusters = " + alias + ", target",
		alias + ".bootstrap.servers = " + src.Bootstrap(),
		"target.bootstrap.servers = " + dst.Bootstrap(),
		alias + "->target.enabled = true",
		"target->" + alias + ".enabled = false",
		alias + "->target.topics = " + topic,
		alias + "->target.groups = " + group,
		"replication.policy.class = org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
		"emit.checkpoints.enabled = true",
		"emit.checkpoints.interval.seconds = 1",
		"sync.group.offsets.enabled = true",
		"sync.group.offsets.interval.seconds = 1",
		"refresh.groups.interval.seconds = 1",
		"refresh.topics.interval.seconds = 1",
		"emit.heartbeats.enabled = false",
		"sync.topic.acls.enabled = false",
		"plugin.discovery = service_load",
		"replication.factor = 1",
		"checkpoints.topic.replication.factor = 1",
		"heartbeats.topic.replication.factor = 1",
		"offset-syncs.topic.replication.factor = 1",
		"offset.storage.replication.factor = 1",
		"status.storage.replication.factor = 1",
		"config.storage.replication.factor = 1",
	}
	if err := os.WriteFile(props, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mmCtx, stopMM := context.WithCancel(ctx)
	defer stopMM()
	mm, err := kafkatest.ToolCmd(mmCtx, kafkatest.MainMirrorMaker2, props, "--clusters", "target")
	if err != nil {
		t.Fatal(err)
	}
	mmLog, err := os.Create(filepath.Join(dir, "mm2.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer mmLog.Close()
	mm.Stdout, mm.Stderr = mmLog, mmLog
	if err := mm.Start(); err != nil {
		t.Fatalf("MirrorMaker 2: %v", err)
	}
	defer func() { stopMM(); mm.Wait() }()

	// The workload, straight at the source, as before any migration.
	prod := newSeqProducer(t, ctx, src.Bootstrap(), topic, 0)
	defer prod.stop()
	srcCons := newSeqConsumer(t, ctx, src.Bootstrap(), topic, group)
	defer srcCons.stop()
	waitFor(t, ctx, "the group to consume on the source", func() bool { return srcCons.count() > 5000 })
	waitFor(t, ctx, "MirrorMaker 2 to copy the topic", func() bool { return targetTotal(ctx, dst.Bootstrap(), topic) > 3000 })

	// 1. The consumer moves: stop it on the source, wait until MirrorMaker 2
	// has synced its last commit to the target (the target's commit stops
	// moving), start it on the target.
	got1, _ := srcCons.stop()
	stoppedAt := time.Now()
	dcl, err := kgo.NewClient(kgo.SeedBrokers(dst.Bootstrap()))
	if err != nil {
		t.Fatal(err)
	}
	defer dcl.Close()
	adm := kadm.NewClient(dcl)
	var last string
	stableSince := time.Now()
	waitFor(t, ctx, "MirrorMaker 2 to sync the group's commit to the target", func() bool {
		offs, err := adm.FetchOffsets(ctx, group)
		if err != nil || len(offs.Sorted()) == 0 {
			stableSince = time.Now()
			return false
		}
		s := ""
		for _, o := range offs.Sorted() {
			s += fmt.Sprintf("%d=%d;", o.Partition, o.At)
		}
		if s != last {
			last, stableSince = s, time.Now()
		}
		return time.Since(stableSince) > 3*time.Second
	})
	dstCons := newSeqConsumer(t, ctx, dst.Bootstrap(), topic, group)
	defer dstCons.stop()
	waitFor(t, ctx, "the group to consume on the target", func() bool { return dstCons.count() > 0 })

	// 2. The producer moves: stop it on the source, start it on the target
	// where the sequence left off. MirrorMaker 2 still copies the source's
	// tail meanwhile.
	sent1 := prod.stop()
	prodStopped := time.Now()
	prod2 := newSeqProducer(t, ctx, dst.Bootstrap(), topic, sent1)
	defer prod2.stop()
	waitFor(t, ctx, "the producer to write to the target", func() bool { return prod2.acked() > 2000 })
	sent := prod2.stop()
	waitFor(t, ctx, "every record consumed on the target", func() bool { return dstCons.count() >= sent-len(uniqueSeqs(got1)) })
	time.Sleep(2 * time.Second)
	got2, _ := dstCons.stop()

	all := append(append([]consumed(nil), got1...), got2...)
	seen := map[int]int{}
	for _, c := range all {
		seen[c.seq]++
	}
	lost, dup := 0, 0
	for i := 0; i < sent; i++ {
		switch n := seen[i]; {
		case n == 0:
			lost++
		case n > 1:
			dup += n - 1
		}
	}
	// Order as an application sees it: per key (the producer keys by
	// seq % 9), sequence numbers must rise.
	reordered := 0
	lastByKey := map[int]int{}
	for _, c := range got2 {
		k := c.seq % 9
		if l, ok := lastByKey[k]; ok && c.seq < l && seen[c.seq] == 1 {
			reordered++
		}
		lastByKey[k] = max(lastByKey[k], c.seq)
	}
	var consumerDowntime time.Duration
	if len(got1) > 0 && len(got2) > 0 {
		consumerDowntime = firstAt(got2).Sub(lastAt(got1))
	}
	producerDowntime := prod2.firstAck().Sub(prodStopped)
	t.Logf("MirrorMaker 2 switch: %d records; consumer stopped on the source %s, restarted on the target after the commit synced: consumer downtime %s, delivered twice %d, lost %d, out of order on the target %d; producer downtime %s",
		sent, stoppedAt.Format("15:04:05.000"), consumerDowntime.Round(time.Millisecond), dup, lost, reordered, producerDowntime.Round(time.Millisecond))
	if lost != 0 {
		t.Fatalf("%d records never delivered: MirrorMaker 2 promises at least once", lost)
	}
}

func targetTotal(ctx context.Context, addr, topic string) int64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return 0
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

func uniqueSeqs(got []consumed) map[int]bool {
	m := map[int]bool{}
	for _, c := range got {
		m[c.seq] = true
	}
	return m
}

func firstAt(got []consumed) time.Time {
	t := got[0].at
	for _, c := range got {
		if c.at.Before(t) {
			t = c.at
		}
	}
	return t
}

func lastAt(got []consumed) time.Time {
	var t time.Time
	for _, c := range got {
		if c.at.After(t) {
			t = c.at
		}
	}
	return t
}

// firstAck is when the producer's first record was acknowledged.
func (p *seqProducer) firstAck() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	acks := append([]time.Time(nil), p.acks...)
	sort.Slice(acks, func(i, j int) bool { return acks[i].Before(acks[j]) })
	if len(acks) == 0 {
		return time.Time{}
	}
	return acks[0]
}
