package proxy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Transactions across a topic flip.
//
// A transaction runs on one cluster: its coordinator writes the markers of
// every partition in it. Each transactional id therefore has a home, the
// cluster its next or current transaction runs on, decided when a
// transaction begins (its first AddPartitionsToTxn): the target once every
// topic of the transaction flipped, the source while none did (a
// transaction that mixes both is refused, it could not be atomic). When the
// home changes, the proxy asks the new home's coordinator for the id
// (InitProducerId) and from then on rewrites the client's producer id and
// epoch in every transactional request and batch, sequences rebased per
// partition: the client keeps its own ids and never sees the move.
//
// A transaction open when its topic flips cannot move: its batches and
// requests bound for the other cluster are answered TRANSACTION_ABORTABLE
// (KIP-890), and while the flip runs its batches are answered so at once
// instead of being held. The client aborts and runs the transaction again,
// on the new home. A flip waits until no transaction open through this
// proxy touches the topic (InflightProduces counts them) and the source's
// last stable offset reaches its end.
//
// Clients are served the TV1 protocol (Produce ≤ 11, EndTxn ≤ 4, explicit
// AddPartitionsToTxn) while a target is configured: with TV2 every EndTxn
// bumps the epoch, which the mapping would have to follow.
type txnRegistry struct {
	mu    sync.Mutex
	byID  map[string]*txnState
	byPID map[int64]*txnState // the client's producer id
}

type txnState struct {
	id string

	mu          sync.Mutex
	clientID    int64
	clientEpoch int16
	home        *cluster
	mapped      bool // the home's ids are not the client's (the id moved)
	mappedID    int64
	mappedEpoch int16
	open        bool
	topics      map[string]bool  // topics of the open transaction
	base        map[string]int32 // partition key → client sequence sent as 0
}

// maxTxnStates bounds the registry; past it, ids not seen for the longest
// are forgotten (a forgotten id that moved gets TRANSACTION_ABORTABLE and
// starts over at its InitProducerId).
const maxTxnStates = 100_000

func (p *Proxy) txnState(id string) *txnState {
	p.txns.mu.Lock()
	defer p.txns.mu.Unlock()
	return p.txns.byID[id]
}

func (p *Proxy) txnByPID(pid int64) *txnState {
	p.txns.mu.Lock()
	defer p.txns.mu.Unlock()
	return p.txns.byPID[pid]
}

// txnInitialized records a transactional producer's ids as the source gave
// them: its transactions run on the source until a flip moves them.
func (p *Proxy) txnInitialized(id string, pid int64, epoch int16) {
	p.txns.mu.Lock()
	defer p.txns.mu.Unlock()
	if p.txns.byID == nil || len(p.txns.byID) >= maxTxnStates {
		p.txns.byID = make(map[string]*txnState)
		p.txns.byPID = make(map[int64]*txnState)
	}
	if old := p.txns.byID[id]; old != nil {
		delete(p.txns.byPID, old.clientID)
	}
	st := &txnState{id: id, clientID: pid, clientEpoch: epoch, home: p.source, topics: map[string]bool{}, base: map[string]int32{}}
	p.txns.byID[id] = st
	p.txns.byPID[pid] = st
}

// openTxns counts the open transactions through this proxy that touch topic.
func (p *Proxy) openTxns(topic string) int {
	p.txns.mu.Lock()
	states := make([]*txnState, 0, len(p.txns.byID))
	for _, st := range p.txns.byID {
		states = append(states, st)
	}
	p.txns.mu.Unlock()
	n := 0
	for _, st := range states {
		st.mu.Lock()
		if st.open && st.topics[topic] {
			n++
		}
		st.mu.Unlock()
	}
	return n
}

// moveHome makes to the home of st's next transaction, asking its
// coordinator for the transactional id's producer id and epoch. Called with
// st.mu held.
func (c *clientConn) moveHome(ctx context.Context, st *txnState, to *cluster) error {
	broker, code := to.coordinator(ctx, 1, st.id, true)
	if code != 0 {
		return fmt.Errorf("transaction coordinator of %q on the %s: %w", st.id, to.up.Name, kerr.ErrorForCode(code))
	}
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID = &st.id
	req.TransactionTimeoutMillis = 60_000
	req.ProducerID, req.ProducerEpoch = -1, -1
	_, max, ok := to.supports(22)
	if !ok {
		return fmt.Errorf("the %s does not serve InitProducerId", to.up.Name)
	}
	req.Version = min16(max, 5)
	bc, err := c.upstream(to, broker)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	raw, err := bc.roundTrip(ctx, req)
	if err != nil {
		return err
	}
	resp := raw.(*kmsg.InitProducerIDResponse)
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		return fmt.Errorf("init transactional id %q on the %s: %w", st.id, to.up.Name, err)
	}
	st.home, st.mapped, st.mappedID, st.mappedEpoch = to, true, resp.ProducerID, resp.ProducerEpoch
	st.base = map[string]int32{}
	c.log.Info("transactional id moved", "transactional_id", st.id, "to", to.up.Name, "producer_id", resp.ProducerID, "epoch", resp.ProducerEpoch)
	return nil
}

// ids are the producer id and epoch to send the home, for a request that
// carries the client's.
func (st *txnState) ids(clientID int64, clientEpoch int16) (int64, int16) {
	if st.mapped {
		return st.mappedID, st.mappedEpoch
	}
	return clientID, clientEpoch
}

// handleAddPartitionsToTxn decides where a transaction runs when it begins
// and sends its partitions to that cluster's coordinator.
func handleAddPartitionsToTxn(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.AddPartitionsToTxnRequest](r)
	if err != nil {
		return nil, err
	}
	st := c.p.txnState(req.TransactionalID)
	if c.p.target == nil || st == nil {
		return c.toSourceTxnCoordinator(r, req.TransactionalID)
	}
	topics := make([]string, 0, len(req.Topics))
	for _, t := range req.Topics {
		topics = append(topics, t.Topic)
	}
	if c.p.anyDraining(topics) {
		st.mu.Lock()
		open := st.open
		st.mu.Unlock()
		// An open transaction cannot wait out the flip (the flip waits for
		// it to end): abort it. A new one waits, and begins on the new home.
		if open {
			return addPartitionsRefused(req, kerr.TransactionAbortable.Code), nil
		}
		if err := c.waitProduceRelease(topics, 0); err != nil {
			return addPartitionsRefused(req, kerr.TransactionAbortable.Code), nil
		}
	}
	flipped := 0
	for _, t := range topics {
		if c.p.servedByTarget(t) {
			flipped++
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	want := c.p.source
	if flipped == len(topics) && flipped > 0 {
		want = c.p.target
	}
	switch {
	case flipped > 0 && flipped < len(topics):
		c.log.Warn("transaction spans topics on both clusters; refused", "transactional_id", st.id, "topics", topics)
		return addPartitionsRefused(req, kerr.InvalidTxnState.Code), nil
	case st.open && want != st.home:
		return addPartitionsRefused(req, kerr.TransactionAbortable.Code), nil
	case !st.open && want != st.home:
		if err := c.moveHome(c.ctx, st, want); err != nil {
			return nil, asUpstreamError(err)
		}
	}
	req.ProducerID, req.ProducerEpoch = st.ids(req.ProducerID, req.ProducerEpoch)
	st.open = true
	for _, t := range topics {
		st.topics[t] = true
	}
	return c.sendToTxnCoordinator(r, st, req)
}

// toSourceTxnCoordinator forwards a transactional request unchanged to the
// source's coordinator of id: no target, or an id initialized before this
// proxy knew it.
func (c *clientConn) toSourceTxnCoordinator(r *protocol.Request, id string) (finishFunc, error) {
	broker, _ := c.p.source.coordinator(c.ctx, 1, id, false)
	return c.forwardRaw(broker, r)
}

// sendToTxnCoordinator forwards a rewritten transactional request to the
// coordinator of st's home.
func (c *clientConn) sendToTxnCoordinator(r *protocol.Request, st *txnState, req kmsg.Request) (finishFunc, error) {
	broker, _ := st.home.coordinator(c.ctx, 1, st.id, false)
	req.SetVersion(r.APIVersion)
	cl, err := c.forwardTo(st.home, broker, r, req.AppendTo(nil), true)
	if err != nil {
		return nil, err
	}
	return cl.wait, nil
}

func addPartitionsRefused(req *kmsg.AddPartitionsToTxnRequest, code int16) finishFunc {
	resp := kmsg.NewPtrAddPartitionsToTxnResponse()
	resp.Version = req.Version
	for _, t := range req.Topics {
		rt := kmsg.NewAddPartitionsToTxnResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
			rp.Partition, rp.ErrorCode = p, code
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return respond(resp)
}

// handleEndTxn ends the transaction on its home.
func handleEndTxn(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.EndTxnRequest](r)
	if err != nil {
		return nil, err
	}
	st := c.p.txnState(req.TransactionalID)
	if c.p.target == nil || st == nil {
		return c.toSourceTxnCoordinator(r, req.TransactionalID)
	}
	st.mu.Lock()
	req.ProducerID, req.ProducerEpoch = st.ids(req.ProducerID, req.ProducerEpoch)
	finish, err := c.sendToTxnCoordinator(r, st, req)
	st.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		body, err := finish(ctx)
		// Answered or not, the client now starts over with a new
		// transaction (it retries an EndTxn that failed, which the
		// coordinator answers idempotently).
		st.mu.Lock()
		if err == nil {
			st.open = false
			st.topics = map[string]bool{}
		}
		st.mu.Unlock()
		return body, err
	}, nil
}

// handleAddOffsetsToTxn adds a group's offsets to the transaction on its home.
func handleAddOffsetsToTxn(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.AddOffsetsToTxnRequest](r)
	if err != nil {
		return nil, err
	}
	st := c.p.txnState(req.TransactionalID)
	if c.p.target == nil || st == nil {
		return c.toSourceTxnCoordinator(r, req.TransactionalID)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if c.p.homeOf(c.p.groupPhase(req.Group)) != st.home {
		// The error clients abort on here without giving up the id, which
		// they do not agree on: the Java client takes TRANSACTION_ABORTABLE
		// (KIP-890) and fails on UNKNOWN_SERVER_ERROR; franz-go fails its
		// producer id on any non-retriable error but UNKNOWN_SERVER_ERROR.
		// A retriable one would keep the transaction open, which the flip
		// of its topics waits for.
		code := kerr.UnknownServerError.Code
		if c.javaClient() {
			code = kerr.TransactionAbortable.Code
		}
		resp := kmsg.NewPtrAddOffsetsToTxnResponse()
		resp.Version, resp.ErrorCode = r.APIVersion, code
		warnOnce.warn(c.log, "a transaction commits offsets of a group on the other cluster; aborted until the group and the topics it writes are on one cluster (flip them back to back)",
			"transactional_id", st.id, "group", req.Group)
		return respond(resp), nil
	}
	req.ProducerID, req.ProducerEpoch = st.ids(req.ProducerID, req.ProducerEpoch)
	st.open = true
	return c.sendToTxnCoordinator(r, st, req)
}

// txnBatchFor maps a transactional batch bound for cluster to; it returns a
// non-zero error code when the batch's transaction runs elsewhere.
func (c *clientConn) txnBatchFor(to *cluster, topic string, partition int32, b protocol.Batch) int16 {
	st := c.p.txnByPID(b.ProducerID())
	if st == nil {
		if to == c.p.target {
			return kerr.TransactionAbortable.Code
		}
		return 0 // a transaction the proxy did not see begin: the source's
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.home != to {
		return kerr.TransactionAbortable.Code
	}
	if !st.mapped {
		return 0
	}
	pkey := partitionKey(topic, partition)
	base, ok := st.base[pkey]
	if !ok {
		base = b.BaseSequence()
		st.base[pkey] = base
	}
	b.SetProducer(st.mappedID, st.mappedEpoch, int32(uint32(b.BaseSequence())-uint32(base))&0x7fffffff)
	return 0
}

// hasTransactional reports whether a produce carries transactional batches.
func hasTransactional(req *kmsg.ProduceRequest) bool {
	if req.TransactionID != nil {
		return true
	}
	for _, t := range req.Topics {
		for _, p := range t.Partitions {
			for _, b := range protocol.CompleteBatches(p.Records) {
				if b.Transactional() {
					return true
				}
			}
		}
	}
	return false
}
