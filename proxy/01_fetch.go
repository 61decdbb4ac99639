package proxy

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

var fetchTopics = topicAccess[kmsg.FetchRequestTopic, kmsg.FetchRequestTopicPartition]{
	key:        func(t *kmsg.FetchRequestTopic) string { return topicKey(t.Topic, t.TopicID) },
	partitions: func(t *kmsg.FetchRequestTopic) []kmsg.FetchRequestTopicPartition { return t.Partitions },
	setParts:   func(t *kmsg.FetchRequestTopic, p []kmsg.FetchRequestTopicPartition) { t.Partitions = p },
	partition:  func(p *kmsg.FetchRequestTopicPartition) int32 { return p.Partition },
}

var fetchResponseTopics = topicAccess[kmsg.FetchResponseTopic, kmsg.FetchResponseTopicPartition]{
	key:        func(t *kmsg.FetchResponseTopic) string { return topicKey(t.Topic, t.TopicID) },
	partitions: func(t *kmsg.FetchResponseTopic) []kmsg.FetchResponseTopicPartition { return t.Partitions },
	setParts:   func(t *kmsg.FetchResponseTopic, p []kmsg.FetchResponseTopicPartition) { t.Partitions = p },
}

// handleFetch splits a fetch by partition leader. Fetch sessions (KIP-227)
// are not passed through: a client's partitions may span brokers and, after
// a cutover, clusters, so upstream fetches are sessionless (epoch -1) and the
// client is told no session exists (session id 0), which makes it send full
// fetches. Record batches are forwarded as opaque bytes.
func handleFetch(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.FetchRequest](r)
	if err != nil {
		return nil, err
	}
	req.SessionID, req.SessionEpoch, req.ForgottenTopics = 0, -1, nil
	// The proxy withdraws preferred read replicas (KIP-392) anyway; a
	// broker not told the client's rack names none, which keeps its
	// answers forwardable unchanged.
	req.Rack = ""
	var fm *fetchMaps
	var servedAtSend map[string]bool // topic → served by the target when sent
	if c.p.target != nil {
		// Read before the maps and the routes: a topic that moves between
		// them then counts as moved (answered NOT_LEADER_OR_FOLLOWER at
		// once), never as staying where its sub-fetch long-polls for nothing.
		servedAtSend = make(map[string]bool, len(req.Topics))
		for _, t := range req.Topics {
			servedAtSend[t.Topic] = c.p.servedByTarget(t.Topic)
		}
		fm = c.readFetchMaps(req.Topics)
	}
	split, order := splitByBroker(req.Topics, fetchTopics, c.fetchRouter(fm))
	if len(order) == 0 { // an empty fetch still gets an answer
		order = []brokerKey{{c.p.source, c.p.source.anyBroker()}}
	}
	var backlogged []bool
	if len(order) > 1 {
		// Before translation: the marks are the client's (virtual) offsets.
		backlogged = c.backlogged(split, order)
	}
	for _, b := range order {
		if b.cluster == c.p.target {
			c.fetchToTarget(split[b], fm)
		}
	}
	build := func(b brokerKey) kmsg.Request {
		sub := *req
		sub.Topics = split[b]
		return &sub
	}
	if len(order) > 1 {
		// Several brokers: answer as soon as one brings records, and
		// keep the others' long polls for the next fetch (fetchfanout.go).
		f := &splitFetch{split: split, order: order, backlogged: backlogged, servedAtSend: servedAtSend, fm: fm}
		err := c.sendSubFetches(f, func(b brokerKey) (*call, error) {
			sub := build(b).(*kmsg.FetchRequest)
			sub.MaxWaitMillis = min(sub.MaxWaitMillis, fanoutMaxWait)
			if !c.marksKnown(sub.Topics) {
				sub.MaxWaitMillis = 0
			}
			bc, err := c.fetchUpstream(b.cluster, b.id)
			if err != nil {
				return nil, asUpstreamError(err)
			}
			cl, err := bc.Send(r.APIKey, r.APIVersion, r.Header, sub.AppendTo(nil), true)
			return cl, asUpstreamError(err)
		})
		if err != nil {
			return nil, err
		}
		c.afterWrite = f.giveBack
		return c.answerFetch(func(ctx context.Context) (*kmsg.FetchResponse, error) {
			resps, err := c.awaitSubFetches(ctx, f, req, r.APIVersion)
			if err != nil {
				return nil, err
			}
			c.rememberMarks(resps)
			for i, resp := range resps {
				if resp == nil {
					resps[i] = c.emptyFetchAnswer(split[order[i]])
				}
			}
			merged := mergeFetchAnswers(resps, r.APIVersion)
			c.p.rewriteFetchHints(merged)
			return merged, nil
		}), nil
	}
	// One broker: the fan-out above took every fetch that spans several.
	b := order[0]
	calls, err := c.scatter(r, order, build, true)
	if err != nil {
		return nil, err
	}
	wait := func(ctx context.Context) ([]byte, error) {
		if servedAtSend != nil {
			return c.waitFetchUnlessMoved(ctx, calls[0], split[b], servedAtSend, r.APIVersion)
		}
		return calls[0].wait(ctx)
	}
	if b.cluster == c.p.source {
		if r.APIVersion <= maxCutThroughFetch {
			// A version without leader hints: the answer needs no
			// rewrite (session id 0 as asked, no preferred replica as
			// no rack was sent) and may be cut through, unless its
			// topic moves cluster first (waitFetchUnlessMoved).
			c.streamable = calls[0]
			if servedAtSend != nil {
				c.streamMoved = func() bool { return c.p.anyMoved(split[b], servedAtSend) }
			}
		}
		return func(ctx context.Context) ([]byte, error) {
			// The common case: forward the upstream bytes as they are when
			// nothing names an upstream broker, saving a copy of every batch.
			body, err := wait(ctx)
			if err != nil {
				return nil, err
			}
			resp, err := decodeResponse[kmsg.FetchResponse](body, r.APIVersion)
			if err != nil {
				return nil, err
			}
			if !c.p.rewriteFetchHints(resp) && resp.SessionID == 0 {
				return body, nil
			}
			resp.SessionID = 0
			return encodeFetchAnswer(resp), nil
		}, nil
	}
	// The target answers: its offsets become the client's.
	return c.answerFetch(func(ctx context.Context) (*kmsg.FetchResponse, error) {
		body, err := wait(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := decodeResponse[kmsg.FetchResponse](body, r.APIVersion)
		if err != nil {
			return nil, err
		}
		c.fetchToVirtual(resp, fm)
		resp.SessionID = 0
		c.p.rewriteFetchHints(resp)
		return resp, nil
	}), nil
}

// mergeFetchAnswers merges the answers of a split fetch into the first: all
// their partitions, the longest throttle, the first top-level error, no
// session (the client keeps sending full fetches).
func mergeFetchAnswers(resps []*kmsg.FetchResponse, version int16) *kmsg.FetchResponse {
	merged := resps[0]
	merged.SetVersion(version) // the first may be an empty answer made here
	if len(resps) > 1 {
		lists := make([][]kmsg.FetchResponseTopic, len(resps))
		for i, resp := range resps {
			lists[i] = resp.Topics
			merged.ThrottleMillis = maxThrottle(merged.ThrottleMillis, resp.ThrottleMillis)
			if merged.ErrorCode == 0 {
				merged.ErrorCode = resp.ErrorCode
			}
		}
		merged.Topics = mergeTopics(lists, fetchResponseTopics)
	}
	merged.SessionID = 0
	return merged
}

// waitFetchUnlessMoved waits for a fetch sent upstream, unless a topic in
// it changes cluster meanwhile (a producer flip or its rollback): the old
// cluster then gets no new records for it, and the fetch would long-poll
// there for its whole max wait (seconds of pause after every flip). Such a
// fetch is answered at once with NOT_LEADER_OR_FOLLOWER, which makes clients
// refresh metadata and fetch again, this time from the new cluster; the
// late upstream answer is discarded.
func (c *clientConn) waitFetchUnlessMoved(ctx context.Context, cl *call, topics []kmsg.FetchRequestTopic, servedAtSend map[string]bool, version int16) ([]byte, error) {
	tick := time.NewTicker(streamCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-cl.done:
			return cl.wait(ctx)
		default:
		}
		// Checked before the first wait too: a cut-through offer
		// withdrawn because the topic moved lands here.
		if c.p.anyMoved(topics, servedAtSend) {
			return moved(topics, version), nil
		}
		select {
		case <-cl.done:
			return cl.wait(ctx)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// anyMoved reports whether a topic of topics changed cluster since the
// fetch was sent.
func (p *Proxy) anyMoved(topics []kmsg.FetchRequestTopic, servedAtSend map[string]bool) bool {
	for _, t := range topics {
		if p.servedByTarget(t.Topic) != servedAtSend[t.Topic] {
			return true
		}
	}
	return false
}

// moved answers every partition of topics NOT_LEADER_OR_FOLLOWER.
func moved(topics []kmsg.FetchRequestTopic, version int16) []byte {
	resp := movedAnswer(topics)
	resp.Version = version
	return resp.AppendTo(nil)
}

func movedAnswer(topics []kmsg.FetchRequestTopic) *kmsg.FetchResponse {
	resp := kmsg.NewPtrFetchResponse()
	for _, t := range topics {
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p.Partition, kerr.NotLeaderForPartition.Code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// fetchRouter routes each partition of a fetch: to the target when its
// topic's producers flipped and the fetch position has its records there,
// else to the source (history older than the mirror's start stays there).
func (c *clientConn) fetchRouter(fm *fetchMaps) func(key string, partition int32) brokerKey {
	route := c.router()
	if fm == nil || len(fm.toSource) == 0 {
		return route
	}
	toSource := c.sourceRouter()
	return func(key string, partition int32) brokerKey {
		if fm.toSource[topicPartition{key, partition}] {
			return toSource(key, partition)
		}
		return route(key, partition)
	}
}

// rewriteFetchHints hides upstream brokers: KIP-951 leader hints point at
// the proxy and KIP-392 preferred read replicas are withdrawn (the client
// must keep fetching through the proxy).
// It reports whether anything changed.
func (p *Proxy) rewriteFetchHints(resp *kmsg.FetchResponse) bool {
	changed := false
	for i := range resp.Topics {
		parts := resp.Topics[i].Partitions
		for j := range parts {
			pt := &parts[j]
			if pt.CurrentLeader.LeaderID >= 0 {
				pt.CurrentLeader.LeaderID = p.cfg.NodeID
				changed = true
			}
			if pt.PreferredReadReplica >= 0 {
				pt.PreferredReadReplica = -1
				changed = true
			}
		}
	}
	if len(resp.Brokers) > 0 {
		b := kmsg.NewFetchResponseBroker()
		b.NodeID, b.Host, b.Port = p.cfg.NodeID, p.advHost, p.advPort
		resp.Brokers = []kmsg.FetchResponseBroker{b}
		changed = true
	}
	return changed
}
