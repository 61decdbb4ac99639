package raftstore

import (
	"fmt"
	"github.com/kmigrate/kmigrate/offsetsync"
	"slices"
)

// SetGroupPhase moves a consumer group to Phase. Asking for the phase the
// group is already in changes nothing and succeeds (an operator's repeated
// flip is harmless); any other move must be a valid transition.
type SetGroupPhase struct {
	Group string     `json:"group"`
	Phase GroupPhase `json:"phase"`
	// From, if set, is the phase the caller expects the group to be in.
	From GroupPhase `json:"from,omitempty"`
	// IfEpoch, if set, is the epoch the caller expects (compare-and-set).
	IfEpoch *uint64 `json:"if_epoch,omitempty"`
}

func (SetGroupPhase) Type() CommandType { return CmdSetGroupPhase }

func (c SetGroupPhase) apply(s *state, x applyCtx) Result {
	switch {
	case c.Group == "":
		return refuse(ErrBadCommand, "empty group name")
	case !c.Phase.Valid():
		return refuse(ErrBadCommand, "group %q: unknown phase %q", c.Group, c.Phase)
	case c.From != "" && !c.From.Valid():
		return refuse(ErrBadCommand, "group %q: unknown expected phase %q", c.Group, c.From)
	}
	g, _ := s.group(c.Group)
	if g.Phase == c.Phase {
		return Result{Epoch: g.Epoch}
	}
	if c.From != "" && c.From != g.Phase {
		return refuse(ErrPhaseMismatch, "group %q is %s, not %s", c.Group, g.Phase, c.From)
	}
	if c.IfEpoch != nil && *c.IfEpoch != g.Epoch {
		return refuse(ErrEpochMismatch, "group %q is at epoch %d, not %d", c.Group, g.Epoch, *c.IfEpoch)
	}
	if !slices.Contains(groupTransitions[g.Phase], c.Phase) {
		return refuse(ErrInvalidTransition, "group %q is %s: it can go to %v, not %s",
			c.Group, g.Phase, groupTransitions[g.Phase], c.Phase)
	}
	g.Phase, g.Epoch, g.ChangedAt, g.ChangedIndex = c.Phase, g.Epoch+1, x.at, x.index
	s.groups[c.Group] = g
	return Result{Epoch: g.Epoch, Changed: true}
}

// SetTopicPrimary moves a topic's producer primary, with the same rules as
// SetGroupPhase.
type SetTopicPrimary struct {
	Topic   string          `json:"topic"`
	Primary ProducerPrimary `json:"primary"`
	From    ProducerPrimary `json:"from,omitempty"`
	IfEpoch *uint64         `json:"if_epoch,omitempty"`
	// Segments are appended to the topic's partition maps in the same step
	// as the move (the producer flip's open segments), so that no node ever
	// sees the new primary without the offsets it needs, or the reverse.
	// The writer-ownership check of AppendSegments does not apply: the flip
	// starts where the mirror, fenced by the held produces, stopped.
	Segments []PartitionSegment `json:"segments,omitempty"`
	// CloseOpen drops the open segment of every partition of the topic in
	// the same step (producers going back to the source).
	CloseOpen bool `json:"close_open,omitempty"`
}

// PartitionSegment is one segment for one partition of the command's topic.
type PartitionSegment struct {
	Partition int32              `json:"partition"`
	Segment   offsetsync.Segment `json:"segment"`
}

func (SetTopicPrimary) Type() CommandType { return CmdSetTopicPrimary }

func (c SetTopicPrimary) apply(s *state, x applyCtx) Result {
	switch {
	case c.Topic == "":
		return refuse(ErrBadCommand, "empty topic name")
	case !c.Primary.Valid():
		return refuse(ErrBadCommand, "topic %q: unknown primary %q", c.Topic, c.Primary)
	case c.From != "" && !c.From.Valid():
		return refuse(ErrBadCommand, "topic %q: unknown expected primary %q", c.Topic, c.From)
	}
	t, _ := s.topic(c.Topic)
	if t.Primary == c.Primary {
		return Result{Epoch: t.Epoch}
	}
	if c.From != "" && c.From != t.Primary {
		return refuse(ErrPhaseMismatch, "topic %q primary is %s, not %s", c.Topic, t.Primary, c.From)
	}
	if c.IfEpoch != nil && *c.IfEpoch != t.Epoch {
		return refuse(ErrEpochMismatch, "topic %q is at epoch %d, not %d", c.Topic, t.Epoch, *c.IfEpoch)
	}
	if !slices.Contains(producerTransitions[t.Primary], c.Primary) {
		return refuse(ErrInvalidTransition, "topic %q primary is %s: it can go to %v, not %s",
			c.Topic, t.Primary, producerTransitions[t.Primary], c.Primary)
	}
	grown := make(map[TopicPartition]offsetsync.OffsetMap, len(c.Segments))
	for _, ps := range c.Segments {
		tp := TopicPartition{Topic: c.Topic, Partition: ps.Partition}
		m, ok := grown[tp]
		if !ok {
			m = s.maps[tp].Clone()
		}
		if _, err := m.Append(ps.Segment); err != nil {
			return refuse(ErrBadCommand, "topic %q partition %d: %v", c.Topic, ps.Partition, err)
		}
		grown[tp] = m
	}
	if c.CloseOpen {
		for tp, m := range s.maps {
			if tp.Topic == c.Topic && m.Flipped() {
				if _, ok := grown[tp]; !ok {
					grown[tp] = m.Clone()
				}
				g := grown[tp]
				g.CloseOpen()
				grown[tp] = g
			}
		}
	}
	for tp, m := range grown {
		s.maps[tp] = m
	}
	t.Primary, t.Epoch, t.ChangedAt, t.ChangedIndex = c.Primary, t.Epoch+1, x.at, x.index
	s.topics[c.Topic] = t
	return Result{Epoch: t.Epoch, Changed: true}
}

// SetReverseMirror turns a topic's target→source mirror on or off; setting it
// to what it is changes nothing.
type SetReverseMirror struct {
	Topic   string  `json:"topic"`
	On      bool    `json:"on"`
	IfEpoch *uint64 `json:"if_epoch,omitempty"`
}

func (SetReverseMirror) Type() CommandType { return CmdSetReverseMirror }

func (c SetReverseMirror) apply(s *state, x applyCtx) Result {
	if c.Topic == "" {
		return refuse(ErrBadCommand, "empty topic name")
	}
	t, _ := s.topic(c.Topic)
	if t.ReverseMirror == c.On {
		return Result{Epoch: t.Epoch}
	}
	if c.IfEpoch != nil && *c.IfEpoch != t.Epoch {
		return refuse(ErrEpochMismatch, "topic %q is at epoch %d, not %d", c.Topic, t.Epoch, *c.IfEpoch)
	}
	t.ReverseMirror, t.Epoch, t.ChangedAt, t.ChangedIndex = c.On, t.Epoch+1, x.at, x.index
	s.topics[c.Topic] = t
	return Result{Epoch: t.Epoch, Changed: true}
}

// PartitionAppend is the segments a writer adds to one partition's map,
// with the writer epoch it holds.
type PartitionAppend struct {
	TopicPartition
	Epoch    uint64               `json:"epoch"`
	Segments []offsetsync.Segment `json:"segments"`
}

// AppendSegments extends offset maps. Node must own every partition named,
// at the epoch given: a stale writer's append is refused. The command is
// atomic: if one partition is refused, none changes. Restating segments that
// are already mapped identically is accepted (see offsetsync.OffsetMap.Append).
type AppendSegments struct {
	Node       string            `json:"node"`
	Partitions []PartitionAppend `json:"partitions"`
}

func (AppendSegments) Type() CommandType { return CmdAppendSegments }

func (c AppendSegments) apply(s *state, _ applyCtx) Result {
	if c.Node == "" {
		return refuse(ErrBadCommand, "append without a writer node")
	}
	seen := make(map[TopicPartition]bool, len(c.Partitions))
	for _, p := range c.Partitions {
		if p.Topic == "" || p.Partition < 0 {
			return refuse(ErrBadCommand, "invalid partition %s/%d", p.Topic, p.Partition)
		}
		if seen[p.TopicPartition] {
			return refuse(ErrBadCommand, "partition %s/%d named twice", p.Topic, p.Partition)
		}
		seen[p.TopicPartition] = true
		if w, _ := s.writer(p.TopicPartition); w.Node != c.Node || w.Epoch != p.Epoch {
			return refuse(ErrStaleWriter, "%s/%d is owned by %q at epoch %d; %q at epoch %d may not write",
				p.Topic, p.Partition, w.Node, w.Epoch, c.Node, p.Epoch)
		}
	}
	// Appends only grow the last segment or add after it, so remembering the
	// length and last segment of each touched map is enough to undo them.
	type undo struct {
		tp      TopicPartition
		existed bool
		n       int
		last    offsetsync.Segment
	}
	var undos []undo
	rollback := func() {
		for i := len(undos) - 1; i >= 0; i-- {
			u := undos[i]
			if !u.existed {
				delete(s.maps, u.tp)
				continue
			}
			m := s.maps[u.tp][:u.n]
			m[u.n-1] = u.last
			s.maps[u.tp] = m
		}
	}
	changed := false
	for _, p := range c.Partitions {
		m, existed := s.maps[p.TopicPartition]
		u := undo{tp: p.TopicPartition, existed: existed && len(m) > 0, n: len(m)}
		if u.existed {
			u.last = m[len(m)-1]
		}
		undos = append(undos, u)
		for _, seg := range p.Segments {
			ch, err := m.Append(seg)
			if err != nil {
				s.maps[p.TopicPartition] = m
				rollback()
				return refuse(err, "%s/%d", p.Topic, p.Partition)
			}
			changed = changed || ch
		}
		if len(m) > 0 {
			s.maps[p.TopicPartition] = m
		}
	}
	return Result{Changed: changed}
}

// ClaimWriter makes Node the mirror writer of a partition, if the partition
// is still at IfEpoch (compare-and-set: two nodes claiming from the same
// epoch cannot both win). The epoch then increases, which stops the previous
// writer. A partition never claimed is at epoch 0.
type ClaimWriter struct {
	TopicPartition
	Node    string `json:"node"`
	IfEpoch uint64 `json:"if_epoch"`
}

func (ClaimWriter) Type() CommandType { return CmdClaimWriter }

func (c ClaimWriter) apply(s *state, x applyCtx) Result {
	if c.Topic == "" || c.Partition < 0 || c.Node == "" {
		return refuse(ErrBadCommand, "claim of %s/%d by %q", c.Topic, c.Partition, c.Node)
	}
	n, ok := s.nodes[c.Node]
	if !ok {
		return refuse(ErrUnknownNode, "%q cannot claim %s/%d", c.Node, c.Topic, c.Partition)
	}
	if n.Dead {
		return refuse(ErrNodeDead, "%q cannot claim %s/%d", c.Node, c.Topic, c.Partition)
	}
	w, _ := s.writer(c.TopicPartition)
	if w.Epoch != c.IfEpoch {
		return refuse(ErrEpochMismatch, "%s/%d is owned by %q at epoch %d, not %d",
			c.Topic, c.Partition, w.Node, w.Epoch, c.IfEpoch)
	}
	w.Node, w.Epoch, w.ChangedAt, w.ChangedIndex = c.Node, w.Epoch+1, x.at, x.index
	s.writers[c.TopicPartition] = w
	return Result{Epoch: w.Epoch, Changed: true}
}

// ReleaseWriter gives a partition up: Node must hold it at Epoch. The epoch
// increases, so the released writer cannot write any more.
type ReleaseWriter struct {
	TopicPartition
	Node  string `json:"node"`
	Epoch uint64 `json:"epoch"`
}

func (ReleaseWriter) Type() CommandType { return CmdReleaseWriter }

func (c ReleaseWriter) apply(s *state, x applyCtx) Result {
	if c.Topic == "" || c.Partition < 0 || c.Node == "" {
		return refuse(ErrBadCommand, "release of %s/%d by %q", c.Topic, c.Partition, c.Node)
	}
	w, _ := s.writer(c.TopicPartition)
	if w.Node != c.Node || w.Epoch != c.Epoch {
		return refuse(ErrStaleWriter, "%s/%d is owned by %q at epoch %d; %q at epoch %d cannot release it",
			c.Topic, c.Partition, w.Node, w.Epoch, c.Node, c.Epoch)
	}
	w.Node, w.Epoch, w.ChangedAt, w.ChangedIndex = "", w.Epoch+1, x.at, x.index
	s.writers[c.TopicPartition] = w
	return Result{Epoch: w.Epoch, Changed: true}
}

// RegisterNode adds a node to the membership or updates how it is reached;
// it keeps what the node reported and makes it live.
type RegisterNode struct {
	Member
}

func (RegisterNode) Type() CommandType { return CmdRegisterNode }

func (c RegisterNode) apply(s *state, _ applyCtx) Result {
	if c.ID == "" || c.RaftAddr == "" {
		return refuse(ErrBadCommand, "node %q at %q", c.ID, c.RaftAddr)
	}
	n, ok := s.nodes[c.ID]
	if ok && n.Member == c.Member && !n.Dead {
		return Result{}
	}
	n.Member, n.Dead = c.Member, false
	s.nodes[c.ID] = n
	return Result{Changed: true}
}

// ReportApplied records the last index a node has applied. A report makes a
// dead node live again: it is evidently running, so changes must wait for it.
type ReportApplied struct {
	ID      string `json:"id"`
	Applied uint64 `json:"applied"`
}

func (ReportApplied) Type() CommandType { return CmdReportApplied }

func (c ReportApplied) apply(s *state, x applyCtx) Result {
	n, ok := s.nodes[c.ID]
	if !ok {
		return refuse(ErrUnknownNode, "report from %q", c.ID)
	}
	// The report is the node's own view, and it may legitimately go down
	// (a node that lost its data directory starts over), so it replaces.
	n.Applied, n.ReportedAt, n.Dead = c.Applied, x.at, false
	s.nodes[c.ID] = n
	return Result{Changed: true}
}

// SetNodeDead declares a node dead (changes stop waiting for it) or alive.
type SetNodeDead struct {
	ID   string `json:"id"`
	Dead bool   `json:"dead"`
}

func (SetNodeDead) Type() CommandType { return CmdSetNodeDead }

func (c SetNodeDead) apply(s *state, _ applyCtx) Result {
	n, ok := s.nodes[c.ID]
	if !ok {
		return refuse(ErrUnknownNode, "%q", c.ID)
	}
	if n.Dead == c.Dead {
		return Result{}
	}
	n.Dead = c.Dead
	s.nodes[c.ID] = n
	return Result{Changed: true}
}

// RemoveNode forgets a node. Partitions it owns keep their owner and epoch
// until reassigned, which fences the removed node's writer.
type RemoveNode struct {
	ID string `json:"id"`
}

func (RemoveNode) Type() CommandType { return CmdRemoveNode }

func (c RemoveNode) apply(s *state, _ applyCtx) Result {
	if _, ok := s.nodes[c.ID]; !ok {
		return Result{}
	}
	delete(s.nodes, c.ID)
	return Result{Changed: true}
}

// FillSource records the reverse mirror's progress on a flipped partition:
// the open segment's first Length records are now also in the source, from
// Source on (offsetsync.OffsetMap.FillSource).
type FillSource struct {
	TopicPartition
	Virtual int64 `json:"virtual"`
	Source  int64 `json:"source"`
	Length  int64 `json:"length"`
}

func (FillSource) Type() CommandType { return CmdFillSource }

func (c FillSource) apply(s *state, _ applyCtx) Result {
	m := s.maps[c.TopicPartition].Clone()
	changed, err := m.FillSource(c.Virtual, c.Source, c.Length)
	if err != nil {
		return refuse(ErrBadCommand, "%s/%d: %v", c.Topic, c.Partition, err)
	}
	if changed {
		s.maps[c.TopicPartition] = m
	}
	return Result{Changed: changed}
}

// String helps logs name a command.
func (t CommandType) String() string {
	switch t &^ IgnoreUnknownFlag {
	case CmdSetGroupPhase:
		return "SetGroupPhase"
	case CmdSetTopicPrimary:
		return "SetTopicPrimary"
	case CmdSetReverseMirror:
		return "SetReverseMirror"
	case CmdAppendSegments:
		return "AppendSegments"
	case CmdFillSource:
		return "FillSource"
	case CmdClaimWriter:
		return "ClaimWriter"
	case CmdReleaseWriter:
		return "ReleaseWriter"
	case CmdRegisterNode:
		return "RegisterNode"
	case CmdReportApplied:
		return "ReportApplied"
	case CmdSetNodeDead:
		return "SetNodeDead"
	case CmdRemoveNode:
		return "RemoveNode"
	}
	return fmt.Sprintf("CommandType(%d)", uint8(t))
}
