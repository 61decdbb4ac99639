package proxy

import (
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestProducedBatchesFind(t *testing.T) {
	req := kmsg.NewPtrProduceRequest()
	for _, topic := range []string{"a", "b", "c"} {
		rt := kmsg.ProduceRequestTopic{Topic: topic}
		for p := int32(0); p < 3; p++ {
			rt.Partitions = append(rt.Partitions, kmsg.ProduceRequestTopicPartition{Partition: p, Records: []byte(fmt.Sprintf("%s%d", topic, p))})
		}
		req.Topics = append(req.Topics, rt)
	}
	orders := map[string][]string{
		"request order": {"a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1", "c2"},
		"reversed":      {"c2", "c1", "c0", "b2", "b1", "b0", "a2", "a1", "a0"},
		"shuffled":      {"b1", "a2", "c0", "a0", "c2", "b0", "b2", "a1", "c1"},
		"repeated":      {"a1", "a1", "c2", "c2", "a1"},
	}
	for name, order := range orders {
		b := producedBatches{req: req}
		for _, want := range order {
			got := b.find(want[:1], int32(want[1]-'0'))
			if string(got) != want {
				t.Errorf("%s: find(%s) = %q", name, want, got)
			}
		}
	}
	b := producedBatches{req: req}
	for _, missing := range []struct {
		topic string
		p     int32
	}{{"d", 0}, {"a", 3}, {"", 0}} {
		if got := b.find(missing.topic, missing.p); got != nil {
			t.Errorf("find(%s/%d) = %q, want nil", missing.topic, missing.p, got)
		}
	}
	if got := (&producedBatches{req: kmsg.NewPtrProduceRequest()}).find("a", 0); got != nil {
		t.Errorf("empty request: %q", got)
	}
}
