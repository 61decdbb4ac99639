package replicate

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/faultrow"
	"github.com/kmigrate/kmigrate/internal/kafkatest"
	"github.com/kmigrate/kmigrate/internal/proxytest"
	"github.com/twmb/franz-go/pkg/kgo"
)

// producer writes sequence-numbered records to topic through addr until
// stopped, counting acknowledgements.
type producer struct {
	acked  atomic.Int64
	failed atomic.Int64
	stopCh chan struct{}
	done   chan struct{}
}

func startProducer(t *testing.T, addr, topic string, max, perSecond int) *producer {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.ProducerLinger(2*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	p := &producer{stopCh: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		defer cl.Close()
		ctx := context.Background()
		start := time.Now()
		for i := 0; i < max; i++ {
			if perSecond > 0 {
				if ahead := time.Duration(i)*time.Second/time.Duration(perSecond) - time.Since(start); ahead > 0 {
					time.Sleep(ahead)
				}
			}
			select {
			case <-p.stopCh:
				cl.Flush(ctx)
				return
			default:
			}
			cl.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprint(i % 64)), Value: []byte(fmt.Sprintf("%08d-%s", i, pad))}, func(_ *kgo.Record, err error) {
				if err != nil {
					p.failed.Add(1)
				} else {
					p.acked.Add(1)
				}
			})
		}
		cl.Flush(ctx)
	}()
	return p
}

func (p *producer) wait() { <-p.done }

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func endOffsetsSum(t *testing.T, addr, topic string) int64 {
	return targetRecords(t, []string{addr}, topic)
}

// TestKill9WhileMirroring kills the proxy with SIGKILL twice while it mirrors
// what a producer writes at 20,000 records/s; after restarts the target
// holds exactly the source's records: none twice, none missing, same order,
// and the map is exact. (At full speed the producer and the restarted
// mirror could finish the 150,000 records before the second kill, which
// then met an idle mirror and waited for it to grow in vain.)
func TestKill9WhileMirroring(t *testing.T) {
	row := faultrow.New(t, "proxy (the mirror's writer) killed (kill -9) twice while it copies a producer's 20,000 records/s")
	src, dst := realSource.Get(t), realTarget.Get(t)
	topic := "kill9"
	createTopic(t, src, topic, 4)
	dataDir := t.TempDir()
	listen := proxytest.FreeAddr(t)
	args := []string{"--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(), "--topics", topic, "--data-dir", dataDir}

	p := proxytest.StartOn(t, listen, args...)
	const total = 150_000
	prod := startProducer(t, src.Bootstrap(), topic, total, 20_000)
	for kill := 0; kill < 2; kill++ {
		waitUntil(t, "the mirror to be copying", 60*time.Second, func() bool { return endOffsetsSum(t, dst.Bootstrap(), topic) > int64(20_000*(kill+1)) })
		p.Kill9()
		at := endOffsetsSum(t, dst.Bootstrap(), topic)
		t.Logf("kill -9 #%d with %d records in the target", kill+1, at)
		if at >= total {
			t.Fatalf("kill -9 #%d found the mirror done (%d records): it missed the copy", kill+1, at)
		}
		killed := time.Now()
		p = proxytest.StartOn(t, listen, args...)
		waitUntil(t, "the restarted mirror to copy again", 60*time.Second, func() bool { return endOffsetsSum(t, dst.Bootstrap(), topic) > at })
		row.Recovered(time.Since(killed), fmt.Sprintf("kill #%d: restart until the target grows again", kill+1))
	}
	prod.wait()
	if prod.failed.Load() != 0 {
		t.Fatalf("%d produces failed", prod.failed.Load())
	}
	want := prod.acked.Load()
	waitUntil(t, "the mirror to catch up", 2*time.Minute, func() bool { return endOffsetsSum(t, dst.Bootstrap(), topic) >= want })
	p.Stop()
	maps := raftDirMaps(t, dataDir)
	if got := endOffsetsSum(t, dst.Bootstrap(), topic); got != want {
		t.Fatalf("target holds %d records, source %d", got, want)
	}
	checkExactAddrs(t, []string{src.Bootstrap()}, []string{dst.Bootstrap()}, maps, topic, 4)
	row.Outcome("restarts resume from the offset map: %d records, the target equals the source record by record, the map exact", want)
}

// TestTargetOutage stops the target for 30 s while clients produce through
// the proxy: the proxy keeps serving, the mirror's lag grows, then drains to
// zero after the target returns, with nothing lost or doubled.
func TestTargetOutage(t *testing.T) {
	row := faultrow.New(t, "target broker stopped for 30 s while clients produce through the proxy")
	src := realSource.Get(t)
	dst := kafkatest.StartT(t, kafkatest.Options{Name: "target-outage"})
	topic := "outage"
	createTopic(t, src, topic, 3)
	dataDir := t.TempDir()
	listen := proxytest.FreeAddr(t)
	p := proxytest.StartOn(t, listen, "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(), "--topics", topic, "--data-dir", dataDir)

	prod := startProducer(t, listen, topic, 1<<30, 5000) // through the proxy
	waitUntil(t, "mirroring to start", 60*time.Second, func() bool { return endOffsetsSum(t, dst.Bootstrap(), topic) > 1000 })
	dst.Stop()
	before := prod.acked.Load()
	time.Sleep(30 * time.Second)
	during := prod.acked.Load() - before
	if err := dst.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Second)
	close(prod.stopCh)
	prod.wait()
	if during < 1000 || prod.failed.Load() != 0 {
		t.Fatalf("while the target was down the proxy acknowledged %d records and failed %d; it must keep serving", during, prod.failed.Load())
	}
	want := prod.acked.Load()
	start := time.Now()
	waitUntil(t, "the mirror to drain", 3*time.Minute, func() bool { return endOffsetsSum(t, dst.Bootstrap(), topic) >= want })
	t.Logf("target down 30 s: %d records acknowledged meanwhile; drained %s after the producer stopped", during, time.Since(start).Round(time.Millisecond))
	row.Recovered(time.Since(start)+5*time.Second, "mirror lag back to 0 after the target's return")
	p.Stop()
	maps := raftDirMaps(t, dataDir)
	checkExactAddrs(t, []string{src.Bootstrap()}, []string{dst.Bootstrap()}, maps, topic, 3)
	row.Outcome("the proxy kept serving (%d records acknowledged while the target was down); the target equals the source, the map exact", during)
}

func createTopic(t *testing.T, c *kafkatest.Cluster, topic string, partitions int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.CreateTopic(ctx, topic, partitions, nil); err != nil {
		t.Fatal(err)
	}
}
