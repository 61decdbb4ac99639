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

// Group phases, as stored by the control plane (raftstore) and sequenced
// by offsetsync.Cutover.
const (
	phaseSource           = "source"
	phaseDraining         = "draining"
	phaseFenced           = "fenced"
	phaseTarget           = "target"
	phaseRollbackDraining = "rollback-draining"
	phaseRollbackFenced   = "rollback-fenced"
)

// groupPhase is where a group is served now.
func (p *Proxy) groupPhase(group string) string {
	if p.target == nil || p.cfg.Routing == nil {
		return phaseSource
	}
	if ph := p.cfg.Routing.GroupPhase(group); ph != "" {
		return ph
	}
	return phaseSource
}

// homeOf is the cluster whose coordinator serves a group in a phase.
func (p *Proxy) homeOf(phase string) *cluster {
	switch phase {
	case phaseTarget, phaseRollbackDraining, phaseRollbackFenced:
		return p.target
	default:
		return p.source
	}
}

func draining(phase string) bool { return phase != phaseSource && phase != phaseTarget }

func fenced(phase string) bool { return phase == phaseFenced || phase == phaseRollbackFenced }

// groupGate tracks, per group, the members whose JoinGroup this proxy holds
// during a cutover and the commits it has forwarded but not yet seen
// answered: the cutover waits for the first to be complete and the second
// to be zero before it reads committed offsets.
type groupGate struct {
	mu       sync.Mutex
	held     map[string]map[string]int // group → member id → held JoinGroups
	inflight map[string]int            // group → commits in flight
	moved    movedMembers              // members sent to a new home (moved.go)
}

func (g *groupGate) init() {
	g.held = make(map[string]map[string]int)
	g.inflight = make(map[string]int)
	g.moved.init()
}

func (g *groupGate) hold(group, member string, delta int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := g.held[group]
	if m == nil {
		m = make(map[string]int)
		g.held[group] = m
	}
	if m[member] += delta; m[member] <= 0 {
		delete(m, member)
	}
}

func (g *groupGate) commit(group string, delta int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight[group] += delta
}

// HeldMembers lists the members whose JoinGroup for group is held here.
func (p *Proxy) HeldMembers(group string) map[string]bool {
	p.gate.mu.Lock()
	defer p.gate.mu.Unlock()
	out := make(map[string]bool)
	for m := range p.gate.held[group] {
		out[m] = true
	}
	return out
}

// InflightCommits counts group's commits forwarded and not yet answered.
func (p *Proxy) InflightCommits(group string) int {
	p.gate.mu.Lock()
	defer p.gate.mu.Unlock()
	return p.gate.inflight[group]
}

// handleGroupRequest serves a request about one group according to the
// group's phase. While a cutover drains the group, heartbeats are answered
// REBALANCE_IN_PROGRESS (members then revoke, commit and rejoin) and
// JoinGroups are held; once fenced, commits are held too. A held request is
// sent when the phase settles, to the group's new home.
func handleGroupRequest(c *clientConn, r *protocol.Request, group, member string) (finishFunc, error) {
	// A commit is counted in flight before the phase is read: a cutover
	// that fences and then sees no commit in flight has either seen this
	// one or will see it held.
	isCommit := r.APIKey == 8
	if isCommit {
		c.p.gate.commit(group, 1)
	}
	phase := c.p.groupPhase(group)
	if draining(phase) {
		switch {
		case r.APIKey == 12: // Heartbeat
			resp := kmsg.NewPtrHeartbeatResponse()
			resp.Version = r.APIVersion
			resp.ErrorCode = kerr.RebalanceInProgress.Code
			return respond(resp), nil
		case r.APIKey == 11, fenced(phase) && (isCommit || r.APIKey == 28):
			if isCommit {
				c.p.gate.commit(group, -1)
			}
			return c.holdGroupRequest(r, group, member, phase), nil
		}
	}
	if answer := c.movedAnswer(r, group); answer != nil {
		return answer, nil
	}
	return c.sendGroupRequest(r, group, phase, false, isCommit)
}

// holdGroupRequest answers r once the group's phase leaves phase's draining
// sequence.
func (c *clientConn) holdGroupRequest(r *protocol.Request, group, member, phase string) finishFunc {
	req := *r
	if req.APIKey == 11 {
		c.p.gate.hold(group, member, 1)
	}
	c.log.Debug("holding group request", "api", kmsg.NameForKey(r.APIKey), "group", group, "member", member, "phase", phase)
	return func(ctx context.Context) ([]byte, error) {
		defer func() {
			if req.APIKey == 11 {
				c.p.gate.hold(group, member, -1)
			}
		}()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for draining(c.p.groupPhase(group)) {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
		}
		next := c.p.groupPhase(group)
		moved := c.p.homeOf(next) != c.p.homeOf(phase)
		if moved && (req.APIKey == 8 || req.APIKey == 28) {
			// A commit of the old generation means nothing to the new
			// coordinator, which would answer UNKNOWN_MEMBER_ID and make
			// some clients (librdkafka) drop the member id they just got.
			// The group is rebalancing, so say that: the commit fails, its
			// records come again (redelivery beyond the last commit), and
			// the member keeps its new membership.
			if body, ok := errorResponse(&req, kerr.RebalanceInProgress.Code); ok {
				return body, nil
			}
		}
		if req.APIKey == 8 {
			c.p.gate.commit(group, 1)
		}
		finish, err := c.sendGroupRequest(&req, group, next, moved, req.APIKey == 8)
		if err != nil {
			return nil, err
		}
		return finish(ctx)
	}
}

// sendGroupRequest forwards a group request to the coordinator of the
// group's home cluster. moved means the member comes from the other
// cluster: a JoinGroup then joins as a new member (empty member id).
// counted means the request is a commit already counted in flight; the
// count ends when the upstream answers (or the request fails here), not
// when this connection writes the answer: an answer queued behind a held
// JoinGroup must not hold up the cutover that would release it.
func (c *clientConn) sendGroupRequest(r *protocol.Request, group, phase string, moved, counted bool) (_ finishFunc, err error) {
	if counted {
		defer func() {
			if err != nil {
				c.p.gate.commit(group, -1)
			}
		}()
	}
	home := c.p.homeOf(phase)
	broker, _ := home.coordinator(c.ctx, 0, group, false)
	body := r.Body
	var entry *movedMember
	switch {
	case r.APIKey == 11 && moved:
		req, err := decodeRequest[kmsg.JoinGroupRequest](r)
		if err != nil {
			return nil, err
		}
		entry = c.p.gate.moved.sent(group, c, req)
		req.MemberID = ""
		body = req.AppendTo(nil)
	case r.APIKey == 8 && home == c.p.target:
		translated, err := c.commitToTarget(r)
		if err != nil {
			return nil, err
		}
		body = translated
	case r.APIKey == 28 && c.p.target != nil:
		translated, refusal, err := c.txnOffsetCommitFor(r, home)
		if err != nil {
			return nil, err
		}
		if refusal != nil {
			if counted {
				c.p.gate.commit(group, -1)
			}
			return respondBody(refusal), nil
		}
		body = translated
	}
	cl, err := c.forwardTo(home, broker, r, body, true)
	if err != nil {
		if entry != nil {
			c.p.gate.moved.answered(entry, nil)
		}
		return nil, err
	}
	if counted {
		go func() { <-cl.done; c.p.gate.commit(group, -1) }()
	}
	return c.watchGroupAnswer(r, group, entry, func(ctx context.Context) ([]byte, error) {
		resp, err := cl.wait(ctx)
		if err != nil || r.APIKey != 9 || home != c.p.target {
			return resp, err
		}
		return c.offsetsFromTarget(resp, r.APIVersion)
	}), nil
}

// txnOffsetCommitFor prepares a TxnOffsetCommit for the group's home: the
// transaction must run there too (else TRANSACTION_ABORTABLE: the group and
// the topics its transactions write move together), its producer id is
// the home's, and on the target its offsets cross the map.
func (c *clientConn) txnOffsetCommitFor(r *protocol.Request, home *cluster) (body, refusal []byte, err error) {
	req, err := decodeRequest[kmsg.TxnOffsetCommitRequest](r)
	if err != nil {
		return nil, nil, err
	}
	st := c.p.txnState(req.TransactionalID)
	txnHome := c.p.source
	if st != nil {
		st.mu.Lock()
		txnHome = st.home
		req.ProducerID, req.ProducerEpoch = st.ids(req.ProducerID, req.ProducerEpoch)
		st.mu.Unlock()
	}
	if txnHome != home {
		c.log.Warn("transaction commits offsets of a group on the other cluster; answered TRANSACTION_ABORTABLE (move the group with the topics it writes)",
			"transactional_id", req.TransactionalID, "group", req.Group)
		b, _ := errorResponse(r, kerr.TransactionAbortable.Code)
		return nil, b, nil
	}
	if home == c.p.target {
		ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
		defer cancel()
		for i := range req.Topics {
			t := &req.Topics[i]
			for j := range t.Partitions {
				pt := &t.Partitions[j]
				if pt.Offset < 0 {
					continue
				}
				tpos, err := c.positionOnTarget(ctx, t.Topic, pt.Partition, pt.Offset)
				if err != nil {
					return nil, nil, asUpstreamError(fmt.Errorf("transactional commit %s/%d at %d: %w", t.Topic, pt.Partition, pt.Offset, err))
				}
				pt.Offset, pt.LeaderEpoch = tpos, -1
			}
		}
	}
	return req.AppendTo(nil), nil, nil
}

// positionOnTarget translates a virtual position to the target, waiting
// (bounded by ctx) for the mirror to cover it. A flipped partition's map is
// final below the flip and exact beyond it, so there is nothing to wait
// for; otherwise the map is read again after the wait, which may have
// added the records it waited for.
func (c *clientConn) positionOnTarget(ctx context.Context, topic string, partition int32, v int64) (int64, error) {
	m := c.p.cfg.Maps.OffsetMap(topic, partition)
	if !m.Flipped() {
		if err := c.p.cfg.Covered(ctx, topic, partition, v); err != nil {
			return 0, err
		}
		m = c.p.cfg.Maps.OffsetMap(topic, partition)
	}
	return m.PositionToTarget(v, true)
}

// commitToTarget translates an OffsetCommit's virtual positions into target
// positions, waiting (bounded) for the mirror to cover each.
func (c *clientConn) commitToTarget(r *protocol.Request) ([]byte, error) {
	req, err := decodeRequest[kmsg.OffsetCommitRequest](r)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	for i := range req.Topics {
		t := &req.Topics[i]
		name := t.Topic
		if name == "" {
			name, _ = c.p.source.topicName(ctx, t.TopicID)
		}
		for j := range t.Partitions {
			pt := &t.Partitions[j]
			if pt.Offset < 0 {
				continue
			}
			tpos, err := c.positionOnTarget(ctx, name, pt.Partition, pt.Offset)
			if err != nil {
				return nil, asUpstreamError(fmt.Errorf("commit %s/%d at %d: %w", name, pt.Partition, pt.Offset, err))
			}
			pt.Offset = tpos
			pt.LeaderEpoch = -1 // the client's epoch is the source's
		}
	}
	return req.AppendTo(nil), nil
}

// offsetsFromTarget translates an OffsetFetch answer from target positions
// back to the virtual positions the client knows.
func (c *clientConn) offsetsFromTarget(body []byte, version int16) ([]byte, error) {
	resp, err := decodeResponse[kmsg.OffsetFetchResponse](body, version)
	if err != nil {
		return nil, err
	}
	translate := func(topic string, partition int32, offset *int64, epoch *int32) {
		if *offset < 0 {
			return
		}
		v, err := c.p.cfg.Maps.OffsetMap(topic, partition).PositionToVirtual(*offset)
		if err != nil {
			c.log.Error("committed offset in the target outside the offset map; answering no commit", "topic", topic, "partition", partition, "offset", *offset, "err", err)
			v = -1
		}
		*offset, *epoch = v, -1
	}
	for i := range resp.Topics {
		for j := range resp.Topics[i].Partitions {
			pt := &resp.Topics[i].Partitions[j]
			translate(resp.Topics[i].Topic, pt.Partition, &pt.Offset, &pt.LeaderEpoch)
		}
	}
	for g := range resp.Groups {
		for i := range resp.Groups[g].Topics {
			t := &resp.Groups[g].Topics[i]
			for j := range t.Partitions {
				translate(t.Topic, t.Partitions[j].Partition, &t.Partitions[j].Offset, &t.Partitions[j].LeaderEpoch)
			}
		}
	}
	return resp.AppendTo(nil), nil
}
