package proxy

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/kmigrate/kmigrate/protocol"
)

func fetchTopic(name string, offsets ...int64) kmsg.FetchRequestTopic {
	t := kmsg.NewFetchRequestTopic()
	t.Topic = name
	for p, off := range offsets {
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = int32(p), off, 1<<20
		t.Partitions = append(t.Partitions, rp)
	}
	return t
}

func TestSameFetch(t *testing.T) {
	a := []kmsg.FetchRequestTopic{fetchTopic("t", 10, 20)}
	if !sameFetch(a, []kmsg.FetchRequestTopic{fetchTopic("t", 10, 20)}) {
		t.Error("identical sub-fetches differ")
	}
	for name, b := range map[string][]kmsg.FetchRequestTopic{
		"offset moved":    {fetchTopic("t", 10, 21)},
		"partition fewer": {fetchTopic("t", 10)},
		"other topic":     {fetchTopic("u", 10, 20)},
		"topic more":      {fetchTopic("t", 10, 20), fetchTopic("u", 0)},
	} {
		if sameFetch(a, b) {
			t.Errorf("%s: sub-fetches reported the same", name)
		}
	}
}

// TestEmptyFetchAnswer: a partition whose sub-fetch is still out is answered
// with no records and the marks its broker gave last, and a sub-fetch is
// backlogged only when it asks from below a known high watermark.
func TestEmptyFetchAnswer(t *testing.T) {
	c := &clientConn{}
	got := kmsg.NewPtrFetchResponse()
	rt := kmsg.NewFetchResponseTopic()
	rt.Topic = "t"
	for p, hw := range []int64{100, 7} {
		rp := kmsg.NewFetchResponseTopicPartition()
		rp.Partition, rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = int32(p), hw, hw-1, 3
		rt.Partitions = append(rt.Partitions, rp)
	}
	got.Topics = append(got.Topics, rt)
	c.rememberMarks([]*kmsg.FetchResponse{got, nil})

	asked := []kmsg.FetchRequestTopic{fetchTopic("t", 100, 7)}
	if !c.marksKnown(asked) || c.marksKnown([]kmsg.FetchRequestTopic{fetchTopic("t", 0, 0, 0)}) {
		t.Fatal("marksKnown: wrong for known and unknown partitions")
	}
	resp := c.emptyFetchAnswer(asked)
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 2 {
		t.Fatalf("empty answer %+v: want topic t with partitions 0 and 1", resp.Topics)
	}
	for i, p := range resp.Topics[0].Partitions {
		want := rt.Partitions[i]
		if p.Partition != want.Partition || p.HighWatermark != want.HighWatermark || p.LastStableOffset != want.LastStableOffset ||
			p.LogStartOffset != want.LogStartOffset || p.ErrorCode != 0 || len(p.RecordBatches) != 0 {
			t.Errorf("partition %d answered %+v, want the marks %+v and no records", i, p, want)
		}
	}
	c.fanout.mu.Lock()
	defer c.fanout.mu.Unlock()
	if c.hasBacklog(asked) {
		t.Error("caught-up sub-fetch reported backlogged")
	}
	if !c.hasBacklog([]kmsg.FetchRequestTopic{fetchTopic("t", 99, 7)}) {
		t.Error("sub-fetch below the high watermark not reported backlogged")
	}
}

// fanoutConn is a client connection of a proxy with a target, routed by
// routing, for the fan-out's unit tests: nothing is dialled, the sub-fetches
// are calls the test answers.
func fanoutConn(routing Routing, maps OffsetMaps) *clientConn {
	p := &Proxy{
		source: &cluster{up: Upstream{Name: "source"}},
		target: &cluster{up: Upstream{Name: "target"}},
		cfg:    Config{Routing: routing, Maps: maps},
	}
	return &clientConn{p: p, log: slog.Default()}
}

const fanoutTestVersion = 12 // the highest Fetch served with a target

// fetchAnswer is a broker's answer for one partition (0) of topic: batch
// (may be nil) and the marks.
func fetchAnswer(topic string, hw, lso, logStart int64, batch []byte) *kmsg.FetchResponse {
	resp := kmsg.NewPtrFetchResponse()
	resp.Version = fanoutTestVersion
	rt := kmsg.NewFetchResponseTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchResponseTopicPartition()
	rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset, rp.RecordBatches = hw, lso, logStart, batch
	rt.Partitions = append(rt.Partitions, rp)
	resp.Topics = append(resp.Topics, rt)
	return resp
}

// recordBatch is a v2 batch of n records from base.
func recordBatch(base int64, n int) []byte {
	b := kmsg.RecordBatch{FirstOffset: base, Magic: 2, LastOffsetDelta: int32(n - 1), NumRecords: int32(n), Records: []byte{}}
	for i := range n {
		r := kmsg.Record{OffsetDelta: int32(i), Value: []byte("v")}
		b.Records = r.AppendTo(b.Records)
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12)) // kmsg leaves Length to the caller
	return out
}

// answeredCall is a sub-fetch its broker answered with resp.
func answeredCall(resp *kmsg.FetchResponse) *call {
	cl := &call{done: make(chan struct{}), body: resp.AppendTo(nil)}
	close(cl.done)
	return cl
}

// outstandingCall is a sub-fetch its broker long-polls.
func outstandingCall() *call { return &call{done: make(chan struct{})} }

// sendFrom hands out the calls of sends, once each, and fails the test
// for a broker with none (a sub-fetch that should have been taken over).
func sendFrom(t *testing.T, sends map[brokerKey]*call) func(brokerKey) (*call, error) {
	return func(b brokerKey) (*call, error) {
		cl, ok := sends[b]
		if !ok {
			t.Fatalf("sub-fetch sent to %s broker %d, want the pending one taken over", b.cluster.up.Name, b.id)
		}
		delete(sends, b)
		return cl, nil
	}
}

func servedNow(c *clientConn, topics ...string) map[string]bool {
	m := make(map[string]bool, len(topics))
	for _, t := range topics {
		m[t] = c.p.servedByTarget(t)
	}
	return m
}

func fanoutRequest() *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.Version, req.MaxWaitMillis, req.MinBytes = fanoutTestVersion, 5000, 1
	return req
}

// TestFanoutFlipWhileSubFetchOut: topic t (source broker b) flips to the
// target while the pending sub-fetch for it, taken over by the client's
// next fetch, long-polls. That fetch must be answered at once, t's
// partition NOT_LEADER_OR_FOLLOWER, and the moved sub-fetch must not stay
// pending; a sub-fetch still pending when its topic moves between two
// fetches is dropped, not reused, even after the topic came back.
func TestFanoutFlipWhileSubFetchOut(t *testing.T) {
	routing := &flippableRouting{}
	routing.primary.Store(primarySource)
	c := fanoutConn(routing, noMaps{})
	a, b := brokerKey{c.p.source, 1}, brokerKey{c.p.source, 2}
	c.rememberMarks([]*kmsg.FetchResponse{fetchAnswer("u", 50, 50, 0, nil), fetchAnswer("t", 70, 70, 0, nil)})
	ctx := t.Context()
	order := []brokerKey{a, b}

	// Fetch 1: a brings records, b long-polls and stays pending.
	longPoll := outstandingCall()
	f1 := &splitFetch{
		split:      map[brokerKey][]kmsg.FetchRequestTopic{a: {fetchTopic("u", 50)}, b: {fetchTopic("t", 70)}},
		order:      order,
		backlogged: []bool{false, false}, servedAtSend: servedNow(c, "t", "u"),
	}
	if err := c.sendSubFetches(f1, sendFrom(t, map[brokerKey]*call{a: answeredCall(fetchAnswer("u", 51, 51, 0, recordBatch(50, 1))), b: longPoll})); err != nil {
		t.Fatal(err)
	}
	resps, err := c.awaitSubFetches(ctx, f1, fanoutRequest(), fanoutTestVersion)
	if err != nil {
		t.Fatal(err)
	}
	if resps[0] == nil || resps[1] != nil || c.fanout.pending[b] == nil {
		t.Fatalf("fetch 1: answers %v, pending %v: want a's answer, b left pending", resps, c.fanout.pending)
	}

	// Fetch 2 asks b the same: it takes the pending sub-fetch over, and t
	// flips while it long-polls.
	f2 := &splitFetch{
		split:      map[brokerKey][]kmsg.FetchRequestTopic{a: {fetchTopic("u", 51)}, b: {fetchTopic("t", 70)}},
		order:      order,
		backlogged: []bool{false, false}, servedAtSend: servedNow(c, "t", "u"),
	}
	if err := c.sendSubFetches(f2, sendFrom(t, map[brokerKey]*call{a: outstandingCall()})); err != nil {
		t.Fatal(err)
	}
	if f2.calls[1] != longPoll {
		t.Fatal("fetch 2 did not take over b's pending sub-fetch though nothing moved")
	}
	time.AfterFunc(100*time.Millisecond, func() { routing.primary.Store(primaryTarget) })
	start := time.Now()
	resps, err = c.awaitSubFetches(ctx, f2, fanoutRequest(), fanoutTestVersion)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took > time.Second {
		t.Errorf("fetch 2 answered %v after it began: it waited for the moved sub-fetch's long poll", took)
	}
	if resps[1] == nil || resps[1].Topics[0].Partitions[0].ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("fetch 2: t's answer %+v, want NOT_LEADER_OR_FOLLOWER", resps[1])
	}
	if resps[0] != nil || c.fanout.pending[a] == nil {
		t.Error("fetch 2: a's long poll (topic u, not moved) was not left pending")
	}
	if c.fanout.pending[b] != nil {
		t.Error("fetch 2: the moved sub-fetch was left pending")
	}
	t.Logf("moved answer after %v", took.Round(time.Millisecond))

	// Fetch 3 leaves b pending again (t back on the source); t moves to
	// the target and back before fetch 4, which asks b the same.
	routing.primary.Store(primarySource)
	c.fanout.pending = nil
	f3 := &splitFetch{split: f2.split, order: order, backlogged: []bool{false, false}, servedAtSend: servedNow(c, "t", "u")}
	if err := c.sendSubFetches(f3, sendFrom(t, map[brokerKey]*call{a: answeredCall(fetchAnswer("u", 52, 52, 0, recordBatch(51, 1))), b: outstandingCall()})); err != nil {
		t.Fatal(err)
	}
	if _, err := c.awaitSubFetches(ctx, f3, fanoutRequest(), fanoutTestVersion); err != nil {
		t.Fatal(err)
	}
	if c.fanout.pending[b] == nil {
		t.Fatal("fetch 3 left nothing pending for b")
	}
	routing.primary.Store(primaryTarget)
	tgt := brokerKey{c.p.target, 1}
	moved := &splitFetch{
		split:      map[brokerKey][]kmsg.FetchRequestTopic{a: {fetchTopic("u", 52)}, tgt: {fetchTopic("t", 0)}},
		order:      []brokerKey{a, tgt},
		backlogged: []bool{false, false}, servedAtSend: servedNow(c, "t", "u"),
	}
	if err := c.sendSubFetches(moved, sendFrom(t, map[brokerKey]*call{a: outstandingCall(), tgt: outstandingCall()})); err != nil {
		t.Fatal(err)
	}
	if c.fanout.pending[b] != nil {
		t.Error("b's pending sub-fetch of moved topic t kept by a fetch routing t to the target")
	}
	// Directly: a pending sub-fetch sent while t was on the target is
	// never taken over by a fetch that routes t to the source.
	routing.primary.Store(primarySource)
	c.fanout.pending[b] = &fanoutFetch{call: outstandingCall(), asked: []kmsg.FetchRequestTopic{fetchTopic("t", 70)}, served: map[string]bool{"t": true}}
	back := &splitFetch{split: f2.split, order: order, backlogged: []bool{false, false}, servedAtSend: servedNow(c, "t", "u")}
	fresh := outstandingCall()
	if err := c.sendSubFetches(back, sendFrom(t, map[brokerKey]*call{a: outstandingCall(), b: fresh})); err != nil {
		t.Fatal(err)
	}
	if back.calls[1] != fresh {
		t.Error("a sub-fetch sent while t was served by the target was taken over after t came back")
	}
}

// targetMaps maps topic t's partition 0: virtual 1000.. is source
// 1000.., target 0...
type targetMaps struct{}

func (targetMaps) OffsetMap(topic string, partition int32) offsetsync.OffsetMap {
	if topic != "t" || partition != 0 {
		return nil
	}
	return offsetsync.OffsetMap{{Virtual: 1000, Source: 1000, Target: 0, Length: 100}}
}

// TestFanoutTargetAnswersTranslated: with t served by the target and u by
// a source broker, the target's answer reaches the client in virtual
// offsets (batch base offset and marks), its marks are remembered as such,
// so that t answered empty while its sub-fetch is out says the virtual
// ones, and the target's pending sub-fetch is taken over only by a fetch
// whose translated request is the same.
func TestFanoutTargetAnswersTranslated(t *testing.T) {
	routing := &flippableRouting{}
	routing.primary.Store(primaryTarget)
	c := fanoutConn(routing, targetMaps{})
	a, tgt := brokerKey{c.p.source, 1}, brokerKey{c.p.target, 1}
	order := []brokerKey{a, tgt}
	c.rememberMarks([]*kmsg.FetchResponse{fetchAnswer("u", 50, 50, 0, nil)})
	ctx := t.Context()
	split := func(uAt, tAt int64) (map[brokerKey][]kmsg.FetchRequestTopic, *fetchMaps) {
		asked := []kmsg.FetchRequestTopic{fetchTopic("t", tAt)}
		fm := c.readFetchMaps(asked)
		c.fetchToTarget(asked, fm)
		return map[brokerKey][]kmsg.FetchRequestTopic{a: {fetchTopic("u", uAt)}, tgt: asked}, fm
	}

	// Fetch 1: u long-polls; the target answers t from virtual 1005
	// (target 5) with 3 records, target high watermark 10.
	s1, fm1 := split(50, 1005)
	if got := s1[tgt][0].Partitions[0].FetchOffset; got != 5 {
		t.Fatalf("virtual 1005 asked of the target at %d, want 5", got)
	}
	uPoll := outstandingCall()
	f1 := &splitFetch{split: s1, order: order, backlogged: []bool{false, false}, servedAtSend: servedNow(c, "t", "u"), fm: fm1}
	if err := c.sendSubFetches(f1, sendFrom(t, map[brokerKey]*call{a: uPoll, tgt: answeredCall(fetchAnswer("t", 10, 10, 0, recordBatch(5, 3)))})); err != nil {
		t.Fatal(err)
	}
	resps, err := c.awaitSubFetches(ctx, f1, fanoutRequest(), fanoutTestVersion)
	if err != nil {
		t.Fatal(err)
	}
	if resps[0] != nil || resps[1] == nil {
		t.Fatalf("fetch 1: answers %v, want the target's only", resps)
	}
	tp := resps[1].Topics[0].Partitions[0]
	if batches := protocol.CompleteBatches(tp.RecordBatches); len(batches) != 1 || batches[0].BaseOffset() != 1005 {
		t.Errorf("target batch reaches the client at base offset %v, want 1005", batches)
	}
	if tp.HighWatermark != 1010 || tp.LastStableOffset != 1010 || tp.LogStartOffset != 1000 {
		t.Errorf("target marks reach the client as hw %d lso %d log start %d, want 1010 1010 1000", tp.HighWatermark, tp.LastStableOffset, tp.LogStartOffset)
	}
	c.rememberMarks(resps)

	// Fetch 2: the client asks t from 1008 (target 8), which long-polls,
	// and u the same as before: u's pending sub-fetch is taken over and
	// brings records; t is answered empty with its virtual marks.
	s2, fm2 := split(50, 1008)
	tPoll := outstandingCall()
	f2 := &splitFetch{split: s2, order: order, backlogged: []bool{false, false}, servedAtSend: servedNow(c, "t", "u"), fm: fm2}
	if err := c.sendSubFetches(f2, sendFrom(t, map[brokerKey]*call{tgt: tPoll})); err != nil {
		t.Fatal(err)
	}
	if f2.calls[0] != uPoll {
		t.Fatal("fetch 2 did not take over u's pending sub-fetch")
	}
	uPoll.body = fetchAnswer("u", 51, 51, 0, recordBatch(50, 1)).AppendTo(nil)
	close(uPoll.done)
	if resps, err = c.awaitSubFetches(ctx, f2, fanoutRequest(), fanoutTestVersion); err != nil {
		t.Fatal(err)
	}
	if resps[0] == nil || resps[1] != nil {
		t.Fatalf("fetch 2: answers %v, want u's only", resps)
	}
	empty := c.emptyFetchAnswer(s2[tgt]).Topics[0].Partitions[0]
	if empty.HighWatermark != 1010 || empty.LastStableOffset != 1010 || empty.LogStartOffset != 1000 || len(empty.RecordBatches) != 0 {
		t.Errorf("t answered empty as hw %d lso %d log start %d, want the virtual 1010 1010 1000", empty.HighWatermark, empty.LastStableOffset, empty.LogStartOffset)
	}

	// Fetch 3 asks t from the same virtual 1008: the same target request,
	// so the pending one is taken over; fetch 4 from 1009 is not.
	s3, fm3 := split(51, 1008)
	f3 := &splitFetch{split: s3, order: order, backlogged: []bool{false, false}, servedAtSend: servedNow(c, "t", "u"), fm: fm3}
	if err := c.sendSubFetches(f3, sendFrom(t, map[brokerKey]*call{a: outstandingCall()})); err != nil {
		t.Fatal(err)
	}
	if f3.calls[1] != tPoll {
		t.Error("fetch 3 did not take over the target's pending sub-fetch asking the same")
	}
	c.leavePending([]*kmsg.FetchResponse{nil, nil}, f3)
	s4, fm4 := split(51, 1009)
	f4 := &splitFetch{split: s4, order: order, backlogged: []bool{false, false}, servedAtSend: servedNow(c, "t", "u"), fm: fm4}
	fresh := outstandingCall()
	if err := c.sendSubFetches(f4, sendFrom(t, map[brokerKey]*call{tgt: fresh})); err != nil {
		t.Fatal(err)
	}
	if f4.calls[1] != fresh {
		t.Error("fetch 4 took over a target sub-fetch asking another offset")
	}
}

// Fetch answers fanned out over three brokers are read into pooled frames
// and given back once the client's answer is written: several clients
// reading megabytes of random values at once must each get every record
// byte for byte, which a frame reused while an answer still refers to it
// would break.
func TestFanoutAnswerFramesReused(t *testing.T) {
	fake, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer fake.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	direct, err := kgo.NewClient(kgo.SeedBrokers(fake.ListenAddrs()...), kgo.DefaultProduceTopic("t"), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	const n = 12000
	for i := range n {
		v := make([]byte, 1024)
		rand.Read(v)
		direct.Produce(ctx, &kgo.Record{Key: []byte(fmt.Sprint(i)), Value: v, Headers: []kgo.RecordHeader{{Key: "i", Value: []byte(fmt.Sprint(i))}}}, nil)
	}
	if err := direct.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	p, err := Start(ctx, Config{Listen: "127.0.0.1:0", NodeID: 7, Source: Upstream{Bootstrap: fake.ListenAddrs()}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	want := readAll(t, ctx, fake.ListenAddrs()[0], n)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { assertSameRecords(t, want, readAll(t, ctx, p.Addr(), n)) })
	}
	wg.Wait()
}
