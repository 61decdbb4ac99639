package proxy

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// The bound must hold in every version, or the buffer grows after all.
func TestFetchAnswerSizeBound(t *testing.T) {
	resp := kmsg.NewPtrFetchResponse()
	for ti := range 3 {
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic = string(bytes.Repeat([]byte{'t'}, 100*ti+1))
		for pi := range 5 {
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.Partition = int32(pi)
			rp.RecordBatches = make([]byte, 1000*pi)
			rp.CurrentLeader.LeaderID, rp.CurrentLeader.LeaderEpoch = 1, 2
			rp.SnapshotID.Epoch = 3
			rp.DivergingEpoch.Epoch = 4
			rp.PreferredReadReplica = 2
			for range pi {
				rp.AbortedTransactions = append(rp.AbortedTransactions, kmsg.NewFetchResponseTopicPartitionAbortedTransaction())
			}
			rp.UnknownTags.Set(99, []byte("tag"))
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	rack := "rack-a"
	resp.Brokers = append(resp.Brokers, kmsg.FetchResponseBroker{NodeID: 1, Host: "broker.example", Port: 9092, Rack: &rack})
	for v := int16(0); v <= resp.MaxVersion(); v++ {
		resp.Version = v
		out := encodeFetchAnswer(resp)
		if bound := fetchAnswerSizeBound(resp); len(out) > bound {
			t.Fatalf("v%d: encoded %d bytes, bound %d", v, len(out), bound)
		}
		if !bytes.Equal(out, resp.AppendTo(nil)) {
			t.Fatalf("v%d: differs from kmsg's encoding", v)
		}
	}
}
