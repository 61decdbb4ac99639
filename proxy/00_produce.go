package proxy

import (
	"context"
	"strconv"
	"time"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
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
		var cl *call
		cl, err = c.forward(order[0], r, r.Body, expectResponse)
		calls = []*call{cl}
	} else {
		calls, err = c.scatter(r, order, func(b int32) kmsg.Request {
			sub := *req
			sub.Topics = split[b]
			return &sub
		}, expectResponse)
	}
	if !expectResponse {
		// acks=0 has no answer, not even an error: the records are lost
		// as they would be on a broker connection that failed.
		if err != nil {
			c.log.Warn("acks=0 produce dropped: upstream unavailable", "err", err)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if c.p.cfg.SyncProduce {
		return c.syncProduce(req, calls), nil
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
		merged, err := c.mergedProduce(ctx, calls, r.APIVersion)
		if err != nil {
			return nil, err
		}
		return merged.AppendTo(nil), nil
	}, nil
}

// mergedProduce waits for every part of a split produce and merges the
// answers, leader hints rewritten.
func (c *clientConn) mergedProduce(ctx context.Context, calls []*call, version int16) (*kmsg.ProduceResponse, error) {
	resps, err := gather[kmsg.ProduceResponse](ctx, calls, version)
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
	return merged, nil
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

// syncProduce answers only when the records are in both clusters. The source
// answer is merged as usual; then each successful partition waits for the
// mirror, bounded by the request's own timeout.
func (c *clientConn) syncProduce(req *kmsg.ProduceRequest, calls []*call) finishFunc {
	return func(ctx context.Context) ([]byte, error) {
		merged, err := c.mergedProduce(ctx, calls, req.Version)
		if err != nil {
			return nil, err
		}

		spans := make(map[string]int64) // topic key + partition → offsets written
		for _, t := range req.Topics {
			for _, p := range t.Partitions {
				n, err := protocol.OffsetSpan(p.Records)
				if err != nil {
					return nil, err
				}
				spans[partitionKey(topicKey(t.Topic, t.TopicID), p.Partition)] = n
			}
		}
		wait, cancel := context.WithTimeout(ctx, time.Duration(max(req.TimeoutMillis, 1000))*time.Millisecond)
		defer cancel()
		for i := range merged.Topics {
			t := &merged.Topics[i]
			name := t.Topic
			if name == "" {
				name, _ = c.p.source.topicName(ctx, t.TopicID)
			}
			for j := range t.Partitions {
				pt := &t.Partitions[j]
				n := spans[partitionKey(topicKey(t.Topic, t.TopicID), pt.Partition)]
				if pt.ErrorCode != 0 || n == 0 {
					continue
				}
				if err := c.p.cfg.Mirror.WaitMirrored(wait, name, pt.Partition, pt.BaseOffset+n-1); err != nil {
					c.log.Warn("sync produce: not mirrored in time", "topic", name, "partition", pt.Partition, "err", err)
					pt.ErrorCode = kerr.RequestTimedOut.Code
					msg := "kmigrate: written to the source but not yet mirrored to the target (produce mode sync); retry"
					pt.ErrorMessage = &msg
				}
			}
		}
		return merged.AppendTo(nil), nil
	}
}

func partitionKey(topic string, partition int32) string {
	return topic + "\x00" + strconv.Itoa(int(partition))
}
