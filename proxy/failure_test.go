package proxy

import (
	"testing"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func requestOf(t *testing.T, req kmsg.Request) *protocol.Request {
	t.Helper()
	frame := req.AppendTo(protocol.AppendRequestHeader(nil, req.Key(), req.GetVersion(), 1, "t"))
	r, _, err := protocol.ParseRequest(frame)
	if err != nil {
		t.Fatal(err)
	}
	return &r
}

// TestRetriableResponses checks that an unreachable upstream gets the client
// an answer shaped like its request with a retriable error in every slot.
func TestRetriableResponses(t *testing.T) {
	produce := &kmsg.ProduceRequest{Version: 9, Acks: -1, Topics: []kmsg.ProduceRequestTopic{{Topic: "a", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 2}, {Partition: 5}}}}}
	body, ok := retriableResponse(requestOf(t, produce))
	if !ok {
		t.Fatal("no retriable Produce answer")
	}
	pr := kmsg.NewPtrProduceResponse()
	pr.Version = 9
	if err := pr.ReadFrom(body); err != nil {
		t.Fatal(err)
	}
	if len(pr.Topics) != 1 || pr.Topics[0].Topic != "a" || len(pr.Topics[0].Partitions) != 2 ||
		pr.Topics[0].Partitions[1].Partition != 5 || pr.Topics[0].Partitions[1].ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("produce answer = %+v", pr.Topics)
	}

	fetch := &kmsg.FetchRequest{Version: 13, Topics: []kmsg.FetchRequestTopic{{TopicID: [16]byte{9}, Partitions: []kmsg.FetchRequestTopicPartition{{Partition: 1}}}}}
	body, _ = retriableResponse(requestOf(t, fetch))
	fr := kmsg.NewPtrFetchResponse()
	fr.Version = 13
	if err := fr.ReadFrom(body); err != nil || fr.Topics[0].TopicID != [16]byte{9} || fr.Topics[0].Partitions[0].ErrorCode != kerr.NotLeaderForPartition.Code {
		t.Fatalf("fetch answer = %+v, %v", fr, err)
	}

	add := &kmsg.AddPartitionsToTxnRequest{Version: 3, TransactionalID: "x", Topics: []kmsg.AddPartitionsToTxnRequestTopic{{Topic: "b", Partitions: []int32{4}}}}
	body, _ = retriableResponse(requestOf(t, add))
	ar := kmsg.NewPtrAddPartitionsToTxnResponse()
	ar.Version = 3
	if err := ar.ReadFrom(body); err != nil || ar.Topics[0].Partitions[0].Partition != 4 || ar.Topics[0].Partitions[0].ErrorCode != kerr.CoordinatorNotAvailable.Code {
		t.Fatalf("add partitions answer = %+v, %v", ar, err)
	}

	join := &kmsg.JoinGroupRequest{Version: 9, Group: "g"}
	body, _ = retriableResponse(requestOf(t, join))
	jr := kmsg.NewPtrJoinGroupResponse()
	jr.Version = 9
	if err := jr.ReadFrom(body); err != nil || jr.ErrorCode != kerr.CoordinatorNotAvailable.Code {
		t.Fatalf("join answer = %+v, %v", jr, err)
	}

	fetchOffsets := &kmsg.OffsetFetchRequest{Version: 8, Groups: []kmsg.OffsetFetchRequestGroup{{Group: "g1"}, {Group: "g2"}}}
	body, _ = retriableResponse(requestOf(t, fetchOffsets))
	or := kmsg.NewPtrOffsetFetchResponse()
	or.Version = 8
	if err := or.ReadFrom(body); err != nil || len(or.Groups) != 2 || or.Groups[1].Group != "g2" || or.Groups[1].ErrorCode != kerr.CoordinatorNotAvailable.Code {
		t.Fatalf("offset fetch answer = %+v, %v", or, err)
	}

	if _, ok := retriableResponse(requestOf(t, &kmsg.MetadataRequest{Version: 12})); ok {
		t.Fatal("an all-topics Metadata request cannot be answered without upstream")
	}
	if _, ok := retriableResponse(requestOf(t, &kmsg.CreateTopicsRequest{Version: 7})); ok {
		t.Fatal("admin requests have no retriable shape; the connection must close")
	}
}
