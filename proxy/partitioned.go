package proxy

import (
	"context"
	"math"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// partitioned describes a request whose topics and partitions each belong
// to a partition leader, and how to split it and merge its answers. Requests
// whose partitions all live on one broker are forwarded untouched.
type partitioned[Q any, PQ interface {
	*Q
	kmsg.Request
}, S any, PS interface {
	*S
	kmsg.Response
}, T, P, RT, RP any] struct {
	topics     func(PQ) *[]T
	reqAcc     topicAccess[T, P]
	respTopics func(PS) *[]RT
	respAcc    topicAccess[RT, RP]
	throttle   func(PS) *int32 // nil when the response has no throttle
	// With a target: toTarget rewrites the topics of a sub-request bound for
	// the target, fromTarget translates its answer. A request type without
	// them always goes to the source.
	toTarget   func(c *clientConn, topics []T)
	fromTarget func(c *clientConn, resp PS)
}

func (d partitioned[Q, PQ, S, PS, T, P, RT, RP]) handle(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[Q, PQ](r)
	if err != nil {
		return nil, err
	}
	route := c.sourceRouter()
	if d.toTarget != nil {
		route = c.router()
	}
	split, order := splitByBroker(*d.topics(req), d.reqAcc, route)
	for _, b := range order {
		if b.cluster == c.p.target {
			d.toTarget(c, split[b])
		}
	}
	if len(order) == 0 || len(order) == 1 && order[0].cluster == c.p.source {
		only := brokerKey{c.p.source, c.p.source.anyBroker()}
		if len(order) == 1 {
			only = order[0]
		}
		return c.forwardRawTo(only, r)
	}
	calls, err := c.scatter(r, order, func(b brokerKey) kmsg.Request {
		sub := *req
		*d.topics(&sub) = split[b]
		return PQ(&sub)
	}, true)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		resps, err := gather[S, PS](ctx, calls, r.APIVersion)
		if err != nil {
			return nil, err
		}
		for i, resp := range resps {
			if order[i].cluster == c.p.target {
				d.fromTarget(c, resp)
			}
		}
		merged := resps[0]
		lists := make([][]RT, len(resps))
		for i, resp := range resps {
			lists[i] = *d.respTopics(resp)
			if d.throttle != nil {
				*d.throttle(merged) = maxThrottle(*d.throttle(merged), *d.throttle(resp))
			}
		}
		*d.respTopics(merged) = mergeTopics(lists, d.respAcc)
		return merged.AppendTo(nil), nil
	}, nil
}

var handleListOffsets = partitioned[kmsg.ListOffsetsRequest, *kmsg.ListOffsetsRequest, kmsg.ListOffsetsResponse, *kmsg.ListOffsetsResponse,
	kmsg.ListOffsetsRequestTopic, kmsg.ListOffsetsRequestTopicPartition, kmsg.ListOffsetsResponseTopic, kmsg.ListOffsetsResponseTopicPartition]{
	topics: func(r *kmsg.ListOffsetsRequest) *[]kmsg.ListOffsetsRequestTopic { return &r.Topics },
	reqAcc: topicAccess[kmsg.ListOffsetsRequestTopic, kmsg.ListOffsetsRequestTopicPartition]{
		key:        func(t *kmsg.ListOffsetsRequestTopic) string { return t.Topic },
		partitions: func(t *kmsg.ListOffsetsRequestTopic) []kmsg.ListOffsetsRequestTopicPartition { return t.Partitions },
		setParts:   func(t *kmsg.ListOffsetsRequestTopic, p []kmsg.ListOffsetsRequestTopicPartition) { t.Partitions = p },
		partition:  func(p *kmsg.ListOffsetsRequestTopicPartition) int32 { return p.Partition },
	},
	respTopics: func(r *kmsg.ListOffsetsResponse) *[]kmsg.ListOffsetsResponseTopic { return &r.Topics },
	respAcc: topicAccess[kmsg.ListOffsetsResponseTopic, kmsg.ListOffsetsResponseTopicPartition]{
		key:        func(t *kmsg.ListOffsetsResponseTopic) string { return t.Topic },
		partitions: func(t *kmsg.ListOffsetsResponseTopic) []kmsg.ListOffsetsResponseTopicPartition { return t.Partitions },
		setParts:   func(t *kmsg.ListOffsetsResponseTopic, p []kmsg.ListOffsetsResponseTopicPartition) { t.Partitions = p },
	},
	throttle:   func(r *kmsg.ListOffsetsResponse) *int32 { return &r.ThrottleMillis },
	toTarget:   func(_ *clientConn, topics []kmsg.ListOffsetsRequestTopic) { listOffsetsToTarget(topics) },
	fromTarget: (*clientConn).listOffsetsToVirtual,
}.handle

var forwardOffsetForLeaderEpoch = partitioned[kmsg.OffsetForLeaderEpochRequest, *kmsg.OffsetForLeaderEpochRequest, kmsg.OffsetForLeaderEpochResponse, *kmsg.OffsetForLeaderEpochResponse,
	kmsg.OffsetForLeaderEpochRequestTopic, kmsg.OffsetForLeaderEpochRequestTopicPartition, kmsg.OffsetForLeaderEpochResponseTopic, kmsg.OffsetForLeaderEpochResponseTopicPartition]{
	topics: func(r *kmsg.OffsetForLeaderEpochRequest) *[]kmsg.OffsetForLeaderEpochRequestTopic { return &r.Topics },
	reqAcc: topicAccess[kmsg.OffsetForLeaderEpochRequestTopic, kmsg.OffsetForLeaderEpochRequestTopicPartition]{
		key: func(t *kmsg.OffsetForLeaderEpochRequestTopic) string { return t.Topic },
		partitions: func(t *kmsg.OffsetForLeaderEpochRequestTopic) []kmsg.OffsetForLeaderEpochRequestTopicPartition {
			return t.Partitions
		},
		setParts: func(t *kmsg.OffsetForLeaderEpochRequestTopic, p []kmsg.OffsetForLeaderEpochRequestTopicPartition) {
			t.Partitions = p
		},
		partition: func(p *kmsg.OffsetForLeaderEpochRequestTopicPartition) int32 { return p.Partition },
	},
	respTopics: func(r *kmsg.OffsetForLeaderEpochResponse) *[]kmsg.OffsetForLeaderEpochResponseTopic { return &r.Topics },
	respAcc: topicAccess[kmsg.OffsetForLeaderEpochResponseTopic, kmsg.OffsetForLeaderEpochResponseTopicPartition]{
		key: func(t *kmsg.OffsetForLeaderEpochResponseTopic) string { return t.Topic },
		partitions: func(t *kmsg.OffsetForLeaderEpochResponseTopic) []kmsg.OffsetForLeaderEpochResponseTopicPartition {
			return t.Partitions
		},
		setParts: func(t *kmsg.OffsetForLeaderEpochResponseTopic, p []kmsg.OffsetForLeaderEpochResponseTopicPartition) {
			t.Partitions = p
		},
	},
	throttle: func(r *kmsg.OffsetForLeaderEpochResponse) *int32 { return &r.ThrottleMillis },
}.handle

var handleDeleteRecords = partitioned[kmsg.DeleteRecordsRequest, *kmsg.DeleteRecordsRequest, kmsg.DeleteRecordsResponse, *kmsg.DeleteRecordsResponse,
	kmsg.DeleteRecordsRequestTopic, kmsg.DeleteRecordsRequestTopicPartition, kmsg.DeleteRecordsResponseTopic, kmsg.DeleteRecordsResponseTopicPartition]{
	topics: func(r *kmsg.DeleteRecordsRequest) *[]kmsg.DeleteRecordsRequestTopic { return &r.Topics },
	reqAcc: topicAccess[kmsg.DeleteRecordsRequestTopic, kmsg.DeleteRecordsRequestTopicPartition]{
		key:        func(t *kmsg.DeleteRecordsRequestTopic) string { return t.Topic },
		partitions: func(t *kmsg.DeleteRecordsRequestTopic) []kmsg.DeleteRecordsRequestTopicPartition { return t.Partitions },
		setParts:   func(t *kmsg.DeleteRecordsRequestTopic, p []kmsg.DeleteRecordsRequestTopicPartition) { t.Partitions = p },
		partition:  func(p *kmsg.DeleteRecordsRequestTopicPartition) int32 { return p.Partition },
	},
	respTopics: func(r *kmsg.DeleteRecordsResponse) *[]kmsg.DeleteRecordsResponseTopic { return &r.Topics },
	respAcc: topicAccess[kmsg.DeleteRecordsResponseTopic, kmsg.DeleteRecordsResponseTopicPartition]{
		key: func(t *kmsg.DeleteRecordsResponseTopic) string { return t.Topic },
		partitions: func(t *kmsg.DeleteRecordsResponseTopic) []kmsg.DeleteRecordsResponseTopicPartition {
			return t.Partitions
		},
		setParts: func(t *kmsg.DeleteRecordsResponseTopic, p []kmsg.DeleteRecordsResponseTopicPartition) {
			t.Partitions = p
		},
	},
	throttle:   func(r *kmsg.DeleteRecordsResponse) *int32 { return &r.ThrottleMillis },
	toTarget:   (*clientConn).deleteRecordsToTarget,
	fromTarget: (*clientConn).deleteRecordsToVirtual,
}.handle

var handleDescribeProducers = partitioned[kmsg.DescribeProducersRequest, *kmsg.DescribeProducersRequest, kmsg.DescribeProducersResponse, *kmsg.DescribeProducersResponse,
	kmsg.DescribeProducersRequestTopic, int32, kmsg.DescribeProducersResponseTopic, kmsg.DescribeProducersResponseTopicPartition]{
	topics: func(r *kmsg.DescribeProducersRequest) *[]kmsg.DescribeProducersRequestTopic { return &r.Topics },
	reqAcc: topicAccess[kmsg.DescribeProducersRequestTopic, int32]{
		key:        func(t *kmsg.DescribeProducersRequestTopic) string { return t.Topic },
		partitions: func(t *kmsg.DescribeProducersRequestTopic) []int32 { return t.Partitions },
		setParts:   func(t *kmsg.DescribeProducersRequestTopic, p []int32) { t.Partitions = p },
		partition:  func(p *int32) int32 { return *p },
	},
	respTopics: func(r *kmsg.DescribeProducersResponse) *[]kmsg.DescribeProducersResponseTopic { return &r.Topics },
	respAcc: topicAccess[kmsg.DescribeProducersResponseTopic, kmsg.DescribeProducersResponseTopicPartition]{
		key: func(t *kmsg.DescribeProducersResponseTopic) string { return t.Topic },
		partitions: func(t *kmsg.DescribeProducersResponseTopic) []kmsg.DescribeProducersResponseTopicPartition {
			return t.Partitions
		},
		setParts: func(t *kmsg.DescribeProducersResponseTopic, p []kmsg.DescribeProducersResponseTopicPartition) {
			t.Partitions = p
		},
	},
	throttle: func(r *kmsg.DescribeProducersResponse) *int32 { return &r.ThrottleMillis },
	// A flipped topic's producers write the target: it knows them (under
	// the producer ids the proxy got there).
	toTarget:   func(*clientConn, []kmsg.DescribeProducersRequestTopic) {},
	fromTarget: (*clientConn).describeProducersToVirtual,
}.handle

// handleOffsetForLeaderEpoch answers partitions of flipped topics itself:
// the epochs a client knows are the source's, meaningless to the target,
// whose answer could make the client believe its log was truncated and
// reset its position. The virtual log is never truncated under a client, so
// the answer vouches for the epoch asked with an end offset no position
// exceeds. Other partitions go to their source leaders.
func handleOffsetForLeaderEpoch(c *clientConn, r *protocol.Request) (finishFunc, error) {
	if c.p.target == nil {
		return forwardOffsetForLeaderEpoch(c, r)
	}
	req, err := decodeRequest[kmsg.OffsetForLeaderEpochRequest](r)
	if err != nil {
		return nil, err
	}
	var forward []kmsg.OffsetForLeaderEpochRequestTopic
	local := kmsg.NewPtrOffsetForLeaderEpochResponse()
	local.Version = r.APIVersion
	for _, t := range req.Topics {
		if !c.p.servedByTarget(t.Topic) {
			forward = append(forward, t)
			continue
		}
		rt := kmsg.NewOffsetForLeaderEpochResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			rp.Partition, rp.LeaderEpoch, rp.EndOffset = p.Partition, p.LeaderEpoch, math.MaxInt64
			rt.Partitions = append(rt.Partitions, rp)
		}
		local.Topics = append(local.Topics, rt)
	}
	if len(local.Topics) == 0 {
		return forwardOffsetForLeaderEpoch(c, r)
	}
	if len(forward) == 0 {
		return respond(local), nil
	}
	sub := *req
	sub.Topics = forward
	subReq := *r
	subReq.Body = sub.AppendTo(nil)
	finish, err := forwardOffsetForLeaderEpoch(c, &subReq)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		body, err := finish(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := decodeResponse[kmsg.OffsetForLeaderEpochResponse](body, r.APIVersion)
		if err != nil {
			return nil, err
		}
		resp.Topics = append(resp.Topics, local.Topics...)
		return resp.AppendTo(nil), nil
	}, nil
}
