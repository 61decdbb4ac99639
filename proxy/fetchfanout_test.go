package proxy

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
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
