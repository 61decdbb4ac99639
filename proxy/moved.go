package proxy

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Members moved by a flip join their group's new home as new members: the
// coordinator there has never heard of them, so it does not wait for them.
// An ordinary rebalance completes only when every known member has
// rejoined; a group that starts empty completes its first one with
// whoever has joined once group.initial.rebalance.delay.ms has passed (0 in
// many clusters). With an assignor that keeps partitions across rebalances
// (cooperative-sticky), the members not yet there still own and consume
// their partitions, and the leader, which cannot see their claims, hands
// those partitions to the members that are there: two members consume one
// partition, and one delivers again what the other committed.
// TestGroupCutoverJava saw it after a rollback: one Java member joined
// alone, took all six partitions and consumed two of them beside their
// owner, which had committed past them.
//
// So every member whose JoinGroup was held and sent to the new home while
// it owned partitions is tracked here until it has synced a generation
// there (from then on the coordinator knows it and waits for it). When a
// generation's leader is told its members and a tracked member is not
// among them, the leader's SyncGroup of that generation is not forwarded:
// it is answered REBALANCE_IN_PROGRESS (an everyday answer: the leader
// rejoins) once the missing members have their JoinGroups out, which start
// the next rebalance. The coordinator hands out a generation's assignment
// only when its leader syncs, so no assignment made without the missing
// members' claims is ever given. A tracked member silent for its session
// timeout is given up, as its coordinator would.
//
// Each node tracks the members it held; with several nodes (sidecars) the
// leader's node asks the others for theirs (Config.PeerMovedMembers, GET
// /v1/gate) while a move of the group through it is recent.

// MovedMember is a member a node sent to its group's new home and waits
// for there: what the other nodes learn of it.
type MovedMember struct {
	Old      string `json:"old"`                // member id on the cluster it left
	ID       string `json:"id,omitempty"`       // member id on the new home, once known
	Instance string `json:"instance,omitempty"` // group.instance.id
	// Joining says a JoinGroup of it with its id is out at the
	// coordinator, which counts it in the next rebalance.
	Joining bool `json:"joining,omitempty"`
}

// peerWatch is how long after a held JoinGroup of a group went to its new
// home through this node the node asks the others for their moved members
// when it sees a generation's leader: longer than session timeouts (Java's
// default is 45 s), after which moved members are given up anyway.
const peerWatch = 2 * time.Minute

// movedMember is a member this node sent to its group's new home.
type movedMember struct {
	conn     *clientConn // where its JoinGroups come from
	owns     bool        // it claimed partitions when it moved: waited for
	old      string      // member id on the cluster it left
	instance string      // group.instance.id; "" for a dynamic member
	id       string      // member id on the new home, once answered
	session  time.Duration
	// joining counts its JoinGroups out at the coordinator; withID says
	// the last one carried its id (or instance id), so that the
	// coordinator counts it in the next rebalance.
	joining int
	withID  bool
	idle    time.Time // when its last JoinGroup was answered
}

// joiningNow: a JoinGroup of it is out, on a connection still open (the
// answer to one on a closed connection is never counted back).
func (m *movedMember) joiningNow() bool { return m.joining > 0 && m.conn.ctx.Err() == nil }

// gone: silent for longer than its session timeout.
func (m *movedMember) gone(now time.Time) bool {
	return !m.joiningNow() && now.Sub(m.idle) > m.session
}

// movedMembers is the registry, per group.
type movedMembers struct {
	mu         sync.Mutex
	groups     map[string][]*movedMember
	incomplete map[string]*generationView // group → last generation seen without a tracked member
	moves      map[string]time.Time       // group → last held JoinGroup sent to a new home here
}

// generationView is a generation as its leader was told it.
type generationView struct {
	leader     string
	generation int32
	ids        map[string]bool
	instances  map[string]bool
}

func (r *movedMembers) init() {
	r.groups = make(map[string][]*movedMember)
	r.incomplete = make(map[string]*generationView)
	r.moves = make(map[string]time.Time)
}

// active says whether group's generations are checked here: a member of
// it is tracked, or (peers) other nodes may track some and the group moved
// through this node lately.
func (r *movedMembers) active(group string, peers bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.groups[group]) > 0 {
		return true
	}
	at, ok := r.moves[group]
	if ok && time.Since(at) > peerWatch {
		delete(r.moves, group)
		ok = false
	}
	return ok && peers
}

// list is what this node tracks of group, for the other nodes.
func (r *movedMembers) list(group string) []MovedMember {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []MovedMember
	for _, m := range r.groups[group] {
		if m.owns && !m.gone(now) {
			out = append(out, MovedMember{Old: m.old, ID: m.id, Instance: m.instance, Joining: m.joiningNow() && m.withID})
		}
	}
	return out
}

// MovedMembers lists the members of group this node sent to the group's
// new home and still waits for there.
func (p *Proxy) MovedMembers(group string) []MovedMember { return p.gate.moved.list(group) }

// sent records a member's held JoinGroup sent to the new home with an
// empty member id and returns its entry. A member that owns no partitions
// (eager assignors revoke all before they rejoin) consumes nothing
// meanwhile and is not waited for; its old id still marks its late
// commits (staleCommit).
func (r *movedMembers) sent(group string, c *clientConn, req *kmsg.JoinGroupRequest) *movedMember {
	owns := ownsPartitions(req)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.moves[group] = time.Now()
	if !owns && req.MemberID == "" {
		return nil
	}
	m := &movedMember{conn: c, owns: owns, old: req.MemberID, session: time.Duration(req.SessionTimeoutMillis) * time.Millisecond,
		joining: 1, withID: req.InstanceID != nil, idle: time.Now()}
	if req.InstanceID != nil {
		m.instance = *req.InstanceID
	}
	r.drop(group, func(o *movedMember) bool { return o.conn == c || o.old == m.old })
	r.groups[group] = append(r.groups[group], m)
	return m
}

// joinSent finds the entry of a JoinGroup sent on c (its member's
// connection) and counts it out.
func (r *movedMembers) joinSent(group string, c *clientConn, req *kmsg.JoinGroupRequest) *movedMember {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.groups[group] {
		if m.conn == c || (m.id != "" && m.id == req.MemberID) {
			if m.conn != c { // it reconnected
				m.conn, m.joining = c, 0
			}
			m.joining++
			m.withID = req.MemberID != "" || req.InstanceID != nil
			return m
		}
	}
	return nil
}

// answered ends a JoinGroup of m; resp is nil when it failed here.
func (r *movedMembers) answered(m *movedMember, resp *kmsg.JoinGroupResponse) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m.joining--
	m.idle = time.Now()
	if resp == nil {
		return
	}
	switch resp.ErrorCode {
	case 0, kerr.MemberIDRequired.Code:
		m.id = resp.MemberID
	case kerr.UnknownMemberID.Code:
		m.id = "" // the client forgets it too
	}
}

// done ends tracking the members with these ids (synced or left).
func (r *movedMembers) done(group string, ids ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.drop(group, func(m *movedMember) bool {
		for _, id := range ids {
			if id != "" && m.id == id {
				return true
			}
		}
		return false
	})
}

// drop removes the entries of group that match; r.mu is held.
func (r *movedMembers) drop(group string, match func(*movedMember) bool) {
	kept := r.groups[group][:0]
	for _, m := range r.groups[group] {
		if !match(m) {
			kept = append(kept, m)
		}
	}
	if len(kept) == 0 {
		delete(r.groups, group)
	} else {
		r.groups[group] = kept
	}
}

// leaderTold checks the members a generation's leader was told (resp)
// against the tracked members of group, and returns the missing ones' old
// member ids; when some are missing, the leader's SyncGroup of that
// generation will be held (incompleteSync).
func (r *movedMembers) leaderTold(group string, resp *kmsg.JoinGroupResponse, peers []MovedMember) []string {
	g := &generationView{leader: resp.MemberID, generation: resp.Generation,
		ids: make(map[string]bool, len(resp.Members)), instances: make(map[string]bool)}
	for _, m := range resp.Members {
		g.ids[m.MemberID] = true
		if m.InstanceID != nil {
			g.instances[*m.InstanceID] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	missing, _ := r.missing(group, g, peers)
	if len(missing) == 0 {
		delete(r.incomplete, group)
	} else {
		r.incomplete[group] = g
	}
	return missing
}

// incompleteSync returns the generation a SyncGroup of member belongs to
// when its leader was told it without some tracked member, and forgets it
// (the leader syncs a generation once).
func (r *movedMembers) incompleteSync(group, member string, generation int32) *generationView {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.incomplete[group]
	if g == nil || g.leader != member || g.generation != generation {
		return nil
	}
	delete(r.incomplete, group)
	return g
}

// stillMissing is missing under the lock.
func (r *movedMembers) stillMissing(group string, g *generationView, peers []MovedMember) (missing []string, ready bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.missing(group, g, peers)
}

// missing lists the members of group tracked here or by the other nodes
// (peers) absent from generation g, dropping those gone; ready says every
// missing member has a JoinGroup with its id out (the coordinator counts
// them in the next rebalance). r.mu is held.
func (r *movedMembers) missing(group string, g *generationView, peers []MovedMember) (missing []string, ready bool) {
	now := time.Now()
	r.drop(group, func(m *movedMember) bool { return m.gone(now) })
	ready = true
	check := func(m MovedMember) {
		if (m.ID != "" && g.ids[m.ID]) || (m.Instance != "" && g.instances[m.Instance]) {
			return
		}
		missing = append(missing, m.Old)
		ready = ready && m.Joining
	}
	for _, m := range r.groups[group] {
		if !m.owns {
			continue
		}
		check(MovedMember{Old: m.old, ID: m.id, Instance: m.instance, Joining: m.joiningNow() && m.withID})
	}
	for _, m := range peers {
		check(m)
	}
	return missing, ready
}

// peerMoved asks the other nodes (if any) for the members of group they
// wait for on its new home.
func (c *clientConn) peerMoved(ctx context.Context, group string) []MovedMember {
	ask := c.p.cfg.PeerMovedMembers
	if ask == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return ask(ctx, group)
}

// movedActive is movedMembers.active for this proxy.
func (c *clientConn) movedActive(group string) bool {
	return c.p.gate.moved.active(group, c.p.cfg.PeerMovedMembers != nil)
}

// staleCommit says whether member is the id a moved member of group had
// on the cluster it left: a commit sent under it before the member learnt
// of the move.
func (r *movedMembers) staleCommit(group, member string) bool {
	if member == "" {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.groups[group] {
		if m.old == member && m.id != member {
			return true
		}
	}
	return false
}

// ownsPartitions says whether a consumer's JoinGroup claims partitions
// (ConsumerProtocolSubscription v1+): its member keeps consuming them until
// a rebalance takes them away.
func ownsPartitions(req *kmsg.JoinGroupRequest) bool {
	if req.ProtocolType != "consumer" {
		return false
	}
	for _, p := range req.Protocols {
		var meta kmsg.ConsumerMemberMetadata
		if meta.ReadFrom(p.Metadata) != nil {
			continue
		}
		for _, o := range meta.OwnedPartitions {
			if len(o.Partitions) > 0 {
				return true
			}
		}
	}
	return false
}

// Bounds of the wait before the leader of a generation without some
// tracked member is answered REBALANCE_IN_PROGRESS: at least
// incompleteHoldMin (the missing members' JoinGroups, just sent, reach the
// coordinator first and start the next rebalance; a leader rejoining
// before that is given the same generation again), at most
// incompleteHoldMax while they are not sent yet (the leader then rejoins
// and is held again, until they come or are given up).
const (
	incompleteHoldMin = 50 * time.Millisecond
	incompleteHoldMax = time.Second
)

// watchGroupAnswer follows the group requests of members moved by a flip:
// it counts JoinGroups out, learns member ids from their answers, checks
// the members each generation's leader is told of, and ends tracking at a
// successful SyncGroup or a LeaveGroup. finish is the request's forwarded
// answer.
func (c *clientConn) watchGroupAnswer(r *protocol.Request, group string, entry *movedMember, finish finishFunc) finishFunc {
	reg := &c.p.gate.moved
	switch r.APIKey {
	case 11: // JoinGroup
		if entry == nil {
			if !c.movedActive(group) {
				return finish
			}
			req, err := decodeRequest[kmsg.JoinGroupRequest](r)
			if err != nil {
				return finish
			}
			entry = reg.joinSent(group, c, req)
		}
		return func(ctx context.Context) ([]byte, error) {
			body, err := finish(ctx)
			var resp *kmsg.JoinGroupResponse
			if err == nil {
				resp, _ = decodeResponse[kmsg.JoinGroupResponse](body, r.APIVersion)
			}
			if entry != nil {
				reg.answered(entry, resp)
			}
			if resp != nil && resp.ErrorCode == 0 && resp.LeaderID == resp.MemberID && c.movedActive(group) {
				if missing := reg.leaderTold(group, resp, c.peerMoved(ctx, group)); len(missing) > 0 {
					c.log.Info("a generation on the group's new home lacks members moved there, which still own partitions; its leader's SyncGroup will be answered REBALANCE_IN_PROGRESS",
						"group", group, "generation", resp.Generation, "members", len(resp.Members), "missing", missing)
				}
			}
			return body, err
		}
	case 14: // SyncGroup
		if !reg.active(group, false) {
			return finish
		}
		return func(ctx context.Context) ([]byte, error) {
			body, err := finish(ctx)
			if err != nil {
				return body, err
			}
			req, rerr := decodeRequest[kmsg.SyncGroupRequest](r)
			resp, perr := decodeResponse[kmsg.SyncGroupResponse](body, r.APIVersion)
			if rerr == nil && perr == nil && resp.ErrorCode == 0 {
				reg.done(group, req.MemberID)
			}
			return body, err
		}
	case 13: // LeaveGroup
		if !reg.active(group, false) {
			return finish
		}
		if req, err := decodeRequest[kmsg.LeaveGroupRequest](r); err == nil {
			ids := []string{req.MemberID}
			for _, m := range req.Members {
				ids = append(ids, m.MemberID)
			}
			reg.done(group, ids...)
		}
	}
	return finish
}

// movedAnswer answers, instead of the group's coordinator, two requests
// about members moved by a flip; it returns nil for any other request.
//
// A commit under a moved member's old member id (sent before the member
// learnt of the move, it arrives after) is answered REBALANCE_IN_PROGRESS,
// as a held one is: the new coordinator would answer UNKNOWN_MEMBER_ID,
// and librdkafka then drops the member id it has just been given, whose
// pending join makes the coordinator's next rebalance wait for a session
// timeout (seen: 10 s pauses in TestGroupCutoverConfluentKafkaCooperative).
//
// The SyncGroup of a leader that was told a generation without some
// tracked member is kept from the coordinator (holdIncompleteSync).
func (c *clientConn) movedAnswer(r *protocol.Request, group string) finishFunc {
	switch r.APIKey {
	case 8:
		if !c.p.gate.moved.active(group, false) {
			return nil
		}
		req, err := decodeRequest[kmsg.OffsetCommitRequest](r)
		if err != nil || !c.p.gate.moved.staleCommit(group, req.MemberID) {
			return nil
		}
		body, ok := errorResponse(r, kerr.RebalanceInProgress.Code)
		if !ok {
			return nil
		}
		c.p.gate.commit(group, -1) // counted in flight by handleGroupRequest
		return respondBody(body)
	case 14:
		return c.holdIncompleteSync(r, group)
	}
	return nil
}

// holdIncompleteSync returns, for the SyncGroup of a leader that was told
// a generation without some tracked member, the answer that keeps it from
// the coordinator: REBALANCE_IN_PROGRESS once the missing members have
// their JoinGroups out (bounded), or the forwarded SyncGroup if they are
// given up meanwhile. It returns nil for any other SyncGroup.
func (c *clientConn) holdIncompleteSync(r *protocol.Request, group string) finishFunc {
	reg := &c.p.gate.moved
	if !c.movedActive(group) {
		return nil
	}
	sync, err := decodeRequest[kmsg.SyncGroupRequest](r)
	if err != nil {
		return nil
	}
	g := reg.incompleteSync(group, sync.MemberID, sync.Generation)
	if g == nil {
		return nil
	}
	req := *r
	return func(ctx context.Context) ([]byte, error) {
		start := time.Now()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var peers []MovedMember
		var asked time.Time
		for {
			if time.Since(asked) >= 100*time.Millisecond {
				peers, asked = c.peerMoved(ctx, group), time.Now()
			}
			missing, ready := reg.stillMissing(group, g, peers)
			if len(missing) == 0 {
				// Given up (silent past their session timeout) or left.
				finish, err := c.sendGroupRequest(&req, group, c.p.groupPhase(group), false, false)
				if err != nil {
					return nil, err
				}
				return finish(ctx)
			}
			if waited := time.Since(start); waited >= incompleteHoldMin && (ready || waited >= incompleteHoldMax) {
				break
			}
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-tick.C:
			}
		}
		body, ok := errorResponse(&req, kerr.RebalanceInProgress.Code)
		if !ok {
			return nil, errors.New("cannot answer SyncGroup REBALANCE_IN_PROGRESS")
		}
		return body, nil
	}
}
