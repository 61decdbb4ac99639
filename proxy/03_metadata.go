package proxy

import (
	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleMetadata forwards to any broker, learns leaders and brokers from the
// answer, then shows the client a one-broker cluster: the proxy leads every
// partition and is the controller. A later cutover can then move a partition
// between clusters without the client's topology changing.
func handleMetadata(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.MetadataRequest](r)
	if err != nil {
		return nil, err
	}
	allTopics := req.Topics == nil
	return rewritten(c, r, func(resp *kmsg.MetadataResponse, from *cluster) {
		from.learnMetadata(resp, allTopics)
		if from == c.p.target {
			c.p.sourceTopicIDs(resp)
		}
		c.p.rewriteMetadata(resp)
	})
}

// sourceTopicIDs shows the source's topic ids in an answer the target gave
// (the source was unreachable): clients keep the ids they learned, and some
// (franz-go) take a new id for a deleted and recreated topic and stop using
// it. The ids are the proxy's last view of the source.
func (p *Proxy) sourceTopicIDs(resp *kmsg.MetadataResponse) {
	for i := range resp.Topics {
		t := &resp.Topics[i]
		if t.Topic == nil {
			continue
		}
		if id, ok := p.source.topicID(*t.Topic); ok {
			t.TopicID = id
		}
	}
}

func (p *Proxy) rewriteMetadata(resp *kmsg.MetadataResponse) {
	self := p.cfg.NodeID
	b := kmsg.NewMetadataResponseBroker()
	b.NodeID, b.Host, b.Port = self, p.advHost, p.advPort
	resp.Brokers = []kmsg.MetadataResponseBroker{b}
	resp.ControllerID = self
	for i := range resp.Topics {
		parts := resp.Topics[i].Partitions
		for j := range parts {
			pt := &parts[j]
			if pt.Leader >= 0 {
				pt.Leader = self
			}
			pt.Replicas = []int32{self}
			pt.ISR = []int32{self}
			pt.OfflineReplicas = nil
		}
	}
}
