package proxy

import (
	"context"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Requests about one consumer group go to that group's upstream coordinator,
// unchanged. Requests about several groups are split per coordinator and the
// answers concatenated.

func groupRouted[R any, PR interface {
	*R
	kmsg.Request
}](groupOf func(PR) string) handler {
	return func(c *clientConn, r *protocol.Request) (finishFunc, error) {
		req, err := decodeRequest[R, PR](r)
		if err != nil {
			return nil, err
		}
		broker, _ := c.p.source.coordinator(c.ctx, 0, groupOf(req), false)
		return c.forwardRaw(broker, r)
	}
}

func txnRouted[R any, PR interface {
	*R
	kmsg.Request
}](txnOf func(PR) string) handler {
	return func(c *clientConn, r *protocol.Request) (finishFunc, error) {
		req, err := decodeRequest[R, PR](r)
		if err != nil {
			return nil, err
		}
		broker, _ := c.p.source.coordinator(c.ctx, 1, txnOf(req), false)
		return c.forwardRaw(broker, r)
	}
}

// handleInitProducerID goes to the transaction coordinator for transactional
// producers and to any broker for idempotent ones.
func handleInitProducerID(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.InitProducerIDRequest](r)
	if err != nil {
		return nil, err
	}
	broker := c.p.source.anyBroker()
	if req.TransactionalID != nil {
		broker, _ = c.p.source.coordinator(c.ctx, 1, *req.TransactionalID, false)
	}
	return c.forwardRaw(broker, r)
}

// splitByCoordinator groups keys by their upstream coordinator.
func (c *clientConn) splitByCoordinator(keyType int8, keys []string) (map[int32][]string, []int32) {
	groups := make(map[int32][]string)
	var order []int32
	for _, k := range keys {
		b, _ := c.p.source.coordinator(c.ctx, keyType, k, false)
		if _, ok := groups[b]; !ok {
			order = append(order, b)
		}
		groups[b] = append(groups[b], k)
	}
	return groups, order
}

func handleOffsetFetch(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.OffsetFetchRequest](r)
	if err != nil {
		return nil, err
	}
	if r.APIVersion < 8 {
		broker, _ := c.p.source.coordinator(c.ctx, 0, req.Group, false)
		return c.forwardRaw(broker, r)
	}
	byGroup := make(map[string]kmsg.OffsetFetchRequestGroup, len(req.Groups))
	names := make([]string, 0, len(req.Groups))
	for _, g := range req.Groups {
		byGroup[g.Group] = g
		names = append(names, g.Group)
	}
	split, order := c.splitByCoordinator(0, names)
	if len(order) == 1 {
		return c.forwardRaw(order[0], r)
	}
	calls, err := c.scatter(r, order, func(b int32) kmsg.Request {
		sub := *req
		sub.Groups = nil
		for _, g := range split[b] {
			sub.Groups = append(sub.Groups, byGroup[g])
		}
		return &sub
	}, true)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		resps, err := gather[kmsg.OffsetFetchResponse](ctx, calls, r.APIVersion)
		if err != nil {
			return nil, err
		}
		merged := resps[0]
		for _, resp := range resps[1:] {
			merged.Groups = append(merged.Groups, resp.Groups...)
			merged.ThrottleMillis = maxThrottle(merged.ThrottleMillis, resp.ThrottleMillis)
		}
		return merged.AppendTo(nil), nil
	}, nil
}

func handleDescribeGroups(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.DescribeGroupsRequest](r)
	if err != nil {
		return nil, err
	}
	split, order := c.splitByCoordinator(0, req.Groups)
	if len(order) <= 1 {
		return c.forwardRaw(firstOr(order, c.p.source.anyBroker()), r)
	}
	calls, err := c.scatter(r, order, func(b int32) kmsg.Request {
		sub := *req
		sub.Groups = split[b]
		return &sub
	}, true)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		resps, err := gather[kmsg.DescribeGroupsResponse](ctx, calls, r.APIVersion)
		if err != nil {
			return nil, err
		}
		merged := resps[0]
		for _, resp := range resps[1:] {
			merged.Groups = append(merged.Groups, resp.Groups...)
			merged.ThrottleMillis = maxThrottle(merged.ThrottleMillis, resp.ThrottleMillis)
		}
		return merged.AppendTo(nil), nil
	}, nil
}

func handleDeleteGroups(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.DeleteGroupsRequest](r)
	if err != nil {
		return nil, err
	}
	split, order := c.splitByCoordinator(0, req.Groups)
	if len(order) <= 1 {
		return c.forwardRaw(firstOr(order, c.p.source.anyBroker()), r)
	}
	calls, err := c.scatter(r, order, func(b int32) kmsg.Request {
		sub := *req
		sub.Groups = split[b]
		return &sub
	}, true)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		resps, err := gather[kmsg.DeleteGroupsResponse](ctx, calls, r.APIVersion)
		if err != nil {
			return nil, err
		}
		merged := resps[0]
		for _, resp := range resps[1:] {
			merged.Groups = append(merged.Groups, resp.Groups...)
			merged.ThrottleMillis = maxThrottle(merged.ThrottleMillis, resp.ThrottleMillis)
		}
		return merged.AppendTo(nil), nil
	}, nil
}

func handleConsumerGroupDescribe(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.ConsumerGroupDescribeRequest](r)
	if err != nil {
		return nil, err
	}
	split, order := c.splitByCoordinator(0, req.Groups)
	if len(order) <= 1 {
		return c.forwardRaw(firstOr(order, c.p.source.anyBroker()), r)
	}
	calls, err := c.scatter(r, order, func(b int32) kmsg.Request {
		sub := *req
		sub.Groups = split[b]
		return &sub
	}, true)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		resps, err := gather[kmsg.ConsumerGroupDescribeResponse](ctx, calls, r.APIVersion)
		if err != nil {
			return nil, err
		}
		merged := resps[0]
		for _, resp := range resps[1:] {
			merged.Groups = append(merged.Groups, resp.Groups...)
			merged.ThrottleMillis = maxThrottle(merged.ThrottleMillis, resp.ThrottleMillis)
		}
		return merged.AppendTo(nil), nil
	}, nil
}

func handleDescribeTransactions(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.DescribeTransactionsRequest](r)
	if err != nil {
		return nil, err
	}
	split, order := c.splitByCoordinator(1, req.TransactionalIDs)
	if len(order) <= 1 {
		return c.forwardRaw(firstOr(order, c.p.source.anyBroker()), r)
	}
	calls, err := c.scatter(r, order, func(b int32) kmsg.Request {
		sub := *req
		sub.TransactionalIDs = split[b]
		return &sub
	}, true)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		resps, err := gather[kmsg.DescribeTransactionsResponse](ctx, calls, r.APIVersion)
		if err != nil {
			return nil, err
		}
		merged := resps[0]
		for _, resp := range resps[1:] {
			merged.TransactionStates = append(merged.TransactionStates, resp.TransactionStates...)
			merged.ThrottleMillis = maxThrottle(merged.ThrottleMillis, resp.ThrottleMillis)
		}
		return merged.AppendTo(nil), nil
	}, nil
}

// handleListGroups asks every upstream broker (each coordinates some
// groups) and concatenates; the client sees one broker, the proxy, so it
// would otherwise list only a fraction.
func handleListGroups(c *clientConn, r *protocol.Request) (finishFunc, error) {
	brokers := c.p.source.allBrokers()
	calls := make([]*call, 0, len(brokers))
	for _, b := range brokers {
		cl, err := c.forward(b, r, r.Body, true)
		if err != nil {
			return nil, err
		}
		calls = append(calls, cl)
	}
	return func(ctx context.Context) ([]byte, error) {
		resps, err := gather[kmsg.ListGroupsResponse](ctx, calls, r.APIVersion)
		if err != nil {
			return nil, err
		}
		merged := resps[0]
		for _, resp := range resps[1:] {
			merged.Groups = append(merged.Groups, resp.Groups...)
			merged.ThrottleMillis = maxThrottle(merged.ThrottleMillis, resp.ThrottleMillis)
			if merged.ErrorCode == 0 {
				merged.ErrorCode = resp.ErrorCode
			}
		}
		return merged.AppendTo(nil), nil
	}, nil
}

func handleListTransactions(c *clientConn, r *protocol.Request) (finishFunc, error) {
	brokers := c.p.source.allBrokers()
	calls := make([]*call, 0, len(brokers))
	for _, b := range brokers {
		cl, err := c.forward(b, r, r.Body, true)
		if err != nil {
			return nil, err
		}
		calls = append(calls, cl)
	}
	return func(ctx context.Context) ([]byte, error) {
		resps, err := gather[kmsg.ListTransactionsResponse](ctx, calls, r.APIVersion)
		if err != nil {
			return nil, err
		}
		merged := resps[0]
		for _, resp := range resps[1:] {
			merged.TransactionStates = append(merged.TransactionStates, resp.TransactionStates...)
			merged.UnknownStateFilters = append(merged.UnknownStateFilters, resp.UnknownStateFilters...)
			merged.ThrottleMillis = maxThrottle(merged.ThrottleMillis, resp.ThrottleMillis)
			if merged.ErrorCode == 0 {
				merged.ErrorCode = resp.ErrorCode
			}
		}
		return merged.AppendTo(nil), nil
	}, nil
}

func firstOr(ids []int32, fallback int32) int32 {
	if len(ids) > 0 {
		return ids[0]
	}
	return fallback
}
