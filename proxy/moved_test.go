package proxy

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// phaseRouting serves every group in one phase the test sets.
type phaseRouting struct {
	mu    sync.Mutex
	phase string
}

func (r *phaseRouting) set(phase string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phase = phase
}

func (r *phaseRouting) GroupPhase(string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.phase
}
func (r *phaseRouting) TopicPrimary(string) string { return "source" }
func (r *phaseRouting) TopicEpoch(string) uint64   { return 0 }

type identityMaps struct{}

func (identityMaps) OffsetMap(string, int32) offsetsync.OffsetMap {
	return offsetsync.OffsetMap{{Virtual: 0, Source: 0, Target: 0, Length: 1 << 40}}
}

// startTwoClusterProxy runs a proxy in front of two kfake clusters, both
// with topic "t" (2 partitions), serving groups in the phase routing says.
func startTwoClusterProxy(t *testing.T, routing Routing, opts ...kfake.Opt) *Proxy {
	t.Helper()
	return startProxyOnPair(t, startKfakePair(t, opts...), routing, nil)
}

// startKfakePair runs a source and a target kfake cluster with topic "t".
func startKfakePair(t *testing.T, opts ...kfake.Opt) [2][]string {
	t.Helper()
	var addrs [2][]string
	for i := range addrs {
		c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(2, "t")}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		addrs[i] = c.ListenAddrs()
	}
	return addrs
}

func startProxyOnPair(t *testing.T, addrs [2][]string, routing Routing, peers func(context.Context, string) []MovedMember) *Proxy {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := Start(ctx, Config{Listen: "127.0.0.1:0", NodeID: 7, Metrics: NewMetrics(nil),
		Source: Upstream{Bootstrap: addrs[0]}, Target: &Upstream{Bootstrap: addrs[1]},
		Routing: routing, Maps: identityMaps{}, PeerMovedMembers: peers,
		Covered: func(context.Context, string, int32, int64) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// rawMember is a group member speaking the protocol by hand through the
// proxy, on its own connection, so that the test orders its requests.
type rawMember struct {
	t       *testing.T
	cl      *kgo.Client
	owned   []int32
	session int32
}

func newRawMember(t *testing.T, p *Proxy, owned []int32, session time.Duration) *rawMember {
	cl, err := kgo.NewClient(kgo.SeedBrokers(p.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return &rawMember{t: t, cl: cl, owned: owned, session: int32(session.Milliseconds())}
}

// join sends a JoinGroup of group "g" claiming the member's partitions of
// "t", as a cooperative consumer does, and returns its answer on a channel.
func (m *rawMember) join(ctx context.Context, memberID string) <-chan *kmsg.JoinGroupResponse {
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Version = 1
	meta.Topics = []string{"t"}
	if len(m.owned) > 0 {
		meta.OwnedPartitions = []kmsg.ConsumerMemberMetadataOwnedPartition{{Topic: "t", Partitions: m.owned}}
	}
	req := kmsg.NewPtrJoinGroupRequest()
	req.Group, req.MemberID, req.ProtocolType = "g", memberID, "consumer"
	req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = m.session, 10000
	proto := kmsg.NewJoinGroupRequestProtocol()
	proto.Name, proto.Metadata = "cooperative-sticky", meta.AppendTo(nil)
	req.Protocols = append(req.Protocols, proto)
	out := make(chan *kmsg.JoinGroupResponse, 1)
	go func() {
		resp, err := req.RequestWith(ctx, m.cl)
		if err != nil {
			m.t.Errorf("JoinGroup as %q: %v", memberID, err)
			resp = nil
		}
		out <- resp
	}()
	return out
}

func (m *rawMember) sync(ctx context.Context, memberID string, generation int32, assign map[string][]int32) *kmsg.SyncGroupResponse {
	req := kmsg.NewPtrSyncGroupRequest()
	req.Group, req.MemberID, req.Generation = "g", memberID, generation
	req.ProtocolType, req.Protocol = kmsg.StringPtr("consumer"), kmsg.StringPtr("cooperative-sticky")
	for id, ps := range assign {
		a := kmsg.NewConsumerMemberAssignment()
		a.Topics = []kmsg.ConsumerMemberAssignmentTopic{{Topic: "t", Partitions: ps}}
		sa := kmsg.NewSyncGroupRequestGroupAssignment()
		sa.MemberID, sa.MemberAssignment = id, a.AppendTo(nil)
		req.GroupAssignment = append(req.GroupAssignment, sa)
	}
	resp, err := req.RequestWith(ctx, m.cl)
	if err != nil {
		m.t.Fatalf("SyncGroup as %q: %v", memberID, err)
	}
	return resp
}

// commit commits offset 1 of t/0 as memberID in generation and returns
// the partition's error code.
func (m *rawMember) commit(ctx context.Context, memberID string, generation int32) int16 {
	req := kmsg.NewPtrOffsetCommitRequest()
	req.Group, req.MemberID, req.Generation = "g", memberID, generation
	rt := kmsg.NewOffsetCommitRequestTopic()
	rt.Topic = "t"
	rp := kmsg.NewOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset = 0, 1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, m.cl)
	if err != nil {
		m.t.Fatalf("OffsetCommit as %q: %v", memberID, err)
	}
	return resp.Topics[0].Partitions[0].ErrorCode
}

func answer(t *testing.T, ctx context.Context, ch <-chan *kmsg.JoinGroupResponse, what string) *kmsg.JoinGroupResponse {
	t.Helper()
	select {
	case resp := <-ch:
		if resp == nil {
			t.Fatalf("%s: no answer", what)
		}
		return resp
	case <-ctx.Done():
		t.Fatalf("%s: no answer: %v", what, ctx.Err())
		return nil
	}
}

// moveHeldMembers holds the first JoinGroups of members (ids "m0", "m1",
// ...) while the group drains, flips it to the target and returns the
// member ids the target gave them (MEMBER_ID_REQUIRED).
func moveHeldMembers(t *testing.T, ctx context.Context, p *Proxy, routing *phaseRouting, members ...*rawMember) []string {
	t.Helper()
	return moveHeldMembersOn(t, ctx, []*Proxy{p}, routing, members...)
}

// moveHeldMembersOn is moveHeldMembers with members on several proxies
// (nodes sharing the routing).
func moveHeldMembersOn(t *testing.T, ctx context.Context, ps []*Proxy, routing *phaseRouting, members ...*rawMember) []string {
	t.Helper()
	routing.set(phaseDraining)
	var answers []<-chan *kmsg.JoinGroupResponse
	for i, m := range members {
		answers = append(answers, m.join(ctx, "m"+string(rune('0'+i))))
	}
	held := func() int {
		n := 0
		for _, p := range ps {
			n += len(p.HeldMembers("g"))
		}
		return n
	}
	for held() < len(members) {
		if ctx.Err() != nil {
			t.Fatalf("JoinGroups held: %d, want %d", held(), len(members))
		}
		time.Sleep(5 * time.Millisecond)
	}
	routing.set(phaseFenced)
	routing.set(phaseTarget)
	ids := make([]string, len(members))
	for i, ch := range answers {
		resp := answer(t, ctx, ch, "held JoinGroup")
		if resp.ErrorCode != kerr.MemberIDRequired.Code || resp.MemberID == "" {
			t.Fatalf("held JoinGroup of member %d answered %v with id %q, want MEMBER_ID_REQUIRED: it joins the target as a new member", i, kerr.ErrorForCode(resp.ErrorCode), resp.MemberID)
		}
		ids[i] = resp.MemberID
	}
	return ids
}

// syncAsync sends a SyncGroup and returns its answer on a channel.
func (m *rawMember) syncAsync(ctx context.Context, memberID string, generation int32, assign map[string][]int32) <-chan *kmsg.SyncGroupResponse {
	out := make(chan *kmsg.SyncGroupResponse, 1)
	go func() { out <- m.sync(ctx, memberID, generation, assign) }()
	return out
}

// assigned decodes the partitions of "t" a SyncGroup answer assigns.
func assigned(t *testing.T, resp *kmsg.SyncGroupResponse) []int32 {
	t.Helper()
	var a kmsg.ConsumerMemberAssignment
	if err := a.ReadFrom(resp.MemberAssignment); err != nil {
		t.Fatalf("assignment: %v", err)
	}
	var out []int32
	for _, tp := range a.Topics {
		out = append(out, tp.Partitions...)
	}
	return out
}

// TestMovedMembersJoinOneGeneration: two cooperative members move to the
// target, each still owning a partition; the first one back joins the
// (empty) group there alone, and the coordinator makes it the leader of a
// generation of one at once. Synced, that generation would give it the
// other member's partition while that member still consumes it: the
// proxy keeps its SyncGroup from the coordinator and answers it
// REBALANCE_IN_PROGRESS once the other member has rejoined; the next
// generation has both. Without the check a is assigned both partitions.
// soloGenerationHeld: a, moved with b, joins first and leads a generation
// of itself alone, whose assignment (a's assignor sees no claim on b's
// partition 1 and takes it) must not be handed out: a's SyncGroup stays
// unanswered until b rejoins, then is answered REBALANCE_IN_PROGRESS. It
// returns b's JoinGroup, still out.
func soloGenerationHeld(t *testing.T, ctx context.Context, a, b *rawMember, ids []string) <-chan *kmsg.JoinGroupResponse {
	t.Helper()
	alone := answer(t, ctx, a.join(ctx, ids[0]), "a's JoinGroup")
	if alone.ErrorCode != 0 || alone.LeaderID != alone.MemberID || len(alone.Members) != 1 {
		t.Fatalf("a's JoinGroup: %v, leader %v, %d members; want the coordinator's generation of a alone",
			kerr.ErrorForCode(alone.ErrorCode), alone.LeaderID == alone.MemberID, len(alone.Members))
	}
	synced := a.syncAsync(ctx, ids[0], alone.Generation, map[string][]int32{ids[0]: {0, 1}})
	select {
	case s := <-synced:
		t.Fatalf("a's SyncGroup of a generation without b answered at once: %v, assigned %v", kerr.ErrorForCode(s.ErrorCode), assigned(t, s))
	case <-time.After(200 * time.Millisecond):
	}
	second := b.join(ctx, ids[1])
	select {
	case s := <-synced:
		if s.ErrorCode != kerr.RebalanceInProgress.Code {
			t.Fatalf("a's SyncGroup of a generation without b answered %v, assigned %v; want REBALANCE_IN_PROGRESS", kerr.ErrorForCode(s.ErrorCode), assigned(t, s))
		}
	case <-ctx.Done():
		t.Fatal("a's SyncGroup not answered after b rejoined")
	}
	return second
}

func TestMovedMembersJoinOneGeneration(t *testing.T) {
	routing := &phaseRouting{phase: phaseSource}
	p := startTwoClusterProxy(t, routing)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := newRawMember(t, p, []int32{0}, 10*time.Second), newRawMember(t, p, []int32{1}, 10*time.Second)
	ids := moveHeldMembers(t, ctx, p, routing, a, b)

	// A commit a sent under its old member id before it learnt of the move
	// is answered REBALANCE_IN_PROGRESS, not by the target (Kafka answers
	// UNKNOWN_MEMBER_ID, and librdkafka then drops its new member id).
	if code := a.commit(ctx, "m0", 5); code != kerr.RebalanceInProgress.Code {
		t.Fatalf("a's commit under its old member id after the move: %v, want REBALANCE_IN_PROGRESS", kerr.ErrorForCode(code))
	}

	second := soloGenerationHeld(t, ctx, a, b, ids)
	again := a.join(ctx, ids[0])
	ra, rb := answer(t, ctx, again, "a's second JoinGroup"), answer(t, ctx, second, "b's JoinGroup")
	if ra.ErrorCode != 0 || rb.ErrorCode != 0 || ra.Generation != rb.Generation {
		t.Fatalf("answers %v (generation %d) and %v (generation %d), want one generation of both",
			kerr.ErrorForCode(ra.ErrorCode), ra.Generation, kerr.ErrorForCode(rb.ErrorCode), rb.Generation)
	}
	leader, follower, lm, fm := ra, rb, a, b
	if rb.LeaderID == rb.MemberID {
		leader, follower, lm, fm = rb, ra, b, a
	}
	if len(leader.Members) != 2 {
		t.Fatalf("the leader sees %d members, want 2", len(leader.Members))
	}
	// Both sync: from then on the coordinator knows them, and the proxy
	// stops watching.
	done := fm.syncAsync(ctx, follower.MemberID, follower.Generation, nil)
	if s := lm.sync(ctx, leader.MemberID, leader.Generation, map[string][]int32{ids[0]: {0}, ids[1]: {1}}); s.ErrorCode != 0 {
		t.Fatalf("leader's SyncGroup: %v", kerr.ErrorForCode(s.ErrorCode))
	}
	if s := <-done; s.ErrorCode != 0 {
		t.Fatalf("follower's SyncGroup: %v", kerr.ErrorForCode(s.ErrorCode))
	}
	if p.gate.moved.active("g", false) {
		t.Fatal("members still watched after both synced on the target")
	}
}

// TestMovedMemberGivenUp: a moved member that never rejoins is given up
// after its session timeout, and the generation of the others goes on; a
// member owning nothing when it moved (eager) is not waited for at all.
func TestMovedMemberGivenUp(t *testing.T) {
	routing := &phaseRouting{phase: phaseSource}
	p := startTwoClusterProxy(t, routing, kfake.GroupMinSessionTimeout(100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := newRawMember(t, p, []int32{0}, 10*time.Second), newRawMember(t, p, []int32{1}, 500*time.Millisecond)
	eager := newRawMember(t, p, nil, 10*time.Second)
	ids := moveHeldMembers(t, ctx, p, routing, a, b, eager)

	start := time.Now()
	for {
		resp := answer(t, ctx, a.join(ctx, ids[0]), "a's JoinGroup")
		if resp.ErrorCode != 0 || resp.LeaderID != resp.MemberID || len(resp.Members) != 1 {
			t.Fatalf("a's JoinGroup: %v, leader %v, %d members; want a alone (b silent, the eager member not rejoined)",
				kerr.ErrorForCode(resp.ErrorCode), resp.LeaderID == resp.MemberID, len(resp.Members))
		}
		s := a.sync(ctx, ids[0], resp.Generation, map[string][]int32{ids[0]: {0, 1}})
		if s.ErrorCode == 0 {
			break
		}
		if s.ErrorCode != kerr.RebalanceInProgress.Code {
			t.Fatalf("a's SyncGroup: %v", kerr.ErrorForCode(s.ErrorCode))
		}
	}
	if waited := time.Since(start); waited < 500*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("a's generation synced after %s, want after b's session timeout (500ms) and soon after", waited)
	}
}

// TestMovedMembersOnTwoNodes: as TestMovedMembersJoinOneGeneration with
// the two members on two proxy nodes (sidecars): the leader's node learns
// of the member the other node moved from it (Config.PeerMovedMembers, GET
// /v1/gate between nodes), and holds the leader's SyncGroup just the same.
func TestMovedMembersOnTwoNodes(t *testing.T) {
	routing := &phaseRouting{phase: phaseSource}
	addrs := startKfakePair(t)
	var nodes [2]*Proxy
	peerOf := func(i int) func(context.Context, string) []MovedMember {
		return func(_ context.Context, group string) []MovedMember { return nodes[1-i].MovedMembers(group) }
	}
	for i := range nodes {
		nodes[i] = startProxyOnPair(t, addrs, routing, peerOf(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := newRawMember(t, nodes[0], []int32{0}, 10*time.Second), newRawMember(t, nodes[1], []int32{1}, 10*time.Second)
	ids := moveHeldMembersOn(t, ctx, nodes[:], routing, a, b)

	second := soloGenerationHeld(t, ctx, a, b, ids)
	ra, rb := answer(t, ctx, a.join(ctx, ids[0]), "a's second JoinGroup"), answer(t, ctx, second, "b's JoinGroup")
	if ra.ErrorCode != 0 || rb.ErrorCode != 0 || ra.Generation != rb.Generation {
		t.Fatalf("answers %v (generation %d) and %v (generation %d), want one generation of both",
			kerr.ErrorForCode(ra.ErrorCode), ra.Generation, kerr.ErrorForCode(rb.ErrorCode), rb.Generation)
	}
}
