package proxy

import (
	"context"
	"fmt"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// topicAccess lets the generic split and merge helpers walk the topics and
// partitions of any partitioned request or response type.
type topicAccess[T, P any] struct {
	key        func(*T) string // topic name, or id for topic-id versions
	partitions func(*T) []P
	setParts   func(*T, []P)
	partition  func(*P) int32
}

// splitByBroker groups the partitions of topics by the broker route assigns,
// keeping each broker's topics in request order. The returned order lists
// brokers by first appearance so that sends are deterministic.
func splitByBroker[T, P any, K comparable](topics []T, acc topicAccess[T, P], route func(topic string, partition int32) K) (map[K][]T, []K) {
	groups := make(map[K][]T)
	var order []K
	for i := range topics {
		t := &topics[i]
		key := acc.key(t)
		for _, p := range acc.partitions(t) {
			b := route(key, acc.partition(&p))
			g, seen := groups[b]
			if !seen {
				order = append(order, b)
			}
			if n := len(g); n > 0 && acc.key(&g[n-1]) == key {
				acc.setParts(&g[n-1], append(acc.partitions(&g[n-1]), p))
			} else {
				nt := *t
				acc.setParts(&nt, []P{p})
				g = append(g, nt)
			}
			groups[b] = g
		}
	}
	return groups, order
}

// mergeTopics concatenates per-broker topic lists, folding entries for the
// same topic into one.
func mergeTopics[T, P any](lists [][]T, acc topicAccess[T, P]) []T {
	if len(lists) == 1 {
		return lists[0]
	}
	var out []T
	index := make(map[string]int)
	for _, list := range lists {
		for _, t := range list {
			k := acc.key(&t)
			if i, ok := index[k]; ok {
				acc.setParts(&out[i], append(acc.partitions(&out[i]), acc.partitions(&t)...))
				continue
			}
			index[k] = len(out)
			out = append(out, t)
		}
	}
	return out
}

// scatter sends one encoded sub-request per broker, in order.
func (c *clientConn) scatter(r *protocol.Request, order []brokerKey, build func(broker brokerKey) kmsg.Request, expectResponse bool) ([]*call, error) {
	calls := make([]*call, 0, len(order))
	for _, b := range order {
		sub := build(b)
		sub.SetVersion(r.APIVersion)
		cl, err := c.forwardTo(b.cluster, b.id, r, sub.AppendTo(nil), expectResponse)
		if err != nil {
			return nil, err
		}
		calls = append(calls, cl)
	}
	return calls, nil
}

// gather waits for every call and decodes the responses.
func gather[R any, PR interface {
	*R
	kmsg.Response
}](ctx context.Context, calls []*call, version int16) ([]PR, error) {
	out := make([]PR, 0, len(calls))
	for _, cl := range calls {
		body, err := cl.wait(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := decodeResponse[R, PR](body, version)
		if err != nil {
			return nil, err
		}
		out = append(out, resp)
	}
	return out, nil
}

// decodeRequest parses a request body into its kmsg type.
func decodeRequest[R any, PR interface {
	*R
	kmsg.Request
}](r *protocol.Request) (PR, error) {
	req := PR(new(R))
	req.SetVersion(r.APIVersion)
	if err := req.ReadFrom(r.Body); err != nil {
		return nil, fmt.Errorf("%w: decode %s v%d: %v", protocol.ErrMalformed, kmsg.NameForKey(r.APIKey), r.APIVersion, err)
	}
	return req, nil
}

// decodeResponse parses a response body into its kmsg type.
func decodeResponse[R any, PR interface {
	*R
	kmsg.Response
}](body []byte, version int16) (PR, error) {
	resp := PR(new(R))
	resp.SetVersion(version)
	if err := resp.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("decode %s v%d response: %w", kmsg.NameForKey(resp.Key()), version, err)
	}
	return resp, nil
}

func maxThrottle(cur, next int32) int32 { return max(cur, next) }
