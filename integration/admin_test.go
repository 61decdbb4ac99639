package integration

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// produceCounts writes counts[p] records to partition p, directly.
func produceCounts(t *testing.T, c *kafkatest.Cluster, topic string, counts map[int32]int) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap()), kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for p, n := range counts {
		for i := 0; i < n; i++ {
			recs = append(recs, &kgo.Record{Partition: p, Value: []byte(fmt.Sprintf("p%d-%d", p, i))})
		}
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}
}

// toolTable parses the whitespace-separated table that follows the header
// line starting with first (e.g. "GROUP"), as printed by Kafka's
// ConsumerGroupCommand: one map per row, keyed by column name. Column values
// must not contain spaces; header names may contain single spaces
// ("COORDINATOR (ID)"), so columns are located by the header's start offsets.
func toolTable(out, first string) ([]map[string]string, error) {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, first+" ") {
			continue
		}
		// Column names are separated by two or more spaces.
		type col struct {
			name  string
			start int
		}
		var cols []col
		for j := 0; j < len(l); {
			for j < len(l) && l[j] == ' ' {
				j++
			}
			if j >= len(l) {
				break
			}
			k := j
			for k < len(l) && !(l[k] == ' ' && (k+1 >= len(l) || l[k+1] == ' ')) {
				k++
			}
			cols = append(cols, col{l[j:k], j})
			j = k
		}
		var rows []map[string]string
		for _, r := range lines[i+1:] {
			if strings.TrimSpace(r) == "" {
				break
			}
			row := map[string]string{}
			for ci, c := range cols {
				end := len(r)
				if ci+1 < len(cols) && cols[ci+1].start < len(r) {
					end = cols[ci+1].start
				}
				if c.start > len(r) {
					return nil, fmt.Errorf("row %q is shorter than the header %q", r, l)
				}
				row[c.name] = strings.TrimSpace(r[c.start:end])
			}
			rows = append(rows, row)
		}
		return rows, nil
	}
	return nil, fmt.Errorf("no table with a header starting %q in:\n%s", first, out)
}

// groupTool runs ConsumerGroupCommand with args and returns its stdout
// followed by its stderr (where it prints notes such as "has no active
// members").
func groupTool(t *testing.T, boot string, args ...string) string {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	stdout, stderr, err := kafkatest.Tool(ctx, kafkatest.MainConsumerGroups, append([]string{"--bootstrap-server", boot}, args...)...)
	if err != nil {
		t.Fatalf("ConsumerGroupCommand %v: %v\nstdout:\n%s", args, err, stdout)
	}
	return stdout + "\n" + stderr
}

// TestConsumerGroupsTool: Kafka's ConsumerGroupCommand through the bootstrap
// describes a franz-go group that consumed and committed everything and then
// fell behind on one partition: per partition CURRENT-OFFSET is the produced
// count, LOG-END-OFFSET and LAG follow the later produce, the member's
// CLIENT-ID and HOST are shown while it is active; --state shows it Stable
// with one member and a coordinator address that is the bootstrap's (no
// upstream address when the bootstrap is the proxy); kadm's Lag through the
// bootstrap agrees; --list lists the group; after the member leaves, --delete
// deletes it.
func TestConsumerGroupsTool(t *testing.T) {
	c := cluster(t)
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")
	group := uniqueName(t, "group")
	createTopic(t, c, topic, 3)
	counts := map[int32]int{0: 17, 1: 29, 2: 41}
	produceCounts(t, c, topic, counts)
	total := 17 + 29 + 41

	ctx := testCtx(t, 2*time.Minute)
	const clientID = "interop-cg-client"
	cons, err := kgo.NewClient(
		kgo.SeedBrokers(boot),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchMaxWait(200*time.Millisecond),
		kgo.ClientID(clientID),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	got := pollUntil(t, ctx, cons, total, 300*time.Millisecond)
	if len(got) != total {
		t.Fatalf("consumed %d records, want %d", len(got), total)
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	// The group falls behind by 5 on partition 0.
	produceCounts(t, c, topic, map[int32]int{0: 5})
	lag := map[int32]int{0: 5}

	checkRows := func(t *testing.T, out string, active bool) {
		t.Helper()
		rows, err := toolTable(out, "GROUP")
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int32]bool{}
		for _, r := range rows {
			if r["GROUP"] != group || r["TOPIC"] != topic {
				t.Errorf("row for group %q topic %q, want %q %q: %v", r["GROUP"], r["TOPIC"], group, topic, r)
				continue
			}
			p, err := strconv.ParseInt(r["PARTITION"], 10, 32)
			if err != nil {
				t.Fatalf("PARTITION %q: %v", r["PARTITION"], err)
			}
			seen[int32(p)] = true
			want := map[string]string{
				"CURRENT-OFFSET": strconv.Itoa(counts[int32(p)]),
				"LOG-END-OFFSET": strconv.Itoa(counts[int32(p)] + lag[int32(p)]),
				"LAG":            strconv.Itoa(lag[int32(p)]),
			}
			if active {
				want["CLIENT-ID"] = clientID
				want["HOST"] = "/127.0.0.1"
			} else {
				want["CLIENT-ID"], want["HOST"], want["CONSUMER-ID"] = "-", "-", "-"
			}
			for col, w := range want {
				if r[col] != w {
					t.Errorf("partition %d: %s = %q, want %q (row %v)", p, col, r[col], w, r)
				}
			}
			if active && !strings.HasPrefix(r["CONSUMER-ID"], clientID) {
				t.Errorf("partition %d: CONSUMER-ID %q, want the member id of %s", p, r["CONSUMER-ID"], clientID)
			}
		}
		if len(seen) != 3 || len(rows) != 3 {
			t.Errorf("describe shows %d rows for partitions %v, want one for each of 3:\n%s", len(rows), seen, out)
		}
	}

	t.Run("describe active", func(t *testing.T) {
		checkRows(t, groupTool(t, boot, "--describe", "--group", group), true)
	})
	t.Run("describe state", func(t *testing.T) {
		out := groupTool(t, boot, "--describe", "--group", group, "--state")
		rows, err := toolTable(out, "GROUP")
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 1 {
			t.Fatalf("--state shows %d rows, want 1:\n%s", len(rows), out)
		}
		r := rows[0]
		if r["STATE"] != "Stable" || r["#MEMBERS"] != "1" || r["ASSIGNMENT-STRATEGY"] != "cooperative-sticky" {
			t.Errorf("--state row %v, want Stable, 1 member, cooperative-sticky", r)
		}
		coord := strings.Fields(r["COORDINATOR (ID)"])
		if len(coord) == 0 {
			t.Fatalf("no coordinator in %v", r)
		}
		if viaProxy {
			if coord[0] == c.Bootstrap() {
				t.Errorf("coordinator %s is the upstream broker: the proxy leaked its address", coord[0])
			}
		} else if coord[0] != boot {
			t.Errorf("coordinator %s, want the broker %s", coord[0], boot)
		}
	})
	t.Run("kadm lag", func(t *testing.T) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(boot))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		lags, err := kadm.NewClient(cl).Lag(ctx, group)
		if err != nil {
			t.Fatal(err)
		}
		gl := lags[group]
		if gl.Error() != nil {
			t.Fatalf("lag of %s: %v", group, gl.Error())
		}
		if gl.State != "Stable" || len(gl.Members) != 1 || gl.Members[0].ClientID != clientID {
			t.Errorf("kadm describe: state %q, %d members, want Stable and 1 member %s", gl.State, len(gl.Members), clientID)
		}
		for p, n := range counts {
			l, ok := gl.Lag[topic][p]
			if !ok || l.Err != nil || l.Commit.At != int64(n) || l.End.Offset != int64(n+lag[p]) || l.Lag != int64(lag[p]) {
				t.Errorf("kadm lag of %s[%d]: %+v (ok %v), want commit %d end %d lag %d", topic, p, l, ok, n, n+lag[p], lag[p])
			}
		}
	})
	t.Run("list", func(t *testing.T) {
		out := groupTool(t, boot, "--list")
		if !slices.Contains(strings.Fields(out), group) {
			t.Errorf("--list does not list %s:\n%s", group, out)
		}
	})

	cons.Close() // leave the group
	t.Run("describe empty", func(t *testing.T) {
		out := groupTool(t, boot, "--describe", "--group", group)
		if !strings.Contains(out, fmt.Sprintf("Consumer group '%s' has no active members.", group)) {
			t.Errorf("describe after the member left does not say the group is empty:\n%s", out)
		}
		checkRows(t, out, false)
	})
	t.Run("delete", func(t *testing.T) {
		out := groupTool(t, boot, "--delete", "--group", group)
		if !strings.Contains(out, "Deletion of requested consumer groups ('"+group+"') was successful.") {
			t.Errorf("--delete output:\n%s", out)
		}
		groups, err := directAdmin(t, c).ListGroups(testCtx(t, 20*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(groups.Groups(), group) {
			t.Errorf("group %s still listed by the broker after --delete", group)
		}
	})
}

// topicTool runs TopicCommand with args and returns stdout, or the error.
func topicTool(t *testing.T, boot string, args ...string) (string, error) {
	t.Helper()
	ctx := testCtx(t, time.Minute)
	stdout, stderr, err := kafkatest.Tool(ctx, kafkatest.MainTopicCommand, append([]string{"--bootstrap-server", boot}, args...)...)
	if err != nil {
		return stdout + stderr, err
	}
	return stdout, nil
}

func mustTopicTool(t *testing.T, boot string, args ...string) string {
	t.Helper()
	out, err := topicTool(t, boot, args...)
	if err != nil {
		t.Fatalf("TopicCommand %v: %v\n%s", args, err, out)
	}
	return out
}

// describedPartitions parses TopicCommand --describe: the PartitionCount of
// the summary line, the partitions listed with a leader, and the Configs.
func describedPartitions(t *testing.T, out, topic string) (count int, withLeader []int, configs string) {
	t.Helper()
	count = -1
	for _, line := range strings.Split(out, "\n") {
		fields := map[string]string{}
		for _, f := range strings.Split(strings.TrimSpace(line), "\t") {
			if k, v, ok := strings.Cut(f, ": "); ok {
				fields[k] = v
			} else if k, ok := strings.CutSuffix(f, ":"); ok {
				fields[k] = ""
			}
		}
		if fields["Topic"] != topic {
			continue
		}
		if pc, ok := fields["PartitionCount"]; ok {
			n, err := strconv.Atoi(pc)
			if err != nil {
				t.Fatalf("PartitionCount %q: %v", pc, err)
			}
			count, configs = n, fields["Configs"]
		}
		if ps, ok := fields["Partition"]; ok {
			p, err := strconv.Atoi(ps)
			if err != nil {
				t.Fatalf("Partition %q: %v", ps, err)
			}
			if l := fields["Leader"]; l != "" && l != "none" && l != "-1" {
				withLeader = append(withLeader, p)
			}
		}
	}
	slices.Sort(withLeader)
	return count, withLeader, configs
}

// directPartitions is the partition count of topic as the broker reports it
// directly, or -1 when the topic does not exist.
func directPartitions(t *testing.T, c *kafkatest.Cluster, topic string) int {
	t.Helper()
	md, err := directAdmin(t, c).Metadata(testCtx(t, 20*time.Second), topic)
	if err != nil {
		t.Fatalf("direct metadata: %v", err)
	}
	td, ok := md.Topics[topic]
	if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
		return -1
	}
	if td.Err != nil {
		t.Fatalf("direct metadata of %s: %v", topic, td.Err)
	}
	return len(td.Partitions)
}

// waitGone waits until the broker no longer knows topic.
func waitGone(t *testing.T, c *kafkatest.Cluster, topic string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for directPartitions(t, c, topic) != -1 {
		if time.Now().After(deadline) {
			t.Fatalf("topic %s still exists 30s after deletion", topic)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func directConfig(t *testing.T, c *kafkatest.Cluster, topic, key string) string {
	t.Helper()
	rcs, err := directAdmin(t, c).DescribeTopicConfigs(testCtx(t, 20*time.Second), topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		t.Fatalf("describe configs of %s: %v", topic, err)
	}
	for _, cfg := range rc.Configs {
		if cfg.Key == key {
			return cfg.MaybeValue()
		}
	}
	return ""
}

// eventually polls check for up to 30s: KRaft applies a change on the
// broker shortly after the controller acknowledged it, so a read right after
// a create or alter may still see the old state. check returns whether the
// state is as wanted and what it saw.
func eventually(t *testing.T, what string, check func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, saw := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: still %s after 30s", what, saw)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitDirectPartitions checks that the broker reports n partitions for
// topic, waiting for the metadata to propagate.
func waitDirectPartitions(t *testing.T, c *kafkatest.Cluster, topic string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("broker partition count of %s, want %d", topic, n), func() (bool, string) {
		got := directPartitions(t, c, topic)
		return got == n, fmt.Sprintf("%d", got)
	})
}

// waitDirectConfig checks that the broker reports key=want for topic,
// waiting for the change to propagate.
func waitDirectConfig(t *testing.T, c *kafkatest.Cluster, topic, key, want string) {
	t.Helper()
	eventually(t, fmt.Sprintf("broker config %s of %s, want %q", key, topic, want), func() (bool, string) {
		got := directConfig(t, c, topic, key)
		return got == want, fmt.Sprintf("%q", got)
	})
}

// TestTopicCommand: Kafka's TopicCommand (the Java admin client) through the
// bootstrap creates a topic with 5 partitions and a config, describes it
// (PartitionCount 5, a leader for each partition, the config), lists it,
// refuses to create it twice and to describe a missing topic, adds
// partitions (8), and deletes it; each step is checked directly on the
// broker.
func TestTopicCommand(t *testing.T) {
	c := cluster(t)
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")

	out := mustTopicTool(t, boot, "--create", "--topic", topic, "--partitions", "5", "--replication-factor", "1",
		"--config", "retention.ms=3600000")
	if !strings.Contains(out, "Created topic "+topic+".") {
		t.Errorf("--create output: %q", out)
	}
	waitDirectPartitions(t, c, topic, 5)
	waitDirectConfig(t, c, topic, "retention.ms", "3600000")
	waitTopic(t, testCtx(t, 30*time.Second), directAdmin(t, c), topic, 5)

	out = mustTopicTool(t, boot, "--describe", "--topic", topic)
	n, led, cfgs := describedPartitions(t, out, topic)
	if n != 5 || !slices.Equal(led, []int{0, 1, 2, 3, 4}) {
		t.Errorf("--describe: PartitionCount %d, partitions with a leader %v; want 5 and 0..4:\n%s", n, led, out)
	}
	if !strings.Contains(cfgs, "retention.ms=3600000") {
		t.Errorf("--describe: Configs %q lack retention.ms=3600000", cfgs)
	}

	if out := mustTopicTool(t, boot, "--list"); !slices.Contains(strings.Fields(out), topic) {
		t.Errorf("--list does not list %s:\n%s", topic, out)
	}

	out, err := topicTool(t, boot, "--create", "--topic", topic, "--partitions", "1", "--replication-factor", "1")
	if err == nil || !strings.Contains(out, "Topic '"+topic+"' already exists.") {
		t.Errorf("second --create: err %v, output %q; want a failure saying the topic already exists", err, out)
	}
	missing := topic + "-missing"
	out, err = topicTool(t, boot, "--describe", "--topic", missing)
	if err == nil || !strings.Contains(out, "Topic '"+missing+"' does not exist") {
		t.Errorf("--describe of a missing topic: err %v, output %q; want a failure saying it does not exist", err, out)
	}

	mustTopicTool(t, boot, "--alter", "--topic", topic, "--partitions", "8")
	waitDirectPartitions(t, c, topic, 8)
	waitTopic(t, testCtx(t, 30*time.Second), directAdmin(t, c), topic, 8)
	out = mustTopicTool(t, boot, "--describe", "--topic", topic)
	if n, led, _ := describedPartitions(t, out, topic); n != 8 || len(led) != 8 {
		t.Errorf("--describe after --alter: PartitionCount %d, %d partitions with a leader; want 8:\n%s", n, len(led), out)
	}

	mustTopicTool(t, boot, "--delete", "--topic", topic)
	waitGone(t, c, topic)
	if out := mustTopicTool(t, boot, "--list"); slices.Contains(strings.Fields(out), topic) {
		t.Errorf("--list still lists %s after --delete:\n%s", topic, out)
	}
}

// TestKadmTopics: franz-go's kadm through the bootstrap creates a topic (6
// partitions, a config), gets TOPIC_ALREADY_EXISTS on a second create,
// lists and describes it (every partition led, one replica), reads and
// alters its config, adds partitions (9), and deletes it, after which
// the bootstrap reports it unknown; every step is checked directly on the
// broker. It also checks that the brokers the bootstrap advertises are
// reachable and, through the proxy, are not the upstream's addresses.
func TestKadmTopics(t *testing.T) {
	c := cluster(t)
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")
	ctx := testCtx(t, time.Minute)
	cl, err := kgo.NewClient(kgo.SeedBrokers(boot))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)

	brokers, err := adm.ListBrokers(ctx)
	if err != nil || len(brokers) == 0 {
		t.Fatalf("list brokers: %v, %d brokers", err, len(brokers))
	}
	for _, b := range brokers {
		addr := fmt.Sprintf("%s:%d", b.Host, b.Port)
		if viaProxy && addr == c.Bootstrap() {
			t.Errorf("the bootstrap advertises the upstream broker %s", addr)
		}
	}

	cr, err := adm.CreateTopic(ctx, 6, 1, map[string]*string{"retention.ms": kadm.StringPtr("7200000")}, topic)
	if err == nil {
		err = cr.Err
	}
	if err != nil {
		t.Fatalf("create %s: %v", topic, err)
	}
	if cr.NumPartitions != 6 || cr.ReplicationFactor != 1 {
		t.Errorf("create response: %d partitions, replication %d; want 6, 1", cr.NumPartitions, cr.ReplicationFactor)
	}
	waitDirectPartitions(t, c, topic, 6)
	cr, err = adm.CreateTopic(ctx, 6, 1, nil, topic)
	if err == nil {
		err = cr.Err
	}
	if !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Errorf("second create: %v, want TOPIC_ALREADY_EXISTS", err)
	}

	waitTopic(t, ctx, adm, topic, 6) // through the bootstrap
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	td := tds[topic]
	if td.Err != nil || len(td.Partitions) != 6 || td.IsInternal {
		t.Fatalf("list %s: err %v, %d partitions, internal %v", topic, td.Err, len(td.Partitions), td.IsInternal)
	}
	for _, p := range td.Partitions.Sorted() {
		if p.Err != nil || p.Leader < 0 || len(p.Replicas) != 1 || len(p.ISR) != 1 {
			t.Errorf("partition %d: err %v, leader %d, replicas %v, isr %v", p.Partition, p.Err, p.Leader, p.Replicas, p.ISR)
		}
	}

	readConfig := func() string {
		rcs, err := adm.DescribeTopicConfigs(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := rcs.On(topic, nil)
		if err == nil {
			err = rc.Err
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, cfg := range rc.Configs {
			if cfg.Key == "retention.ms" {
				return cfg.MaybeValue()
			}
		}
		return ""
	}
	eventually(t, "retention.ms through the bootstrap, want 7200000", func() (bool, string) {
		v := readConfig()
		return v == "7200000", fmt.Sprintf("%q", v)
	})
	ar, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("1000000")}}, topic)
	if err == nil {
		_, err = ar.On(topic, nil)
	}
	if err != nil {
		t.Fatalf("alter config: %v", err)
	}
	waitDirectConfig(t, c, topic, "retention.ms", "1000000")
	eventually(t, "retention.ms through the bootstrap after the alter, want 1000000", func() (bool, string) {
		v := readConfig()
		return v == "1000000", fmt.Sprintf("%q", v)
	})

	cp, err := adm.CreatePartitions(ctx, 3, topic)
	if err == nil {
		_, err = cp.On(topic, nil)
	}
	if err != nil {
		t.Fatalf("create partitions: %v", err)
	}
	waitDirectPartitions(t, c, topic, 9)
	waitTopic(t, ctx, adm, topic, 9)

	dr, err := adm.DeleteTopic(ctx, topic)
	if err == nil {
		err = dr.Err
	}
	if err != nil {
		t.Fatalf("delete %s: %v", topic, err)
	}
	waitGone(t, c, topic)
	deadline := time.Now().Add(30 * time.Second)
	for {
		tds, err := adm.ListTopics(ctx, topic)
		if err == nil && (!tds.Has(topic) || errors.Is(tds[topic].Err, kerr.UnknownTopicOrPartition)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the bootstrap still reports %s 30s after deletion (err %v)", topic, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
