package proxy

import (
	"context"
	"fmt"
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
// copied as opaque bytes; when one source broker leads every partition (the
// common case) the request body is forwarded untouched. acks=0 has no
// response. Partitions of topics whose producers flipped go to the target,
// their producer ids mapped (producerIDs) and their offsets translated back.
func handleProduce(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.ProduceRequest](r)
	if err != nil {
		return nil, err
	}
	var topics []string
	if c.p.target != nil {
		topics = make([]string, 0, len(req.Topics))
		for _, t := range req.Topics {
			topics = append(topics, t.Topic) // versions with ids are not served with a target
		}
		// Counted before the primary is read: a flip that then sees no
		// produce in flight has seen this one, or this one sees the flip.
		c.p.produces.add(topics, 1)
		if c.p.anyDraining(topics) && hasTransactional(req) {
			// A transaction cannot wait out a flip: its topic's next
			// records may go to the other cluster. Abort it now; the
			// client runs it again once the flip is done.
			c.p.produces.add(topics, -1)
			if req.Acks == 0 {
				return nil, nil
			}
			body, _ := errorResponse(r, kerr.TransactionAbortable.Code)
			return respondBody(body), nil
		}
		if c.p.anyDraining(topics) {
			c.p.produces.add(topics, -1)
			// Held by not reading further from this client: its later
			// requests, produces included, keep their order behind it.
			if err := c.waitProduceRelease(topics, req.TimeoutMillis); err != nil {
				c.log.Warn("produce held past the bound of a topic flip; answering a retriable error", "err", err)
				if req.Acks == 0 {
					return nil, nil
				}
				body, _ := errorResponse(r, kerr.NotLeaderForPartition.Code)
				return respondBody(body), nil
			}
			c.p.produces.add(topics, 1)
		}
	}
	calls, keys, refused, err := c.sendProduce(r, req)
	if len(topics) > 0 {
		if req.Acks == 0 || err != nil {
			c.p.produces.add(topics, -1)
		} else {
			go func() {
				for _, cl := range calls {
					<-cl.done
				}
				c.p.produces.add(topics, -1)
			}()
		}
	}
	if req.Acks == 0 {
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
		return c.syncProduce(req, calls, keys, refused), nil
	}
	if len(calls) == 1 && keys[0].cluster == c.p.source && len(refused) == 0 {
		return c.sourceProduceAnswer(r.APIVersion, req, calls[0]), nil
	}
	return func(ctx context.Context) ([]byte, error) {
		merged, err := c.mergedProduce(ctx, calls, keys, refused, r.APIVersion)
		if err != nil {
			return nil, err
		}
		if c.p.cfg.Feed != nil {
			c.feedMirror(req, merged)
		}
		return merged.AppendTo(nil), nil
	}, nil
}

// sourceProduceAnswer answers a produce that went whole to one source
// broker: the broker's answer, its leader hints rewritten, the batches
// handed to the mirror feed when there is one (req is only read for that).
func (c *clientConn) sourceProduceAnswer(version int16, req *kmsg.ProduceRequest, cl *call) finishFunc {
	feed := c.p.cfg.Feed != nil
	return func(ctx context.Context) ([]byte, error) {
		body, err := cl.wait(ctx)
		if err != nil || version < 10 && !feed {
			return body, err // no leader hints before KIP-951
		}
		resp, err := decodeResponse[kmsg.ProduceResponse](body, version)
		if err != nil {
			return nil, err
		}
		if feed {
			c.feedMirror(req, resp)
		}
		if version < 10 || !c.p.rewriteProduceHints(resp) {
			return body, nil
		}
		return resp.AppendTo(nil), nil
	}
}

// feedMirror hands the mirror the batches the source acknowledged (the
// dual-write path). Partitions of topics whose producers moved were written
// to the target, and are not the mirror's.
func (c *clientConn) feedMirror(req *kmsg.ProduceRequest, resp *kmsg.ProduceResponse) {
	batches := producedBatches{req: req}
	for _, t := range resp.Topics {
		if t.Topic == "" || c.p.servedByTarget(t.Topic) {
			continue // versions naming topics by id are not served with a target
		}
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 || p.BaseOffset < 0 {
				continue
			}
			if recs := batches.find(t.Topic, p.Partition); len(recs) > 0 {
				c.p.cfg.Feed.Feed(t.Topic, p.Partition, p.BaseOffset, p.LogAppendTime, recs)
			}
		}
	}
}

// producedBatches finds partitions' batches in a produce request without
// building an index per answer: an answer lists partitions in the request's
// order, so each search starts where the previous one ended and is usually
// one step.
type producedBatches struct {
	req  *kmsg.ProduceRequest
	t, p int // where the next search starts
}

func (b *producedBatches) find(topic string, partition int32) []byte {
	topics := b.req.Topics
	for range len(topics) + 1 {
		if b.t >= len(topics) {
			b.t, b.p = 0, 0
			if len(topics) == 0 {
				return nil
			}
		}
		t := &topics[b.t]
		if t.Topic == topic {
			for range len(t.Partitions) {
				if b.p >= len(t.Partitions) {
					b.p = 0
				}
				p := &t.Partitions[b.p]
				b.p++
				if p.Partition == partition {
					return p.Records
				}
			}
		}
		b.t, b.p = b.t+1, 0
	}
	return nil
}

// sendProduce writes a produce upstream: whole to one source broker, or one
// sub-request per broker. refused lists partitions answered here instead
// (transactional batches for flipped topics).
func (c *clientConn) sendProduce(r *protocol.Request, req *kmsg.ProduceRequest) ([]*call, []brokerKey, []kmsg.ProduceResponseTopic, error) {
	split, order := splitByBroker(req.Topics, produceTopics, c.router())
	expectResponse := req.Acks != 0
	if len(order) == 1 && order[0].cluster == c.p.source && !c.anyMapped(req) {
		cl, err := c.forward(order[0].id, r, r.Body, expectResponse)
		return []*call{cl}, order, nil, err
	}
	var refused []kmsg.ProduceResponseTopic
	for _, b := range order {
		codes, err := c.mapProducers(c.ctx, b.cluster, split[b])
		if err != nil {
			return nil, nil, nil, err
		}
		if len(codes) > 0 {
			split[b], refused = dropRefused(split[b], codes, refused)
		}
	}
	var sendOrder []brokerKey
	for _, b := range order {
		if len(split[b]) > 0 {
			sendOrder = append(sendOrder, b)
		}
	}
	calls := make([]*call, 0, len(sendOrder))
	for _, b := range sendOrder {
		sub := *req
		sub.Topics = split[b]
		parts, ok := protocol.ProduceParts(&sub)
		if !ok {
			parts = [][]byte{sub.AppendTo(nil)}
		}
		cl, err := c.forwardPartsTo(b.cluster, b.id, r, parts, expectResponse)
		if err != nil {
			return nil, nil, nil, err
		}
		calls = append(calls, cl)
	}
	return calls, sendOrder, refused, nil
}

// anyMapped reports whether a produce for the source needs its batches
// rewritten: a topic that came back from the target, or a transaction whose
// id moved.
func (c *clientConn) anyMapped(req *kmsg.ProduceRequest) bool {
	if c.p.target == nil {
		return false
	}
	if req.TransactionID != nil {
		if st := c.p.txnState(*req.TransactionID); st != nil {
			st.mu.Lock()
			moved := st.mapped || st.home != c.p.source
			st.mu.Unlock()
			if moved {
				return true
			}
		}
	}
	for _, t := range req.Topics {
		if c.p.needsProducerMapping(c.p.source, t.Topic) {
			return true
		}
	}
	return false
}

// dropRefused removes the refused partitions from topics and adds their
// answers to refused.
func dropRefused(topics []kmsg.ProduceRequestTopic, codes map[string]int16, refused []kmsg.ProduceResponseTopic) ([]kmsg.ProduceRequestTopic, []kmsg.ProduceResponseTopic) {
	var kept []kmsg.ProduceRequestTopic
	for _, t := range topics {
		var parts []kmsg.ProduceRequestTopicPartition
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			code, ok := codes[partitionKey(t.Topic, p.Partition)]
			if !ok {
				parts = append(parts, p)
				continue
			}
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition, rp.ErrorCode, rp.BaseOffset = p.Partition, code, -1
			msg := refusalMessage(code)
			rp.ErrorMessage = &msg
			rt.Partitions = append(rt.Partitions, rp)
		}
		if len(rt.Partitions) > 0 {
			refused = append(refused, rt)
		}
		if len(parts) > 0 {
			t.Partitions = parts
			kept = append(kept, t)
		}
	}
	return kept, refused
}

// anyDraining reports whether a topic flip holds produces of any of topics.
func (p *Proxy) anyDraining(topics []string) bool {
	for _, t := range topics {
		if p.produceHeld(t) {
			return true
		}
	}
	return false
}

// waitProduceRelease waits, on the reader goroutine, until no topic of a
// produce is held by a flip, bounded by DefaultProduceHold and the
// produce's own timeout.
func (c *clientConn) waitProduceRelease(topics []string, timeoutMillis int32) error {
	start := time.Now()
	bound := DefaultProduceHold
	if t := time.Duration(timeoutMillis) * time.Millisecond; t > 0 && t < bound {
		bound = t
	}
	defer func() { c.p.metrics.produceHold.Observe(time.Since(start).Seconds()) }()
	for c.p.anyDraining(topics) {
		if time.Since(start) > bound {
			return fmt.Errorf("topics %v still flipping after %s", topics, bound)
		}
		select {
		case <-c.ctx.Done():
			return c.ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// mergedProduce waits for every part of a split produce and merges the
// answers: the target's translated to virtual offsets, refused partitions
// added, leader hints rewritten.
func (c *clientConn) mergedProduce(ctx context.Context, calls []*call, keys []brokerKey, refused []kmsg.ProduceResponseTopic, version int16) (*kmsg.ProduceResponse, error) {
	resps, err := gather[kmsg.ProduceResponse](ctx, calls, version)
	if err != nil {
		return nil, err
	}
	if len(resps) == 0 {
		resp := kmsg.NewPtrProduceResponse()
		resp.Version = version
		resps = append(resps, resp)
	}
	lists := make([][]kmsg.ProduceResponseTopic, 0, len(resps)+1)
	merged := resps[0]
	for i, resp := range resps {
		if i < len(keys) && keys[i].cluster == c.p.target {
			c.produceToVirtual(resp)
		}
		lists = append(lists, resp.Topics)
		merged.ThrottleMillis = maxThrottle(merged.ThrottleMillis, resp.ThrottleMillis)
	}
	if len(refused) > 0 {
		lists = append(lists, refused)
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
func (c *clientConn) syncProduce(req *kmsg.ProduceRequest, calls []*call, keys []brokerKey, refused []kmsg.ProduceResponseTopic) finishFunc {
	return func(ctx context.Context) ([]byte, error) {
		merged, err := c.mergedProduce(ctx, calls, keys, refused, req.Version)
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
				if pt.ErrorCode != 0 || n == 0 || c.p.servedByTarget(name) {
					// Flipped topics are written to the target itself.
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
