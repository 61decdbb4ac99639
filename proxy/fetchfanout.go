package proxy

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// A client fetch whose partitions are led by several upstream brokers is
// split into one sub-fetch per broker. A broker long-polls a sub-fetch that
// finds nothing new for up to the client's max wait (5 s in franz-go), so
// waiting for every sub-fetch would hold the records another broker already
// returned for that long: a consumer of a topic with idle partitions would
// get one answer per max wait. A broker answering directly returns as soon
// as min bytes are there, whatever its other partitions do; the proxy does
// the same:
//
//   - The answer goes to the client as soon as the sub-fetches that are back
//     hold min bytes of records (or an error), or all are back.
//   - A partition whose sub-fetch is still out is answered empty, with the
//     high watermark, last stable offset and log start offset its broker
//     gave last: what a broker with nothing new says. Until those are known
//     (a partition's first fetch on the connection), its broker is asked
//     with no max wait, so that it answers at once and tells them.
//   - The sub-fetch still out stays pending (fanout). The client's next
//     fetch asks the same partitions at the same offsets, having got
//     nothing for them, and waits for that same sub-fetch instead of sending
//     another one behind it: a broker reads a connection's next request
//     only once it answered the last, so a second one would wait out the
//     first's long poll anyway, and every fetch would add one more.
//   - A fetch asking anything else of that broker (other partitions or
//     offsets) drops the pending sub-fetch (its answer is discarded when
//     it comes) and sends its own.
//
// Only without a target: with one, a sub-fetch to the target is translated
// with the offset maps read for its own request, and this stays simple by
// waiting for all, as before.

// fanoutFetch is a sub-fetch sent for an earlier client fetch and not yet
// used: its call, and what it asked.
type fanoutFetch struct {
	call  *call
	asked []kmsg.FetchRequestTopic
}

// partitionMarks are the offsets a broker reports for a partition besides
// its records; an empty answer for a partition repeats the last ones.
type partitionMarks struct {
	highWatermark, lastStable, logStart int64
}

// fanoutState is one client connection's: the pending sub-fetches and the
// marks, used by its reader (which sends) and its writer (which answers).
type fanoutState struct {
	mu      sync.Mutex
	pending map[brokerKey]*fanoutFetch
	marks   map[string]partitionMarks // partitionKey(topic key, partition)
}

// sendSubFetches sends a split fetch's sub-fetches, or takes over a pending
// one that asks exactly the same of its broker.
func (c *clientConn) sendSubFetches(split map[brokerKey][]kmsg.FetchRequestTopic, order []brokerKey, send func(brokerKey) (*call, error)) (calls []*call, backlogged []bool, err error) {
	calls = make([]*call, len(order))
	backlogged = make([]bool, len(order))
	c.fanout.mu.Lock()
	if c.fanout.pending == nil {
		c.fanout.pending = make(map[brokerKey]*fanoutFetch)
	}
	for i, b := range order {
		backlogged[i] = c.hasBacklog(split[b])
		if p := c.fanout.pending[b]; p != nil {
			delete(c.fanout.pending, b)
			if sameFetch(p.asked, split[b]) {
				calls[i] = p.call
			}
		}
	}
	c.fanout.mu.Unlock() // send reads the marks
	for i, b := range order {
		if calls[i] != nil {
			continue
		}
		if calls[i], err = send(b); err != nil {
			return nil, nil, err
		}
	}
	return calls, backlogged, nil
}

// hasBacklog reports whether a sub-fetch asks a partition from before its
// last known high watermark: its broker has records for it and answers at
// once. c.fanout.mu must be held.
func (c *clientConn) hasBacklog(asked []kmsg.FetchRequestTopic) bool {
	for _, t := range asked {
		for _, p := range t.Partitions {
			if m, ok := c.fanout.marks[partitionKey(fetchTopics.key(&t), p.Partition)]; ok && p.FetchOffset < m.highWatermark {
				return true
			}
		}
	}
	return false
}

// sameFetch reports whether two sub-fetches ask the same partitions from
// the same offsets with the same limits.
func sameFetch(a, b []kmsg.FetchRequestTopic) bool {
	return slices.EqualFunc(a, b, func(x, y kmsg.FetchRequestTopic) bool {
		return x.Topic == y.Topic && x.TopicID == y.TopicID &&
			slices.EqualFunc(x.Partitions, y.Partitions, func(p, q kmsg.FetchRequestTopicPartition) bool {
				return p.Partition == q.Partition && p.FetchOffset == q.FetchOffset &&
					p.PartitionMaxBytes == q.PartitionMaxBytes && p.CurrentLeaderEpoch == q.CurrentLeaderEpoch
			})
	})
}

// awaitSubFetches waits for a split fetch's sub-fetches as a broker would
// for its partitions: until those back hold min bytes of records or an
// error (and the backlogged ones are back, or had backlogGrace more), or all are
// back, or the max wait has passed (with slack for the brokers' own round
// trips). It returns the decoded answers, nil for those still out, which
// stay pending.
func (c *clientConn) awaitSubFetches(ctx context.Context, calls []*call, backlogged []bool, split map[brokerKey][]kmsg.FetchRequestTopic, order []brokerKey, req *kmsg.FetchRequest, version int16) ([]*kmsg.FetchResponse, error) {
	// One watcher per call reports its index once it is done; all end
	// when this returns.
	done := make(chan int, len(calls))
	stop := make(chan struct{})
	defer close(stop)
	for i, cl := range calls {
		go func() {
			select {
			case <-cl.done:
				done <- i
			case <-stop:
			}
		}()
	}
	deadline := time.NewTimer(time.Duration(req.MaxWaitMillis)*time.Millisecond + fanoutSlack)
	defer deadline.Stop()
	resps := make([]*kmsg.FetchResponse, len(calls))
	var got int64              // record bytes in the answers back
	var grace <-chan time.Time // once min bytes are back: the backlogged ones' last chance
wait:
	for back := 0; back < len(calls); {
		if back > 0 && (got >= int64(max(req.MinBytes, 1)) || anyFetchError(resps)) && c.canAnswerWithout(resps, split, order) {
			if backloggedBack(resps, backlogged) {
				break
			}
			if grace == nil {
				t := time.NewTimer(backlogGrace)
				defer t.Stop()
				grace = t.C
			}
		}
		var i int
		select {
		case i = <-done:
		case <-grace:
			break wait
		case <-deadline.C:
			if c.canAnswerWithout(resps, split, order) {
				return c.leavePending(calls, resps, split, order), nil
			}
			continue // marks not known yet: wait for all, as before
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		body, err := calls[i].wait(ctx)
		if err != nil {
			return nil, err
		}
		if resps[i], err = decodeResponse[kmsg.FetchResponse](body, version); err != nil {
			return nil, err
		}
		got += recordBytes(resps[i])
		back++
	}
	return c.leavePending(calls, resps, split, order), nil
}

// leavePending keeps the sub-fetches still out for the client's next fetch.
func (c *clientConn) leavePending(calls []*call, resps []*kmsg.FetchResponse, split map[brokerKey][]kmsg.FetchRequestTopic, order []brokerKey) []*kmsg.FetchResponse {
	c.fanout.mu.Lock()
	defer c.fanout.mu.Unlock()
	for i, resp := range resps {
		if resp == nil {
			c.fanout.pending[order[i]] = &fanoutFetch{call: calls[i], asked: split[order[i]]}
		}
	}
	return resps
}

// backloggedBack reports whether every sub-fetch asking records its broker
// is known to have (hasBacklog) is back. Such a broker answers at once:
// waiting a moment for it puts every busy broker's records in one answer,
// where answering with the first would cost a client round trip per
// broker. A broker without a known backlog long-polls, and is not waited
// for.
func backloggedBack(resps []*kmsg.FetchResponse, backlogged []bool) bool {
	for i, r := range resps {
		if r == nil && backlogged[i] {
			return false
		}
	}
	return true
}

// backlogGrace bounds that moment.
const backlogGrace = 5 * time.Millisecond

// fanoutMaxWait caps the long poll of a sub-fetch. A pending sub-fetch the
// client's next fetch cannot take over (it asks other partitions of that
// broker) still holds the upstream connection until its broker answers,
// and the next sub-fetch waits behind it: up to the client's whole max wait
// (5 s in franz-go) for records that arrived meanwhile in a partition only
// the next one asks. Capped, that wait is at most 500 ms, the Java client's
// default max wait; an idle broker then gets a fetch every 500 ms from each
// consumer connection.
const fanoutMaxWait = 500

// fanoutSlack is how long past the client's max wait the proxy still waits
// for a sub-fetch before answering without it.
const fanoutSlack = 100 * time.Millisecond

// canAnswerWithout reports whether every partition of the sub-fetches still
// out has known marks to answer it empty with.
func (c *clientConn) canAnswerWithout(resps []*kmsg.FetchResponse, split map[brokerKey][]kmsg.FetchRequestTopic, order []brokerKey) bool {
	for i, resp := range resps {
		if resp == nil && !c.marksKnown(split[order[i]]) {
			return false
		}
	}
	return true
}

func anyFetchError(resps []*kmsg.FetchResponse) bool {
	for _, r := range resps {
		if r == nil {
			continue
		}
		if r.ErrorCode != 0 {
			return true
		}
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					return true
				}
			}
		}
	}
	return false
}

func recordBytes(r *kmsg.FetchResponse) int64 {
	var n int64
	for _, t := range r.Topics {
		for _, p := range t.Partitions {
			n += int64(len(p.RecordBatches))
		}
	}
	return n
}

// emptyFetchAnswer answers a sub-fetch still out: its partitions, no
// records, the marks last seen.
func (c *clientConn) emptyFetchAnswer(asked []kmsg.FetchRequestTopic) *kmsg.FetchResponse {
	c.fanout.mu.Lock()
	defer c.fanout.mu.Unlock()
	resp := kmsg.NewPtrFetchResponse()
	for _, t := range asked {
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic, rt.TopicID = t.Topic, t.TopicID
		for _, p := range t.Partitions {
			m := c.fanout.marks[partitionKey(fetchTopics.key(&t), p.Partition)]
			rp := kmsg.NewFetchResponseTopicPartition()
			rp.Partition = p.Partition
			rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = m.highWatermark, m.lastStable, m.logStart
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// marksKnown reports whether every partition of a sub-fetch has marks, so
// that it can be answered without. A sub-fetch that has not is sent with
// no max wait: its broker answers at once and tells them, where a long poll
// on an idle broker would hold the client's first fetch for the whole wait.
func (c *clientConn) marksKnown(asked []kmsg.FetchRequestTopic) bool {
	c.fanout.mu.Lock()
	defer c.fanout.mu.Unlock()
	for _, t := range asked {
		for _, p := range t.Partitions {
			if _, ok := c.fanout.marks[partitionKey(fetchTopics.key(&t), p.Partition)]; !ok {
				return false
			}
		}
	}
	return true
}

// rememberMarks records the marks of every partition answered without
// error.
func (c *clientConn) rememberMarks(resps []*kmsg.FetchResponse) {
	c.fanout.mu.Lock()
	defer c.fanout.mu.Unlock()
	if c.fanout.marks == nil {
		c.fanout.marks = make(map[string]partitionMarks)
	}
	for _, r := range resps {
		if r == nil {
			continue
		}
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				if p.ErrorCode == 0 && p.HighWatermark >= 0 {
					c.fanout.marks[partitionKey(fetchResponseTopics.key(&t), p.Partition)] = partitionMarks{p.HighWatermark, p.LastStableOffset, p.LogStartOffset}
				}
			}
		}
	}
}
