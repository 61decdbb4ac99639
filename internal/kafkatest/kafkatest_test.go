package kafkatest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// shared is the package-wide cluster for tests that only read and write
// data; the tests that restart brokers start their own.
var shared = kafkatest.NewShared(kafkatest.Options{Name: "shared"})

func TestMain(m *testing.M) { os.Exit(kafkatest.RunMain(m)) }

// produceConsume writes n records to topic through cl, reads them back with a
// fresh client (from the start of the topic) and checks they are equal and
// in order.
func produceConsume(t *testing.T, c *kafkatest.Cluster, topic string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	prod, err := c.Client(kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	want := make([]string, n)
	recs := make([]*kgo.Record, n)
	for i := range n {
		want[i] = fmt.Sprintf("%s-%03d", c.Name(), i)
		recs[i] = &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: []byte(want[i])}
	}
	if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("%s: produce: %v", c.Name(), err)
	}

	cons, err := c.Client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	var got []string
	for len(got) < n {
		fs := cons.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("%s: consumed %d of %d records before %v", c.Name(), len(got), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Errorf("%s: fetch %s/%d: %v", c.Name(), topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s: consumed records differ from produced:\n got %q\nwant %q", c.Name(), got, want)
	}
}

// TestTwoClustersRestart runs a source and a target cluster side by side,
// checks each round-trips records independently, then restarts one and
// checks the old data survived and new data flows.
func TestTwoClustersRestart(t *testing.T) {
	var (
		wg       sync.WaitGroup
		src, dst *kafkatest.Cluster
	)
	// Start both at once: this is how migration tests will use the harness.
	wg.Go(func() { src = kafkatest.StartT(t, kafkatest.Options{Name: "source"}) })
	wg.Go(func() { dst = kafkatest.StartT(t, kafkatest.Options{Name: "target"}) })
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("startup: source %v, target %v", src.StartupTime(), dst.StartupTime())
	if src.Bootstrap() == dst.Bootstrap() {
		t.Fatalf("clusters share an address: %s", src.Bootstrap())
	}

	produceConsume(t, src, "orders", 100)
	produceConsume(t, dst, "orders", 100)

	// Each cluster must hold only its own records.
	for _, c := range []*kafkatest.Cluster{src, dst} {
		adm := newAdmin(t, c)
		offs, err := adm.ListEndOffsets(context.Background(), "orders")
		if err != nil {
			t.Fatalf("%s: list end offsets: %v", c.Name(), err)
		}
		if o, _ := offs.Lookup("orders", 0); o.Offset != 100 {
			t.Fatalf("%s: end offset of orders/0 = %d, want 100", c.Name(), o.Offset)
		}
	}

	addr := dst.Bootstrap()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := dst.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart (graceful) of target took %v", dst.StartupTime())
	if dst.Bootstrap() != addr {
		t.Fatalf("restart moved the broker from %s to %s", addr, dst.Bootstrap())
	}
	// The topic now holds the 100 old records plus 100 new ones.
	produceConsumeAfter(t, dst, "orders", 100, 100)

	// A crash (SIGKILL) followed by a restart also keeps acknowledged data.
	dst.Kill()
	if dst.Running() {
		t.Fatal("broker still running after Kill")
	}
	if err := dst.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart after kill of target took %v", dst.StartupTime())
	produceConsumeAfter(t, dst, "orders", 200, 50)
}

// produceConsumeAfter produces n more records to a topic already holding
// have records and checks the whole topic reads back with the right count
// and the new records last.
func produceConsumeAfter(t *testing.T, c *kafkatest.Cluster, topic string, have, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl, err := c.Client(kgo.DefaultProduceTopic(topic), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range n {
		r := &kgo.Record{Value: []byte(fmt.Sprintf("after-%03d", i))}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("%s: produce after restart: %v", c.Name(), err)
		}
	}
	var got []string
	for len(got) < have+n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("%s: consumed %d of %d records before %v", c.Name(), len(got), have+n, err)
		}
		fs.EachRecord(func(r *kgo.Record) { got = append(got, string(r.Value)) })
	}
	if len(got) != have+n || got[have] != "after-000" || got[len(got)-1] != fmt.Sprintf("after-%03d", n-1) {
		t.Fatalf("%s: read %d records (want %d); first new %q, last %q", c.Name(), len(got), have+n, got[have], got[len(got)-1])
	}
}

func newAdmin(t *testing.T, c *kafkatest.Cluster) *kadm.Client {
	t.Helper()
	cl, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// TestSASL checks that every mechanism authenticates a known user over
// SASL_PLAINTEXT and that a wrong password is rejected.
func TestSASL(t *testing.T) {
	alice := kafkatest.User{Name: "alice", Password: "alice-secret"}
	c := kafkatest.StartT(t, kafkatest.Options{Name: "sasl", SASL: true, Users: []kafkatest.User{alice, kafkatest.DefaultUser}})

	for _, mech := range []string{kafkatest.MechScramSHA256, kafkatest.MechScramSHA512, kafkatest.MechPlain} {
		t.Run(mech, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			topic := "sasl-" + strings.ToLower(mech)
			cl, err := c.SASLClient(mech, alice, kgo.DefaultProduceTopic(topic))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("hello")}).FirstErr(); err != nil {
				t.Fatalf("produce as alice: %v", err)
			}

			bad, err := c.SASLClient(mech, kafkatest.User{Name: "alice", Password: "wrong"},
				kgo.RequestRetries(0), kgo.RetryTimeout(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer bad.Close()
			_, err = kadm.NewClient(bad).BrokerMetadata(ctx)
			if !errors.Is(err, kerr.SaslAuthenticationFailed) {
				t.Fatalf("wrong password: got error %v, want SASL_AUTHENTICATION_FAILED", err)
			}
		})
	}
}

// TestTLS checks the SSL and SASL_SSL listeners with the generated CA.
func TestTLS(t *testing.T) {
	c := kafkatest.StartT(t, kafkatest.Options{Name: "tls", TLS: true, SASL: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cl, err := c.Client(kgo.SeedBrokers(c.Addr(kafkatest.SSL)), kgo.DialTLSConfig(c.TLSConfig()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "tls", Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("produce over SSL: %v", err)
	}

	mech, err := kafkatest.SASLMechanism(kafkatest.MechScramSHA512, c.Users()[0])
	if err != nil {
		t.Fatal(err)
	}
	scl, err := c.Client(kgo.SeedBrokers(c.Addr(kafkatest.SASLSSL)), kgo.DialTLSConfig(c.TLSConfig()), kgo.SASL(mech))
	if err != nil {
		t.Fatal(err)
	}
	defer scl.Close()
	if err := scl.ProduceSync(ctx, &kgo.Record{Topic: "tls", Value: []byte("y")}).FirstErr(); err != nil {
		t.Fatalf("produce over SASL_SSL: %v", err)
	}

	// Kafka's own CLI over SASL_SSL, configured by ClientConfig.
	cfg, err := c.ClientConfig(kafkatest.SASLSSL, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := kafkatest.Tool(ctx, kafkatest.MainTopicCommand,
		"--bootstrap-server", c.Addr(kafkatest.SASLSSL), "--command-config", cfg, "--list")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(out), "tls") {
		t.Fatalf("TopicCommand --list over SASL_SSL = %q, want it to list tls", out)
	}
}

// TestTools runs Kafka's CLI tools from the same jars against the shared
// cluster: TopicCommand, the console producer and consumer.
func TestTools(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	if _, stderr, err := kafkatest.Tool(ctx, kafkatest.MainTopicCommand, "--bootstrap-server", c.Bootstrap(),
		"--create", "--topic", "cli-topic", "--partitions", "3"); err != nil {
		t.Fatalf("create: %v\n%s", err, stderr)
	}
	out, _, err := kafkatest.Tool(ctx, kafkatest.MainTopicCommand, "--bootstrap-server", c.Bootstrap(), "--list")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(out), "cli-topic") {
		t.Fatalf("TopicCommand --list = %q, want it to list cli-topic", out)
	}

	in := strings.NewReader("one\ntwo\nthree\n")
	if _, _, err := kafkatest.ToolStdin(ctx, in, kafkatest.MainConsoleProducer,
		"--bootstrap-server", c.Bootstrap(), "--topic", "cli-topic"); err != nil {
		t.Fatal(err)
	}

	// Stream the console consumer's output as it comes.
	cmd, err := kafkatest.ToolCmd(ctx, kafkatest.MainConsoleConsumer, "--bootstrap-server", c.Bootstrap(),
		"--topic", "cli-topic", "--from-beginning", "--max-messages", "3")
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var got []string
	buf := make([]byte, 4096)
	var acc strings.Builder
	for {
		n, err := stdout.Read(buf)
		acc.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("console consumer: %v", err)
	}
	got = strings.Fields(acc.String())
	slices.Sort(got) // three partitions: no global order
	if want := []string{"one", "three", "two"}; !slices.Equal(got, want) {
		t.Fatalf("console consumer read %q, want %q", got, want)
	}
}

// TestSharedRoundTrip uses the shared cluster with franz-go.
func TestSharedRoundTrip(t *testing.T) {
	produceConsume(t, shared.Get(t), "shared-roundtrip", 100)
}

// TestStartFailures checks that a broker that cannot start says why: a bad
// value is caught by kafka-storage format, a bad listener setup by the
// broker itself, whose log tail must be in the error.
func TestStartFailures(t *testing.T) {
	_, err := kafkatest.Start(context.Background(), kafkatest.Options{
		Name:         "badvalue",
		BrokerConfig: map[string]string{"num.io.threads": "not-a-number"},
	})
	if err == nil || !strings.Contains(err.Error(), "num.io.threads") {
		t.Fatalf("invalid config value: want an error naming num.io.threads, got:\n%v", err)
	}

	// GSSAPI without any Kerberos/JAAS setup passes format but makes the
	// broker fail when it builds the SASL listener.
	_, err = kafkatest.Start(context.Background(), kafkatest.Options{
		Name:         "nojaas",
		SASL:         true,
		BrokerConfig: map[string]string{"sasl.enabled.mechanisms": "GSSAPI"},
		StartTimeout: 60 * time.Second,
	})
	if err == nil || !strings.Contains(err.Error(), "broker log tail") {
		t.Fatalf("broken broker: want an error with the broker log tail, got:\n%v", err)
	}
	t.Logf("expected error: %v", err)
}

// TestPerfTools runs the benchmark tools (full-JIT JVMs) and the consumer
// group command against the shared cluster.
func TestPerfTools(t *testing.T) {
	c := shared.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	out, _, err := kafkatest.Tool(ctx, kafkatest.MainProducerPerf, "--topic", "perf",
		"--num-records", "5000", "--record-size", "100", "--throughput", "-1",
		"--producer-props", "bootstrap.servers="+c.Bootstrap(), "acks=all")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "5000 records sent") {
		t.Fatalf("ProducerPerformance output lacks the summary:\n%s", out)
	}

	out, _, err = kafkatest.Tool(ctx, kafkatest.MainConsumerPerf, "--bootstrap-server", c.Bootstrap(),
		"--topic", "perf", "--messages", "5000", "--group", "perf-group")
	if err != nil {
		t.Fatal(err)
	}
	// One header line and one CSV data line: start.time, end.time,
	// data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, ...
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if fields := strings.Split(lines[len(lines)-1], ", "); len(fields) < 5 || fields[4] != "5000" {
		t.Fatalf("ConsumerPerformance did not report 5000 messages:\n%s", out)
	}

	out, _, err = kafkatest.Tool(ctx, kafkatest.MainConsumerGroups, "--bootstrap-server", c.Bootstrap(), "--list")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(strings.Fields(out), "perf-group") {
		t.Fatalf("ConsumerGroupCommand --list = %q, want perf-group", out)
	}
}
