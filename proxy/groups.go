package proxy

import (
	"cmp"
	"context"
	"slices"

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
		return handleGroupRequest(c, r, groupOf(req), "")
	}
}

// handleJoinGroup is groupRouted plus the member id, which a cutover needs
// to know when every member has rejoined.
func handleJoinGroup(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.JoinGroupRequest](r)
	if err != nil {
		return nil, err
	}
	return handleGroupRequest(c, r, req.Group, req.MemberID)
}

// handleInitProducerID goes to the transaction coordinator for transactional
// producers and to any broker for idempotent ones.
func handleInitProducerID(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.InitProducerIDRequest](r)
	if err != nil {
		return nil, err
	}
	if req.TransactionalID != nil {
		broker, _ := c.p.source.coordinator(c.ctx, 1, *req.TransactionalID, false)
		cl, err := c.forward(broker, r, r.Body, true)
		if err != nil || c.p.target == nil {
			if err != nil {
				return nil, err
			}
			return cl.wait, nil
		}
		id := *req.TransactionalID
		return func(ctx context.Context) ([]byte, error) {
			body, err := cl.wait(ctx)
			if err != nil {
				return nil, err
			}
			// Its transactions run on the source until a flip moves them.
			if resp, err := decodeResponse[kmsg.InitProducerIDResponse](body, r.APIVersion); err == nil && resp.ErrorCode == 0 {
				c.p.txnInitialized(id, resp.ProducerID, resp.ProducerEpoch)
			}
			return body, nil
		}, nil
	}
	cl, from, err := c.forwardAny(r, r.Body)
	if err != nil {
		return nil, err
	}
	if from != c.p.target {
		return cl.wait, nil
	}
	return func(ctx context.Context) ([]byte, error) {
		body, err := cl.wait(ctx)
		if err != nil {
			return nil, err
		}
		// An id the target issued needs no mapping toward the target.
		if resp, err := decodeResponse[kmsg.InitProducerIDResponse](body, r.APIVersion); err == nil && resp.ErrorCode == 0 {
			c.p.pids.issuedByTarget(resp.ProducerID, resp.ProducerEpoch)
		}
		return body, nil
	}, nil
}

// splitByCoordinator groups keys by their coordinator, in the cluster that
// serves each group now (transactional ids always live on the source).
func (c *clientConn) splitByCoordinator(keyType int8, keys []string) (map[brokerKey][]string, []brokerKey) {
	groups := make(map[brokerKey][]string)
	var order []brokerKey
	for _, k := range keys {
		home := c.p.source
		if keyType == 0 {
			home = c.p.homeOf(c.p.groupPhase(k))
		}
		id, _ := home.coordinator(c.ctx, keyType, k, false)
		b := brokerKey{home, id}
		if _, ok := groups[b]; !ok {
			order = append(order, b)
		}
		groups[b] = append(groups[b], k)
	}
	return groups, order
}

// scatterKeyed sends one sub-request per (cluster, broker), in order.
func (c *clientConn) scatterKeyed(r *protocol.Request, order []brokerKey, build func(brokerKey) kmsg.Request) ([]*call, error) {
	calls := make([]*call, 0, len(order))
	for _, b := range order {
		sub := build(b)
		sub.SetVersion(r.APIVersion)
		cl, err := c.forwardTo(b.cluster, b.id, r, sub.AppendTo(nil), true)
		if err != nil {
			return nil, err
		}
		calls = append(calls, cl)
	}
	return calls, nil
}

// keyedSplit describes a request about several groups or transactional ids,
// split per coordinator and merged back.
type keyedSplit[Q any, PQ interface {
	*Q
	kmsg.Request
}, S any, PS interface {
	*S
	kmsg.Response
}] struct {
	keyType int8
	keys    func(PQ) []string
	subset  func(req PQ, keys []string) // restrict req to keys
	merge   func(dst, src PS)
}

func (d keyedSplit[Q, PQ, S, PS]) handle(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[Q, PQ](r)
	if err != nil {
		return nil, err
	}
	split, order := c.splitByCoordinator(d.keyType, d.keys(req))
	if len(order) == 0 {
		order = []brokerKey{{c.p.source, c.p.source.anyBroker()}}
	}
	var calls []*call
	if len(order) == 1 {
		cl, err := c.forwardTo(order[0].cluster, order[0].id, r, r.Body, true)
		if err != nil {
			return nil, err
		}
		calls = []*call{cl}
	} else if calls, err = c.scatterKeyed(r, order, func(b brokerKey) kmsg.Request {
		sub := *req
		d.subset(&sub, split[b])
		return PQ(&sub)
	}); err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		var merged PS
		for i, cl := range calls {
			body, err := cl.wait(ctx)
			if err != nil {
				return nil, err
			}
			if r.APIKey == 9 && order[i].cluster == c.p.target {
				if body, err = c.offsetsFromTarget(body, r.APIVersion); err != nil {
					return nil, err
				}
			}
			if len(calls) == 1 {
				return body, nil
			}
			resp, err := decodeResponse[S, PS](body, r.APIVersion)
			if err != nil {
				return nil, err
			}
			if merged == nil {
				merged = resp
			} else {
				d.merge(merged, resp)
			}
		}
		return merged.AppendTo(nil), nil
	}, nil
}

// handleOffsetFetch serves OffsetFetch: one group before v8, several after.
func handleOffsetFetch(c *clientConn, r *protocol.Request) (finishFunc, error) {
	if r.APIVersion < 8 {
		req, err := decodeRequest[kmsg.OffsetFetchRequest](r)
		if err != nil {
			return nil, err
		}
		return handleGroupRequest(c, r, req.Group, "")
	}
	return offsetFetchSplit.handle(c, r)
}

var offsetFetchSplit = keyedSplit[kmsg.OffsetFetchRequest, *kmsg.OffsetFetchRequest, kmsg.OffsetFetchResponse, *kmsg.OffsetFetchResponse]{
	keys: func(r *kmsg.OffsetFetchRequest) []string {
		out := make([]string, len(r.Groups))
		for i, g := range r.Groups {
			out[i] = g.Group
		}
		return out
	},
	subset: func(r *kmsg.OffsetFetchRequest, keys []string) {
		all := r.Groups
		r.Groups = nil
		for _, g := range all {
			if slices.Contains(keys, g.Group) {
				r.Groups = append(r.Groups, g)
			}
		}
	},
	merge: func(dst, src *kmsg.OffsetFetchResponse) {
		dst.Groups = append(dst.Groups, src.Groups...)
		dst.ThrottleMillis = maxThrottle(dst.ThrottleMillis, src.ThrottleMillis)
	},
}

var handleDescribeGroups = keyedSplit[kmsg.DescribeGroupsRequest, *kmsg.DescribeGroupsRequest, kmsg.DescribeGroupsResponse, *kmsg.DescribeGroupsResponse]{
	keys:   func(r *kmsg.DescribeGroupsRequest) []string { return r.Groups },
	subset: func(r *kmsg.DescribeGroupsRequest, keys []string) { r.Groups = keys },
	merge: func(dst, src *kmsg.DescribeGroupsResponse) {
		dst.Groups = append(dst.Groups, src.Groups...)
		dst.ThrottleMillis = maxThrottle(dst.ThrottleMillis, src.ThrottleMillis)
	},
}.handle

var handleDeleteGroups = keyedSplit[kmsg.DeleteGroupsRequest, *kmsg.DeleteGroupsRequest, kmsg.DeleteGroupsResponse, *kmsg.DeleteGroupsResponse]{
	keys:   func(r *kmsg.DeleteGroupsRequest) []string { return r.Groups },
	subset: func(r *kmsg.DeleteGroupsRequest, keys []string) { r.Groups = keys },
	merge: func(dst, src *kmsg.DeleteGroupsResponse) {
		dst.Groups = append(dst.Groups, src.Groups...)
		dst.ThrottleMillis = maxThrottle(dst.ThrottleMillis, src.ThrottleMillis)
	},
}.handle

var handleConsumerGroupDescribe = keyedSplit[kmsg.ConsumerGroupDescribeRequest, *kmsg.ConsumerGroupDescribeRequest, kmsg.ConsumerGroupDescribeResponse, *kmsg.ConsumerGroupDescribeResponse]{
	keys:   func(r *kmsg.ConsumerGroupDescribeRequest) []string { return r.Groups },
	subset: func(r *kmsg.ConsumerGroupDescribeRequest, keys []string) { r.Groups = keys },
	merge: func(dst, src *kmsg.ConsumerGroupDescribeResponse) {
		dst.Groups = append(dst.Groups, src.Groups...)
		dst.ThrottleMillis = maxThrottle(dst.ThrottleMillis, src.ThrottleMillis)
	},
}.handle

var handleDescribeTransactions = keyedSplit[kmsg.DescribeTransactionsRequest, *kmsg.DescribeTransactionsRequest, kmsg.DescribeTransactionsResponse, *kmsg.DescribeTransactionsResponse]{
	keyType: 1,
	keys:    func(r *kmsg.DescribeTransactionsRequest) []string { return r.TransactionalIDs },
	subset:  func(r *kmsg.DescribeTransactionsRequest, keys []string) { r.TransactionalIDs = keys },
	merge: func(dst, src *kmsg.DescribeTransactionsResponse) {
		dst.TransactionStates = append(dst.TransactionStates, src.TransactionStates...)
		dst.ThrottleMillis = maxThrottle(dst.ThrottleMillis, src.ThrottleMillis)
	},
}.handle

// broadcast sends a request to every source broker and merges the answers:
// for listings (groups, transactions) that each broker answers for its own
// share, while the client sees one broker, the proxy.
func broadcast[S any, PS interface {
	*S
	kmsg.Response
}](merge func(dst, src PS)) handler {
	return func(c *clientConn, r *protocol.Request) (finishFunc, error) {
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
			resps, err := gather[S, PS](ctx, calls, r.APIVersion)
			if err != nil {
				return nil, err
			}
			for _, resp := range resps[1:] {
				merge(resps[0], resp)
			}
			return resps[0].AppendTo(nil), nil
		}, nil
	}
}

var handleListGroups = broadcast(func(dst, src *kmsg.ListGroupsResponse) {
	dst.Groups = append(dst.Groups, src.Groups...)
	dst.ThrottleMillis = maxThrottle(dst.ThrottleMillis, src.ThrottleMillis)
	dst.ErrorCode = cmp.Or(dst.ErrorCode, src.ErrorCode)
})

var handleListTransactions = broadcast(func(dst, src *kmsg.ListTransactionsResponse) {
	dst.TransactionStates = append(dst.TransactionStates, src.TransactionStates...)
	dst.UnknownStateFilters = append(dst.UnknownStateFilters, src.UnknownStateFilters...)
	dst.ThrottleMillis = maxThrottle(dst.ThrottleMillis, src.ThrottleMillis)
	dst.ErrorCode = cmp.Or(dst.ErrorCode, src.ErrorCode)
})
