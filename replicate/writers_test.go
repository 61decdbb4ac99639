package replicate

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/faultrow"
	"github.com/kmigrate/kmigrate/internal/proxytest"
	"github.com/kmigrate/kmigrate/raftstore"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// writersOf reads the writer assignment from a node's admin API.
func writersOf(admin string) (map[int32]raftstore.WriterOwner, error) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + admin + "/v1/writers")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ws []raftstore.WriterOwner
	if err := json.NewDecoder(resp.Body).Decode(&ws); err != nil {
		return nil, err
	}
	out := map[int32]raftstore.WriterOwner{}
	for _, w := range ws {
		out[w.Partition] = w
	}
	return out, nil
}

// targetEnds is the end offset of each partition of topic on the target.
func targetEnds(t *testing.T, addr, topic string) map[int32]int64 {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := map[int32]int64{}
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return out
	}
	ends.Each(func(o kadm.ListedOffset) { out[o.Partition] = o.Offset })
	return out
}

// TestWriterMovesAfterKill9 runs three voter processes that all mirror;
// raft gives each partition one writer. Killing (SIGKILL) the node that
// writes partitions moves them to the others within 10 s, and the target
// ends up exact: nothing twice, nothing missing, same order.
func TestWriterMovesAfterKill9(t *testing.T) {
	row := faultrow.New(t, "node owning mirror partitions killed (kill -9) while mirroring (3 voters)")
	src, dst := realSource.Get(t), realTarget.Get(t)
	const topic, partitions = "writers", 6
	createTopic(t, src, topic, partitions)
	args := func(id, dataDir string, extra ...string) []string {
		return append([]string{"--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
			"--topics", topic, "--data-dir", dataDir, "--raft-node-id", id, "--raft-voter"}, extra...)
	}
	dirs := map[string]string{"w1": t.TempDir(), "w2": t.TempDir(), "w3": t.TempDir()}
	procs := map[string]*proxytest.Process{}
	procs["w1"] = proxytest.Start(t, args("w1", dirs["w1"])...)
	procs["w2"] = proxytest.Start(t, args("w2", dirs["w2"], "--join", procs["w1"].Admin)...)
	procs["w3"] = proxytest.Start(t, args("w3", dirs["w3"], "--join", procs["w1"].Admin)...)

	prod := startProducer(t, src.Bootstrap(), topic, 1<<30, 4000)
	var owners map[int32]raftstore.WriterOwner
	waitUntil(t, "every partition to have a writer and the mirror to copy", 60*time.Second, func() bool {
		var err error
		owners, err = writersOf(procs["w1"].Admin)
		return err == nil && len(owners) == partitions && endOffsetsSum(t, dst.Bootstrap(), topic) > 5000
	})
	victim := owners[0].Node
	var moved []int32
	for p, w := range owners {
		if w.Node == victim {
			moved = append(moved, p)
		}
	}
	survivor := "w1"
	if victim == "w1" {
		survivor = "w2"
	}
	before := targetEnds(t, dst.Bootstrap(), topic)
	killed := time.Now()
	procs[victim].Kill9()
	delete(procs, victim)

	// The partitions move, and their new writer copies into the target.
	waitUntil(t, "the victim's partitions to be written again", 30*time.Second, func() bool {
		ws, err := writersOf(procs[survivor].Admin)
		if err != nil {
			return false
		}
		ends := targetEnds(t, dst.Bootstrap(), topic)
		for _, p := range moved {
			if ws[p].Node == victim || ws[p].Node == "" || ends[p] <= before[p]+100 {
				return false
			}
		}
		return true
	})
	took := time.Since(killed)
	row.Recovered(took, fmt.Sprintf("%d partitions written again by the others", len(moved)))
	t.Logf("kill -9 of %s (writer of %d partitions): written again by the others after %v", victim, len(moved), took.Round(time.Millisecond))
	if took > 10*time.Second {
		t.Errorf("writers moved after %v, want < 10s", took)
	}

	close(prod.stopCh)
	prod.wait()
	if prod.failed.Load() != 0 {
		t.Fatalf("%d produces failed", prod.failed.Load())
	}
	want := prod.acked.Load()
	waitUntil(t, "the mirror to catch up", 2*time.Minute, func() bool { return endOffsetsSum(t, dst.Bootstrap(), topic) >= want })
	time.Sleep(time.Second) // the last map appends
	for _, p := range procs {
		p.Stop()
	}
	if got := endOffsetsSum(t, dst.Bootstrap(), topic); got != want {
		t.Fatalf("target holds %d records, source %d", got, want)
	}
	checkExactAddrs(t, []string{src.Bootstrap()}, []string{dst.Bootstrap()}, raftDirMaps(t, dirs[survivor]), topic, partitions)
	row.Outcome("partitions moved; %d records, the target equals the source record by record, the map exact", want)
}
