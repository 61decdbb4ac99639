package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/faultrow"
	"github.com/kmigrate/kmigrate/internal/proxytest"
)

// TestTopicCutoverTwoNodes flips a topic whose producer talks to one node
// while the flip is asked of another: the flip must hold produces on every
// node and wait for those each node has in flight (GET /v1/gate), or a
// record written to the source after the flip point would be lost. The
// group reads through the first node, and moves too.
func TestTopicCutoverTwoNodes(t *testing.T) {
	row := faultrow.New(t, "topic flip asked of one node, producer on another (2 nodes; group flip, topic flip, rollback, flip)")
	src, dst := cluster(t), target.Get(t)
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	common := []string{"--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(), "--topics", topic}
	v1 := proxytest.Start(t, append(common, "--data-dir", t.TempDir())...)
	s1 := proxytest.Start(t, append(common, "--data-dir", t.TempDir(), "--join", v1.Admin)...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// The topic appears once both nodes are members, so that the leader
	// spreads its partitions over both writers: the flip, asked of v1,
	// then waits on a map s1 writes.
	waitFor(t, ctx, "both nodes in the control plane", func() bool {
		out, err := v1.CLI(t, "status", "--json")
		return err == nil && strings.Count(out, `"raft_addr"`) >= 2
	})
	createTopicOn(t, src.Bootstrap(), topic, 3)

	prod := newSeqProducer(t, ctx, s1.Addr, topic, 0) // through the second node
	defer prod.stop()
	cons := newSeqConsumer(t, ctx, v1.Addr, topic, group)
	defer cons.stop()
	waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
		_, err := v1.CLI(t, "verify", "--topic", topic, "--records", "0")
		return err == nil && cons.count() > 1000
	})
	// Which node writes which partition: the test means most when both do.
	var status struct {
		Topics []struct {
			Topic      string
			Partitions []struct{ Writer string }
		}
	}
	out, err := v1.CLI(t, "status", "--json")
	if err != nil || json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &status) != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	writers := map[string]int{}
	for _, tp := range status.Topics {
		for _, p := range tp.Partitions {
			writers[p.Writer]++
		}
	}
	t.Logf("mirror writers (node → partitions): %v", writers)
	var longest time.Duration
	for _, step := range [][]string{{"cutover", "group", group}, {"cutover", "topic", topic}, {"rollback", "topic", topic}, {"cutover", "topic", topic}} {
		start := time.Now()
		out, err := v1.CLI(t, step...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", step, err, out)
		}
		took := time.Since(start)
		n, p := cons.count(), prod.acked()
		waitFor(t, ctx, "produce and consume after "+strings.Join(step, " "), func() bool { return cons.count() > n+1000 && prod.acked() > p+1000 })
		pause, _ := prod.pauseAround(start, took)
		longest = max(longest, pause)
		t.Logf("%s: %s; producer pause %s", strings.Join(step, " "), strings.TrimSpace(out), pause.Round(time.Millisecond))
	}
	sent := prod.stop()
	waitFor(t, ctx, "every record consumed", func() bool { return cons.count() >= sent })
	time.Sleep(time.Second)
	got, afterCommit := cons.stop()
	lost, dup, reordered := countDeliveries(got, sent)
	t.Logf("%d records, %d deliveries: lost %d, delivered again after a commit %d, duplicated %d, reordered %d; produce errors %d",
		sent, len(got), lost, afterCommit, dup, reordered, prod.errors())
	if dup != 0 {
		logDuplicates(t, got)
	}
	row.Recovered(longest, "longest producer pause over the four flips")
	row.Outcome("every flip completed; %d records: %d lost, %d duplicated, %d reordered, %d again after a commit; writers %v", sent, lost, dup, reordered, afterCommit, writers)
	if lost != 0 || afterCommit != 0 || dup != 0 || reordered != 0 || prod.errors() != 0 {
		t.Fatalf("lost %d, delivered again after a commit %d, duplicated %d, reordered %d, produce errors %d: want all 0", lost, afterCommit, dup, reordered, prod.errors())
	}
}

// TestTopicFlipNodeKilledMidFlip: the node running a topic flip dies (kill
// -9) while the flip holds produces. The raft leader, another node, reverts
// the half-done flip after --stuck-flip-after, the produces it held go to
// the source, and a new flip asked of the survivor completes. Nothing is
// lost, duplicated or reordered.
func TestTopicFlipNodeKilledMidFlip(t *testing.T) {
	row := faultrow.New(t, "node running a topic flip killed (kill -9) while it holds produces (2 nodes)")
	src, dst := cluster(t), target.Get(t)
	topic, group := uniqueName(t, "topic"), uniqueName(t, "group")
	createTopicOn(t, src.Bootstrap(), topic, 3)
	common := []string{"--log-level", "info", "--source-bootstrap", src.Bootstrap(), "--target-bootstrap", dst.Bootstrap(),
		"--topics", topic, "--stuck-flip-after", "3s"}
	v1 := proxytest.Start(t, append(common, "--data-dir", t.TempDir())...)
	s1 := proxytest.Start(t, append(common, "--data-dir", t.TempDir(), "--join", v1.Admin)...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	prod := newSeqProducer(t, ctx, v1.Addr, topic, 0)
	defer prod.stop()
	cons := newSeqConsumer(t, ctx, v1.Addr, topic, group)
	defer cons.stop()
	waitFor(t, ctx, "the mirror to map the topic (kmigrate verify passes)", func() bool {
		_, err := v1.CLI(t, "verify", "--topic", topic, "--records", "0")
		return err == nil && cons.count() > 1000
	})

	// The flip runs on s1; s1 dies as soon as produces are held.
	flipDone := make(chan string, 1)
	go func() {
		out, err := s1.CLI(t, "cutover", "topic", topic)
		flipDone <- fmt.Sprintf("%v %s", err, out)
	}()
	primary := func() string {
		var r struct{ Primary string }
		if err := getAdminJSON(v1.Admin, "/v1/topics/"+topic, &r); err != nil {
			return ""
		}
		return r.Primary
	}
	waitFor(t, ctx, "the flip to hold produces", func() bool { return primary() == "draining" })
	held := time.Now()
	s1.Kill9()
	t.Logf("node running the flip killed while it held produces; the flip said: %s", strings.TrimSpace(<-flipDone))
	waitFor(t, ctx, "the leader to revert the half-done flip", func() bool { return primary() == "source" })
	reverted := time.Since(held)
	row.Recovered(reverted, "the raft leader reverted the flip after the hold began; --stuck-flip-after 3s")
	n, p := cons.count(), prod.acked()
	waitFor(t, ctx, "produce and consume after the revert", func() bool { return cons.count() > n+1000 && prod.acked() > p+1000 })

	out, err := v1.CLI(t, "cutover", "topic", topic)
	if err != nil {
		t.Fatalf("a new flip on the survivor: %v\n%s", err, out)
	}
	n, p = cons.count(), prod.acked()
	waitFor(t, ctx, "produce and consume after the new flip", func() bool { return cons.count() > n+1000 && prod.acked() > p+1000 })

	sent := prod.stop()
	waitFor(t, ctx, "every record consumed", func() bool { return cons.count() >= sent })
	time.Sleep(time.Second)
	got, afterCommit := cons.stop()
	lost, dup, reordered := countDeliveries(got, sent)
	t.Logf("flip reverted %s after produces were held; then %s; %d records: lost %d, delivered again after a commit %d, duplicated %d, reordered %d; produce errors %d",
		reverted.Round(time.Millisecond), strings.TrimSpace(out), sent, lost, afterCommit, dup, reordered, prod.errors())
	row.Outcome("flip reverted, a new flip on the survivor completed; %d records: %d lost, %d duplicated, %d reordered, %d produce errors", sent, lost, dup, reordered, prod.errors())
	if lost != 0 || afterCommit != 0 || dup != 0 || reordered != 0 || prod.errors() != 0 {
		t.Fatalf("lost %d, delivered again after a commit %d, duplicated %d, reordered %d, produce errors %d: want all 0", lost, afterCommit, dup, reordered, prod.errors())
	}
}

func getAdminJSON(admin, path string, v any) error {
	resp, err := http.Get("http://" + admin + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
