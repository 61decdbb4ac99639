package proxy

import (
	"context"
	"fmt"
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
// With a target the same holds, in virtual offsets:
//
//   - A sub-fetch to the target is answered through the offset maps
//     (fetchToVirtual) as soon as it is back, before its bytes count
//     towards min bytes and before its marks are remembered, so the marks
//     are virtual whichever cluster gave them, and an empty answer for a
//     target partition says what the target said last, as the client saw
//     it. Virtual offsets continue across a flip, so marks from before it
//     stay true (only older).
//   - A sub-fetch whose topic changes cluster while it is out is answered
//     NOT_LEADER_OR_FOLLOWER at once, as waitFetchUnlessMoved does for a
//     single one: its old cluster gets nothing new for the topic.
//   - A pending sub-fetch is taken over only while each of its topics is
//     served where it was when it was sent, and only by a fetch asking the
//     same of the same broker after translation: its answer then holds what
//     a new sub-fetch would (an earlier view of the same log), and is
//     translated with the maps read for the fetch that takes it, which are
//     newer. One whose topic moved is dropped at the next fetch, whatever
//     that fetch asks.

// fanoutFetch is a sub-fetch sent for an earlier client fetch and not yet
// used: its call, what it asked (target partitions translated), and where
// each of its topics was served when it was sent (nil without a target).
type fanoutFetch struct {
	call   *call
	asked  []kmsg.FetchRequestTopic
	served map[string]bool
}

// partitionMarks are the offsets a broker reports for a partition besides
// its records (virtual ones for the target's); an empty answer for a
// partition repeats the last ones.
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

// splitFetch is one client fetch split for the fan-out.
type splitFetch struct {
	split      map[brokerKey][]kmsg.FetchRequestTopic // as sent: target partitions translated
	order      []brokerKey
	calls      []*call
	backlogged []bool
	// servedAtSend is where each topic was served when the fetch was
	// routed (topic → the target); nil without a target.
	servedAtSend map[string]bool
	fm           *fetchMaps
	// answered are the frames of the sub-answers the client's answer is
	// made of: nothing refers to them once it is written (giveBack).
	answered [][]byte
}

// giveBack returns the frames of the sub-answers to the pool, once the
// client's answer is written. A call's answer goes into one client answer
// at most: a sub-fetch is either answered here or left pending, and a
// pending one is removed when the next fetch looks at it.
func (f *splitFetch) giveBack() {
	for _, frame := range f.answered {
		pooledFrames.put(frame)
	}
	f.answered = nil
}

// sendSubFetches sends a split fetch's sub-fetches, or takes over a pending
// one that asks exactly the same of its broker.
func (c *clientConn) sendSubFetches(f *splitFetch, send func(brokerKey) (*call, error)) error {
	f.calls = make([]*call, len(f.order))
	c.fanout.mu.Lock()
	if c.fanout.pending == nil {
		c.fanout.pending = make(map[brokerKey]*fanoutFetch)
	}
	for b, p := range c.fanout.pending {
		if c.p.anyMoved(p.asked, p.served) {
			delete(c.fanout.pending, b)
		}
	}
	for i, b := range f.order {
		if p := c.fanout.pending[b]; p != nil {
			delete(c.fanout.pending, b)
			if sameFetch(p.asked, f.split[b]) && sameServed(p.asked, p.served, f.servedAtSend) {
				f.calls[i] = p.call
			}
		}
	}
	c.fanout.mu.Unlock() // send reads the marks
	for i, b := range f.order {
		if f.calls[i] != nil {
			continue
		}
		var err error
		if f.calls[i], err = send(b); err != nil {
			return fmt.Errorf("fetch fan-out to %s broker %d: %w", b.cluster.up.Name, b.id, err)
		}
	}
	return nil
}

// sameServed reports whether every topic of a pending sub-fetch is served
// where the new fetch's routes put it: the pending answer is then of the
// cluster the new fetch would ask, and the new fetch's flip checks
// (servedAtSend) hold for it.
func sameServed(asked []kmsg.FetchRequestTopic, served, now map[string]bool) bool {
	for _, t := range asked {
		if served[t.Topic] != now[t.Topic] {
			return false
		}
	}
	return true
}

// backlogged reports, per sub-fetch of a split fetch, whether it asks a
// partition from before its last known high watermark: its broker has
// records for it and answers at once. The offsets must be the client's
// (virtual), as the marks are: before fetchToTarget.
func (c *clientConn) backlogged(split map[brokerKey][]kmsg.FetchRequestTopic, order []brokerKey) []bool {
	c.fanout.mu.Lock()
	defer c.fanout.mu.Unlock()
	out := make([]bool, len(order))
	for i, b := range order {
		out[i] = c.hasBacklog(split[b])
	}
	return out
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
// trips). It returns the decoded answers, target ones translated, nil for
// those still out, which stay pending. A sub-fetch whose topic moved is
// answered NOT_LEADER_OR_FOLLOWER and dropped.
func (c *clientConn) awaitSubFetches(ctx context.Context, f *splitFetch, req *kmsg.FetchRequest, version int16) ([]*kmsg.FetchResponse, error) {
	calls := f.calls
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
	var flipCheck <-chan time.Time
	if f.servedAtSend != nil {
		t := time.NewTicker(streamCheckInterval)
		defer t.Stop()
		flipCheck = t.C
	}
	resps := make([]*kmsg.FetchResponse, len(calls))
	back := 0     // sub-fetches answered, by their broker or as moved
	var got int64 // record bytes in the answers back
	// answerMoved answers the sub-fetches still out whose topics changed
	// cluster; checked before the first wait too, as a flip may come
	// between routing and sending.
	answerMoved := func() {
		for i, resp := range resps {
			if resp == nil && f.servedAtSend != nil && c.p.anyMoved(f.split[f.order[i]], f.servedAtSend) {
				resps[i] = movedAnswer(f.split[f.order[i]])
				back++
			}
		}
	}
	answerMoved()
	var grace <-chan time.Time // once min bytes are back: the backlogged ones' last chance
wait:
	for back < len(calls) {
		if back > 0 && (got >= int64(max(req.MinBytes, 1)) || anyFetchError(resps)) && c.canAnswerWithout(resps, f) {
			if backloggedBack(resps, f.backlogged) {
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
		case <-flipCheck:
			answerMoved()
			continue
		case <-grace:
			break wait
		case <-deadline.C:
			if c.canAnswerWithout(resps, f) {
				return c.leavePending(resps, f), nil
			}
			continue // marks not known yet: wait for all, as before
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if resps[i] != nil {
			continue // answered as moved: its late answer is dropped
		}
		body, err := calls[i].wait(ctx)
		if err != nil {
			return nil, err
		}
		if resps[i], err = decodeResponse[kmsg.FetchResponse](body, version); err != nil {
			return nil, err
		}
		f.answered = append(f.answered, calls[i].frame)
		if f.order[i].cluster == c.p.target {
			c.fetchToVirtual(resps[i], f.fm)
		}
		got += recordBytes(resps[i])
		back++
	}
	return c.leavePending(resps, f), nil
}

// leavePending keeps the sub-fetches still out for the client's next fetch.
func (c *clientConn) leavePending(resps []*kmsg.FetchResponse, f *splitFetch) []*kmsg.FetchResponse {
	c.fanout.mu.Lock()
	defer c.fanout.mu.Unlock()
	for i, resp := range resps {
		if resp == nil {
			b := f.order[i]
			c.fanout.pending[b] = &fanoutFetch{call: f.calls[i], asked: f.split[b], served: f.servedAtSend}
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
// broker) still holds its upstream connection until its broker answers.
// The next sub-fetch goes on a second connection (fetchUpstream), but when
// both are held it waits behind one: up to the client's whole max wait (5 s
// in franz-go) for records that arrived meanwhile. Capped, that wait is at
// most 500 ms, the Java client's default max wait; an idle broker then
// gets a fetch every 500 ms from each consumer connection.
const fanoutMaxWait = 500

// fanoutSlack is how long past the client's max wait the proxy still waits
// for a sub-fetch before answering without it.
const fanoutSlack = 100 * time.Millisecond

// canAnswerWithout reports whether every partition of the sub-fetches still
// out has known marks to answer it empty with.
func (c *clientConn) canAnswerWithout(resps []*kmsg.FetchResponse, f *splitFetch) bool {
	for i, resp := range resps {
		if resp == nil && !c.marksKnown(f.split[f.order[i]]) {
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
