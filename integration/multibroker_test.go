package integration

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// TestMultiBrokerUpstream: the upstream is a real three-broker Kafka
// cluster, so a 6-partition topic has leaders on three brokers while the
// proxy presents one. Every produce of the franz-go idempotent producer
// names partitions of all three and must be split by leader and its answers
// merged; every fetch fans out the same way. Halfway through, partition 0
// is reassigned to another broker while the producer keeps producing, so
// its leader moves under the proxy. Then:
//
//   - a direct read of the topic equals the acknowledgements record by
//     record (partition, offset, key, value, headers, timestamp);
//   - a franz-go group consumer, Kafka's console consumer (the Java client)
//     and kcat (librdkafka, assign mode), all through the bootstrap, read
//     exactly those records: 0 lost, 0 duplicated, 0 reordered.
func TestMultiBrokerUpstream(t *testing.T) {
	c := kafkatest.StartT(t, kafkatest.Options{Name: "multi", Brokers: 3})
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")
	createTopic(t, c, topic, 6)
	adm := directAdmin(t, c)
	ctx := testCtx(t, 3*time.Minute)

	leaders := partitionLeaders(t, ctx, adm, topic)
	if distinct := distinctValues(leaders); len(distinct) != 3 {
		t.Fatalf("partition leaders %v span brokers %v, want 3 (the test needs produces split three ways)", leaders, distinct)
	}
	t.Logf("partition leaders: %v", leaders)

	prod, err := kgo.NewClient(
		kgo.SeedBrokers(boot),
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.RecordDeliveryTimeout(90*time.Second),
		kgo.ClientID("interop-multibroker-producer"),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const perPhase = 4000
	phase := func(n int) []*kgo.Record {
		recs := make([]*kgo.Record, perPhase)
		for i := range recs {
			recs[i] = franzRecord(n*perPhase+i, "multi")
		}
		return recs
	}
	produced := produceAll(t, ctx, prod, phase(0))

	// Partition 0 moves to the next broker while the producer keeps going,
	// 200 records at a time, until the move is done.
	from := leaders[0]
	to := from%3 + 1
	type phaseResult struct {
		acked   []Record
		batches int
		err     error
	}
	stopMoving := make(chan struct{})
	moving := make(chan phaseResult, 1)
	go func() {
		var res phaseResult
		defer func() { moving <- res }()
		for ; ; res.batches++ {
			select {
			case <-stopMoving:
				return
			default:
			}
			batch := make([]*kgo.Record, 200)
			for j := range batch {
				batch[j] = franzRecord(res.batches*200+j, "multi-move")
			}
			results := prod.ProduceSync(ctx, batch...)
			if res.err = results.FirstErr(); res.err != nil {
				return
			}
			for _, r := range results {
				res.acked = append(res.acked, producedRecord(r.Record))
			}
		}
	}()
	var move kadm.AlterPartitionAssignmentsReq
	move.Assign(topic, 0, []int32{to})
	resps, err := adm.AlterPartitionAssignments(ctx, move)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		close(stopMoving)
		<-moving
		t.Fatalf("reassign %s[0] from broker %d to %d: %v", topic, from, to, err)
	}
	began := time.Now()
	for partitionLeaders(t, ctx, adm, topic)[0] != to {
		if ctx.Err() != nil {
			t.Fatalf("%s[0] still not led by broker %d: %v", topic, to, ctx.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
	moved := time.Since(began)
	close(stopMoving)
	during := <-moving
	if during.err != nil {
		t.Fatalf("produce while %s[0] moved: %v", topic, during.err)
	}
	t.Logf("%s[0] moved from broker %d to %d in %v; %d records in %d batches acknowledged meanwhile",
		topic, from, to, moved.Round(time.Millisecond), len(during.acked), during.batches)
	if during.batches < 2 {
		t.Errorf("only %d batches produced while the leader moved: the move did not happen under load", during.batches)
	}
	produced = append(produced, during.acked...)
	produced = append(produced, produceAll(t, ctx, prod, phase(2))...)

	log := readTopic(t, c, topic)
	assertClean(t, "acknowledgements vs direct read of the topic", Compare(produced, log))
	if parts := partitionsUsed(log); len(parts) != 6 {
		t.Errorf("records landed in partitions %v, want all 6 used", parts)
	}

	t.Run("franz-go group", func(t *testing.T) {
		ctx := testCtx(t, 90*time.Second)
		cons, err := kgo.NewClient(
			kgo.SeedBrokers(boot),
			kgo.ConsumerGroup(uniqueName(t, "group")),
			kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchMaxWait(200*time.Millisecond),
			kgo.ClientID("interop-multibroker-consumer"),
		)
		if err != nil {
			t.Fatal(err)
		}
		defer cons.Close()
		consumed := pollUntil(t, ctx, cons, len(log), time.Second)
		assertClean(t, "direct read vs franz-go group consumer", Compare(log, consumed))
	})

	t.Run("java console consumer", func(t *testing.T) {
		ctx := testCtx(t, 2*time.Minute)
		stdout, stderr, err := kafkatest.Tool(ctx, kafkatest.MainConsoleConsumer,
			"--bootstrap-server", boot, "--topic", topic,
			"--group", uniqueName(t, "group"), "--from-beginning",
			"--max-messages", strconv.Itoa(len(log)),
			"--timeout-ms", "30000",
			"--property", "print.timestamp=true",
			"--property", "print.partition=true",
			"--property", "print.offset=true",
			"--property", "print.headers=true",
			"--property", "print.key=true",
			"--property", "null.literal="+consoleNull,
		)
		if err != nil {
			t.Fatalf("ConsoleConsumer: %v\n%s", err, tail(stderr, 2000))
		}
		consumed, err := parseConsoleOutput(topic, stdout)
		if err != nil {
			t.Fatalf("ConsoleConsumer output: %v", err)
		}
		if len(consumed) != len(log) {
			t.Errorf("ConsoleConsumer printed %d records, want %d", len(consumed), len(log))
		}
		assertClean(t, "direct read vs Java ConsoleConsumer", Compare(log, consumed))
	})

	t.Run("kcat assign", func(t *testing.T) {
		kcat, err := kafkatest.Kcat()
		if err != nil {
			t.Fatal(err)
		}
		ctx := testCtx(t, 90*time.Second)
		out, _ := runKcat(t, ctx, kcat, nil, "-b", boot, "-C", "-t", topic, "-o", "beginning", "-e", "-f", kcatFormat)
		consumed, err := parseKcat(out)
		if err != nil {
			t.Fatalf("kcat -C output: %v", err)
		}
		if len(consumed) != len(log) {
			t.Errorf("kcat -C printed %d records, want %d", len(consumed), len(log))
		}
		assertClean(t, "direct read vs kcat -C -e", Compare(log, consumed))
	})
}

// partitionLeaders asks the cluster itself which broker leads each
// partition of topic.
func partitionLeaders(t *testing.T, ctx context.Context, adm *kadm.Client, topic string) map[int32]int32 {
	t.Helper()
	tds, err := adm.ListTopics(ctx, topic)
	if err != nil {
		t.Fatalf("list %s: %v", topic, err)
	}
	td, ok := tds[topic]
	if !ok || td.Err != nil {
		t.Fatalf("list %s: %v", topic, td.Err)
	}
	leaders := make(map[int32]int32, len(td.Partitions))
	for p, pd := range td.Partitions {
		leaders[p] = pd.Leader
	}
	return leaders
}

// distinctValues lists a map's distinct values, sorted, for messages.
func distinctValues(m map[int32]int32) []string {
	var vs []string
	for _, v := range m {
		s := strconv.Itoa(int(v))
		if !slices.Contains(vs, s) {
			vs = append(vs, s)
		}
	}
	slices.Sort(vs)
	return vs
}

// TestMultiBrokerIdlePartitions: records go only to the partitions one
// broker leads; the other brokers' partitions stay idle, so their
// sub-fetches long-poll for the consumer's whole max wait (5 s here). A
// broker answers as soon as min bytes are there, and so must the proxy:
// small fetches (64 KiB per partition) read 2,000 records of 1 KiB in some
// 16 fetches, none of whose answers may wait out the max wait. Waiting for
// every sub-fetch, as the proxy once did, made each of them take 5 s.
func TestMultiBrokerIdlePartitions(t *testing.T) {
	c := kafkatest.StartT(t, kafkatest.Options{Name: "multi-idle", Brokers: 3})
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")
	createTopic(t, c, topic, 6)
	adm := directAdmin(t, c)
	ctx := testCtx(t, 2*time.Minute)
	leaders := partitionLeaders(t, ctx, adm, topic)
	busy := leaders[0]
	var busyParts []int32
	for p, l := range leaders {
		if l == busy {
			busyParts = append(busyParts, p)
		}
	}
	slices.Sort(busyParts)
	if len(busyParts) == len(leaders) {
		t.Fatalf("broker %d leads every partition (%v): no idle broker", busy, leaders)
	}

	prod, err := kgo.NewClient(
		kgo.SeedBrokers(c.Bootstrap()),
		kgo.DefaultProduceTopic(topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.ProducerBatchMaxBytes(16<<10), // batches below the fetch's partition limit
		kgo.ProducerBatchCompression(kgo.NoCompression()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	const n = 2000
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = franzRecord(i, "idle")
		recs[i].Value = append(recs[i].Value, make([]byte, 1024)...)
		recs[i].Partition = busyParts[i%len(busyParts)]
	}
	produced := produceAll(t, ctx, prod, recs)
	sortByPartitionOffset(produced)

	const maxWait = 5 * time.Second
	fetches := &fetchTimes{}
	cons, err := kgo.NewClient(
		kgo.SeedBrokers(boot),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(maxWait),
		kgo.FetchMaxPartitionBytes(64<<10),
		kgo.FetchMaxBytes(256<<10),
		kgo.WithHooks(fetches),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	consumed := pollUntil(t, ctx, cons, n, time.Second)
	sortByPartitionOffset(consumed)
	assertClean(t, "acknowledgements vs franz-go consumer through the bootstrap", Compare(produced, consumed))
	withRecords, slowest := fetches.summary()
	t.Logf("%d fetch answers with records; the slowest took %v (max wait %v; idle brokers lead %d of %d partitions)",
		withRecords, slowest.Round(time.Millisecond), maxWait, len(leaders)-len(busyParts), len(leaders))
	if withRecords < 10 {
		t.Errorf("only %d fetch answers with records: fetches too large to show a wait per fetch", withRecords)
	}
	if slowest >= maxWait/2 {
		t.Errorf("a fetch answer with records took %v: it waited for idle brokers' long polls (max wait %v)", slowest, maxWait)
	}
}

// fetchTimes is a franz-go hook timing the client's fetch requests whose
// answers carried records (more than 16 KiB read).
type fetchTimes struct {
	mu          sync.Mutex
	withRecords int
	slowest     time.Duration
}

func (f *fetchTimes) OnBrokerE2E(_ kgo.BrokerMetadata, key int16, e kgo.BrokerE2E) {
	if key != 1 || e.Err() != nil || e.BytesRead < 16<<10 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.withRecords++
	f.slowest = max(f.slowest, e.DurationE2E())
}

func (f *fetchTimes) summary() (int, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.withRecords, f.slowest
}
