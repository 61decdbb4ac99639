package proxy

import (
	"context"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var produceTopics = topicAccess[kmsg.ProduceRequestTopic, kmsg.ProduceRequestTopicPartition]{
	key:        func(t *kmsg.ProduceRequestTopic) string { return topicKey(t.Topic, t.TopicID) },
	partitions: func(t *kmsg.ProduceRequestTopic) []kmsg.ProduceRequestTopicPartition { return t.Partitions },
	setParts:   func(t *kmsg.ProduceRequestTopic, p []kmsg.ProduceRequestTopicPartition) { t.Partitions = p },
	partition:  func(p *kmsg.ProduceRequestTopicPartition) int32 { return p.Partition },
}

var produceResponseTopics = topicAccess[kmsg.ProduceResponseTopic, kmsg.ProduceResponseTopicPartition]{
	key:        func(t *kmsg.ProduceResponseTopic) string { return topicKey(t.Topic, t.TopicID) },
	partitions: func(t *kmsg.ProduceResponseTopic) []kmsg.ProduceResponseTopicPartition { return t.Partitions },
	setParts:   func(t *kmsg.ProduceResponseTopic, p []kmsg.ProduceResponseTopicPartition) { t.Partitions = p },
}

// handleProduce splits a produce by partition leader. Record batches are
// copied as opaque bytes; when one broker leads every partition (the common
// case) the request body is forwarded untouched. acks=0 has no response.
func handleProduce(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.ProduceRequest](r)
	if err != nil {
		return nil, err
	}
	split, order := splitByBroker(req.Topics, produceTopics, c.router())
	expectResponse := req.Acks != 0
	var calls []*call
	if len(order) == 1 {
		cl, err := c.forward(order[0], r, r.Body, expectResponse)
		if err != nil {
			return nil, err
		}
		calls = []*call{cl}
	} else {
		calls, err = c.scatter(r, order, func(b int32) kmsg.Request {
			sub := *req
			sub.Topics = split[b]
			return &sub
		}, expectResponse)
		if err != nil {
			return nil, err
		}
	}
	if !expectResponse {
		return nil, nil
	}
	return func(ctx context.Context) ([]byte, error) {
		if len(calls) == 1 {
			body, err := calls[0].wait(ctx)
			if err != nil || r.APIVersion < 10 {
				return body, err // no leader hints before KIP-951
			}
			resp, err := decodeResponse[kmsg.ProduceResponse](body, r.APIVersion)
			if err != nil {
				return nil, err
			}
			if !c.p.rewriteProduceHints(resp) {
				return body, nil
			}
			return resp.AppendTo(nil), nil
		}
		resps, err := gather[kmsg.ProduceResponse](ctx, calls, r.APIVersion)
		if err != nil {
			return nil, err
		}
		lists := make([][]kmsg.ProduceResponseTopic, len(resps))
		merged := resps[0]
		for i, resp := range resps {
			lists[i] = resp.Topics
			merged.ThrottleMillis = maxThrottle(merged.ThrottleMillis, resp.ThrottleMillis)
		}
		merged.Topics = mergeTopics(lists, produceResponseTopics)
		c.p.rewriteProduceHints(merged)
		return merged.AppendTo(nil), nil
	}, nil
}

// rewriteProduceHints replaces KIP-951 leader hints with the proxy, reporting
// whether anything changed.
func (p *Proxy) rewriteProduceHints(resp *kmsg.ProduceResponse) bool {
	changed := false
	for i := range resp.Topics {
		parts := resp.Topics[i].Partitions
		for j := range parts {
			if parts[j].CurrentLeader.LeaderID >= 0 {
				parts[j].CurrentLeader.LeaderID = p.cfg.NodeID
				changed = true
			}
		}
	}
	if len(resp.Brokers) > 0 {
		b := kmsg.NewProduceResponseBroker()
		b.NodeID, b.Host, b.Port = p.cfg.NodeID, p.advHost, p.advPort
		resp.Brokers = []kmsg.ProduceResponseBroker{b}
		changed = true
	}
	return changed
}
