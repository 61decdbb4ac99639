package raftstore

import (
	"cmp"
	"github.com/kmigrate/kmigrate/offsetsync"
	"slices"
	"time"
)

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

func compareTP(a, b TopicPartition) int {
	if c := cmp.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	return cmp.Compare(a.Partition, b.Partition)
}

// GroupPhase is where a consumer group is served, and how far a cutover or
// rollback has gone (see DESIGN.md, "Cutover").
type GroupPhase string

const (
	// GroupSource: the group is served by the source (the default).
	GroupSource GroupPhase = "source"
	// GroupDraining: members are being told to rebalance; their JoinGroups are held.
	GroupDraining GroupPhase = "draining"
	// GroupFenced: no node forwards a commit of the group to the source any more.
	GroupFenced GroupPhase = "fenced"
	// GroupTarget: the group is served by the target.
	GroupTarget GroupPhase = "target"
	// GroupRollbackDraining and GroupRollbackFenced are the same two steps
	// on the way back from the target to the source.
	GroupRollbackDraining GroupPhase = "rollback-draining"
	GroupRollbackFenced   GroupPhase = "rollback-fenced"
)

// groupTransitions lists, per phase, the phases a group may move to. Each
// intermediate phase may also go back to where its sequence started, so that
// a leader that finds a half-done flip can reverse it.
var groupTransitions = map[GroupPhase][]GroupPhase{
	GroupSource:           {GroupDraining},
	GroupDraining:         {GroupFenced, GroupSource},
	GroupFenced:           {GroupTarget, GroupSource},
	GroupTarget:           {GroupRollbackDraining},
	GroupRollbackDraining: {GroupRollbackFenced, GroupTarget},
	GroupRollbackFenced:   {GroupSource, GroupTarget},
}

// Valid reports whether p is a known phase.
func (p GroupPhase) Valid() bool { _, ok := groupTransitions[p]; return ok }

// ProducerPrimary is the cluster that takes a topic's produces.
type ProducerPrimary string

const (
	ProducerSource ProducerPrimary = "source"
	// ProducerDraining: produces are held while the mirror catches up, on the
	// way to the target.
	ProducerDraining ProducerPrimary = "draining"
	ProducerTarget   ProducerPrimary = "target"
	// ProducerRollingBack: the same hold on the way back to the source.
	ProducerRollingBack ProducerPrimary = "rolling-back"
)

var producerTransitions = map[ProducerPrimary][]ProducerPrimary{
	ProducerSource:      {ProducerDraining},
	ProducerDraining:    {ProducerTarget, ProducerSource},
	ProducerTarget:      {ProducerRollingBack},
	ProducerRollingBack: {ProducerSource, ProducerTarget},
}

// Valid reports whether p is a known producer primary.
func (p ProducerPrimary) Valid() bool { _, ok := producerTransitions[p]; return ok }

// GroupRoute is the routing of one consumer group. A group never changed is
// on the source at epoch 0.
type GroupRoute struct {
	Group string     `json:"group"`
	Phase GroupPhase `json:"phase"`
	// Epoch increases by one on every change of the group's route.
	Epoch uint64 `json:"epoch"`
	// ChangedAt is the proposer's clock when the last change was proposed;
	// ChangedIndex is the raft index of that change: the change is complete
	// once every live node has applied that index.
	ChangedAt    time.Time `json:"changed_at"`
	ChangedIndex uint64    `json:"changed_index"`
}

// TopicRoute is the producer routing of one topic. A topic never changed has
// the source as primary, no reverse mirror, at epoch 0.
type TopicRoute struct {
	Topic         string          `json:"topic"`
	Primary       ProducerPrimary `json:"primary"`
	ReverseMirror bool            `json:"reverse_mirror"`
	Epoch         uint64          `json:"epoch"`
	ChangedAt     time.Time       `json:"changed_at"`
	ChangedIndex  uint64          `json:"changed_index"`
}

// WriterOwner says which node may write a partition's mirror to the target.
// Epoch increases on every claim and release; a writer checks that it still
// holds its epoch before each write, so a stale writer stops.
type WriterOwner struct {
	TopicPartition
	Node         string    `json:"node"` // "" when released
	Epoch        uint64    `json:"epoch"`
	ChangedAt    time.Time `json:"changed_at"`
	ChangedIndex uint64    `json:"changed_index"`
}

// Member is how a node is reached.
type Member struct {
	ID        string `json:"id"`
	RaftAddr  string `json:"raft_addr"`
	AdminAddr string `json:"admin_addr,omitempty"` // HTTP address serving (*Store).Handler
	Voter     bool   `json:"voter"`
	// Writer says the node runs a mirror and may be given partitions to
	// write (Assigner); sidecars that only proxy leave it false.
	Writer bool `json:"writer,omitempty"`
}

// Node is a member and what it last reported.
type Node struct {
	Member
	// Applied is the last raft index the node reported as applied to its
	// state, at ReportedAt (proposer's clock).
	Applied    uint64    `json:"applied"`
	ReportedAt time.Time `json:"reported_at"`
	// Dead nodes are not waited for when deciding whether a change is
	// complete. A node that reports again is live again.
	Dead bool `json:"dead"`
}

// PartitionMap is the offset map of one partition.
type PartitionMap struct {
	TopicPartition
	Segments offsetsync.OffsetMap `json:"segments"`
}

// Reader is the read side of the replicated state. The raft-backed Store,
// Memory, and a future watch-stream follower implement it, so that callers do
// not change when sidecars stop being raft members (DESIGN.md, "Control
// plane"). Every method returns copies: callers may keep and modify them.
type Reader interface {
	// AppliedIndex is the raft index of the last entry applied to this state.
	AppliedIndex() uint64
	// Group returns a group's route; ok is false (and the route is the
	// default, on source at epoch 0) for a group never changed.
	Group(name string) (r GroupRoute, ok bool)
	Groups() []GroupRoute
	// Topic returns a topic's route; ok is false (and the route is the
	// default) for a topic never changed.
	Topic(name string) (r TopicRoute, ok bool)
	Topics() []TopicRoute
	// OffsetMap returns a partition's segments, nil when it has none.
	OffsetMap(tp TopicPartition) offsetsync.OffsetMap
	// LastSegment is the map's last segment, without copying the map.
	LastSegment(tp TopicPartition) (offsetsync.Segment, bool)
	Writer(tp TopicPartition) (w WriterOwner, ok bool)
	Writers() []WriterOwner
	Node(id string) (n Node, ok bool)
	Nodes() []Node
}

// NodesBehind returns the live nodes that have not reported applying index:
// a change at that index is complete when it returns none.
func NodesBehind(r Reader, index uint64) []Node {
	var behind []Node
	for _, n := range r.Nodes() {
		if !n.Dead && n.Applied < index {
			behind = append(behind, n)
		}
	}
	return behind
}

// Dump is a deep copy of the whole state, sorted, so that two equal states
// give equal dumps (and equal snapshot bytes).
type Dump struct {
	Applied uint64         `json:"applied"`
	Groups  []GroupRoute   `json:"groups"`
	Topics  []TopicRoute   `json:"topics"`
	Maps    []PartitionMap `json:"maps"`
	Writers []WriterOwner  `json:"writers"`
	Nodes   []Node         `json:"nodes"`
}

// state is the replicated state itself. It is not safe for concurrent use:
// fsm guards it.
type state struct {
	groups  map[string]GroupRoute
	topics  map[string]TopicRoute
	maps    map[TopicPartition]offsetsync.OffsetMap
	writers map[TopicPartition]WriterOwner
	nodes   map[string]Node
}

func newState() *state {
	return &state{
		groups:  map[string]GroupRoute{},
		topics:  map[string]TopicRoute{},
		maps:    map[TopicPartition]offsetsync.OffsetMap{},
		writers: map[TopicPartition]WriterOwner{},
		nodes:   map[string]Node{},
	}
}

func (s *state) group(name string) (GroupRoute, bool) {
	g, ok := s.groups[name]
	if !ok {
		g = GroupRoute{Group: name, Phase: GroupSource}
	}
	return g, ok
}

func (s *state) topic(name string) (TopicRoute, bool) {
	t, ok := s.topics[name]
	if !ok {
		t = TopicRoute{Topic: name, Primary: ProducerSource}
	}
	return t, ok
}

func (s *state) writer(tp TopicPartition) (WriterOwner, bool) {
	w, ok := s.writers[tp]
	if !ok {
		w = WriterOwner{TopicPartition: tp}
	}
	return w, ok
}

func (s *state) dump(applied uint64) Dump {
	d := Dump{
		Applied: applied,
		Groups:  sortedValues(s.groups, byGroup),
		Topics:  sortedValues(s.topics, byTopic),
		Writers: sortedValues(s.writers, byWriter),
		Nodes:   sortedValues(s.nodes, byNode),
	}
	for tp, m := range s.maps {
		d.Maps = append(d.Maps, PartitionMap{TopicPartition: tp, Segments: m.Clone()})
	}
	slices.SortFunc(d.Maps, func(a, b PartitionMap) int { return compareTP(a.TopicPartition, b.TopicPartition) })
	return d
}

// sortedValues returns the values of m in a deterministic order.
func sortedValues[K comparable, V any](m map[K]V, compare func(a, b V) int) []V {
	if len(m) == 0 {
		return nil
	}
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, compare)
	return out
}

func byGroup(a, b GroupRoute) int   { return cmp.Compare(a.Group, b.Group) }
func byTopic(a, b TopicRoute) int   { return cmp.Compare(a.Topic, b.Topic) }
func byWriter(a, b WriterOwner) int { return compareTP(a.TopicPartition, b.TopicPartition) }
func byNode(a, b Node) int          { return cmp.Compare(a.ID, b.ID) }

func stateFromDump(d Dump) *state {
	s := newState()
	for _, g := range d.Groups {
		s.groups[g.Group] = g
	}
	for _, t := range d.Topics {
		s.topics[t.Topic] = t
	}
	for _, m := range d.Maps {
		s.maps[m.TopicPartition] = m.Segments.Clone()
	}
	for _, w := range d.Writers {
		s.writers[w.TopicPartition] = w
	}
	for _, n := range d.Nodes {
		s.nodes[n.ID] = n
	}
	return s
}
