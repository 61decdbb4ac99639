package offsetsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Group phases. A cutover walks source → draining → fenced → target; a
// rollback walks target → rollback-draining → rollback-fenced → source.
const (
	PhaseSource           = "source"
	PhaseDraining         = "draining"
	PhaseFenced           = "fenced"
	PhaseTarget           = "target"
	PhaseRollbackDraining = "rollback-draining"
	PhaseRollbackFenced   = "rollback-fenced"
)

// PhaseStore is where group phases live (the raft store): every proxy node
// reads them, the cutover writes them.
type PhaseStore interface {
	GroupPhase(group string) string
	// SetGroupPhase moves group from one phase to another, failing if it
	// is not in from.
	SetGroupPhase(ctx context.Context, group, from, to string) error
}

// Gate is what the proxy nodes report about a draining group: members
// whose JoinGroup they hold and commits they have forwarded but not seen
// answered.
type Gate interface {
	HeldMembers(group string) map[string]bool
	InflightCommits(group string) int
}

// Cutover moves consumer groups between clusters without losing,
// repeating or reordering what they consume.
type Cutover struct {
	Source, Target *kgo.Client
	Phases         PhaseStore
	Gate           Gate
	Maps           func(topic string, partition int32) OffsetMap
	// Covered waits until the mirror has copied everything before virtual
	// position v of a partition.
	Covered func(ctx context.Context, topic string, partition int32, v int64) error
	// DrainTimeout bounds the wait for members to rejoin (default 30 s);
	// members that have not rejoined by then are fenced anyway and resume
	// from their last commit.
	DrainTimeout time.Duration
	Log          *slog.Logger
}

// Report says what a cutover or rollback did.
type Report struct {
	Group       string        `json:"group"`
	From        string        `json:"from"`
	To          string        `json:"to"`
	Phase       string        `json:"phase"`
	AlreadyDone bool          `json:"already_done,omitempty"`
	Members     int           `json:"members"`
	Rejoined    int           `json:"rejoined"`
	Partitions  int           `json:"partitions"`
	Drain       time.Duration `json:"drain_ns"`
	Total       time.Duration `json:"total_ns"`
}

// ErrInProgress is returned when another cutover or rollback of the group
// is under way.
var ErrInProgress = errors.New("a cutover or rollback of this group is in progress")

// ErrUnsupportedProtocol is returned for a group on the consumer rebalance
// protocol (KIP-848): its members heartbeat with ConsumerGroupHeartbeat,
// which the drain and fence of a cutover do not speak yet.
var ErrUnsupportedProtocol = errors.New("the group uses the consumer rebalance protocol (KIP-848, group.protocol=consumer), which cannot be moved yet: run its members with group.protocol=classic to move it")

// ErrUnknownGroup is returned for a group the cluster it would leave does
// not know: no members and no committed offsets. Moving it would only
// record a route for a name, most likely a typo.
var ErrUnknownGroup = errors.New("unknown group: no members and no committed offsets")

// Run moves group to the target (toTarget) or back to the source. Asked
// twice, the second call reports AlreadyDone. A run interrupted between
// phases (a node died) is resumed by calling Run again in the same
// direction.
func (c *Cutover) Run(ctx context.Context, group string, toTarget bool) (Report, error) {
	start := time.Now()
	from, to := c.Source, c.Target
	startPhase, drainPhase, fencePhase, endPhase := PhaseSource, PhaseDraining, PhaseFenced, PhaseTarget
	rep := Report{Group: group, From: "source", To: "target"}
	if !toTarget {
		from, to = c.Target, c.Source
		startPhase, drainPhase, fencePhase, endPhase = PhaseTarget, PhaseRollbackDraining, PhaseRollbackFenced, PhaseSource
		rep.From, rep.To = "target", "source"
	}
	log := c.logger().With("group", group, "to", rep.To)
	cur := c.Phases.GroupPhase(group)
	rep.Phase = cur
	switch cur {
	case endPhase:
		rep.AlreadyDone = true
		return rep, nil
	case startPhase, drainPhase, fencePhase:
	default:
		return rep, fmt.Errorf("group %s is in phase %s: %w", group, cur, ErrInProgress)
	}

	fromAdm, toAdm := kadm.NewClient(from), kadm.NewClient(to)
	if cur == startPhase {
		if listed, err := fromAdm.ListGroups(ctx); err == nil {
			if g, ok := listed[group]; ok && g.GroupType == "consumer" {
				return rep, fmt.Errorf("group %s on the %s: %w", group, rep.From, ErrUnsupportedProtocol)
			}
		}
	}
	// Start from a settled group: members still joining are missing from
	// the member list (KIP-394 pending members), and a member whose
	// JoinGroup already waits at the old coordinator never heartbeats, so it
	// would never be told to move.
	var d kadm.DescribedGroup
	for settle := time.Now().Add(c.drainTimeout()); ; {
		described, err := fromAdm.DescribeGroups(ctx, group)
		if err != nil {
			return rep, fmt.Errorf("describe group %s on the %s: %w", group, rep.From, err)
		}
		d = described[group]
		if d.Err != nil || cur != startPhase || d.State == "Stable" || d.State == "Empty" || d.State == "Dead" {
			break
		}
		if time.Now().After(settle) {
			return rep, fmt.Errorf("group %s on the %s is still %s after %s: retry when its rebalance has finished", group, rep.From, d.State, c.drainTimeout())
		}
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if errors.Is(d.Err, kerr.GroupIDNotFound) {
		return rep, fmt.Errorf("group %s on the %s: %w", group, rep.From, ErrUnknownGroup)
	}
	if d.Err != nil {
		return rep, fmt.Errorf("describe group %s on the %s: %w", group, rep.From, d.Err)
	}
	if d.ProtocolType != "" && d.ProtocolType != "consumer" {
		return rep, fmt.Errorf("group %s uses protocol type %q: only consumer groups can move", group, d.ProtocolType)
	}
	members := make(map[string]bool, len(d.Members))
	for _, m := range d.Members {
		members[m.MemberID] = true
	}
	rep.Members = len(members)

	// The destination's coordinator must be ready before members stop: on
	// a fresh cluster the first lookup creates __consumer_offsets, which
	// would otherwise add seconds to the pause.
	for {
		resp := toAdm.FindGroupCoordinators(ctx, group)
		if err := resp.Error(); err == nil {
			break
		} else if ctx.Err() != nil {
			return rep, fmt.Errorf("coordinator of %s on the %s: %w", group, rep.To, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if cur == startPhase && len(members) == 0 {
		committed, err := fromAdm.FetchOffsets(ctx, group)
		if err == nil {
			err = committed.Error()
		}
		if err != nil {
			return rep, fmt.Errorf("fetch committed offsets of %s from the %s: %w", group, rep.From, err)
		}
		if len(committed.Offsets().Sorted()) == 0 {
			return rep, fmt.Errorf("group %s on the %s: %w", group, rep.From, ErrUnknownGroup)
		}
	}
	if cur == startPhase {
		if err := c.Phases.SetGroupPhase(ctx, group, startPhase, drainPhase); err != nil {
			return rep, fmt.Errorf("drain group %s: %w", group, err)
		}
		cur = drainPhase
		log.Info("group draining", "members", len(members))
	}
	fail := func(err error) (Report, error) {
		// Undo: the proxies release held requests back to where the group was.
		if rerr := c.Phases.SetGroupPhase(context.Background(), group, c.Phases.GroupPhase(group), startPhase); rerr != nil {
			err = errors.Join(err, fmt.Errorf("revert group %s to %s: %w", group, startPhase, rerr))
		}
		rep.Phase = c.Phases.GroupPhase(group)
		return rep, err
	}

	// 1. Drain: wait until every member has revoked, committed and rejoined
	// (its JoinGroup held by a proxy).
	drainStart := time.Now()
	if cur == drainPhase {
		deadline := time.Now().Add(c.drainTimeout())
		for {
			held := c.Gate.HeldMembers(group)
			rejoined := 0
			for m := range members {
				if held[m] {
					rejoined++
				}
			}
			rep.Rejoined = rejoined
			if rejoined == len(members) {
				break
			}
			if time.Now().After(deadline) {
				log.Warn("drain timed out; fencing members that did not rejoin", "rejoined", rejoined, "members", len(members))
				break
			}
			select {
			case <-ctx.Done():
				return fail(ctx.Err())
			case <-time.After(10 * time.Millisecond):
			}
		}
		rep.Drain = time.Since(drainStart)
		// 2. Fence: no commit reaches the old cluster any more.
		if err := c.Phases.SetGroupPhase(ctx, group, drainPhase, fencePhase); err != nil {
			return fail(fmt.Errorf("fence group %s: %w", group, err))
		}
	}
	for deadline := time.Now().Add(10 * time.Second); c.Gate.InflightCommits(group) > 0; {
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("group %s: commits still in flight after 10 s", group))
		}
		time.Sleep(5 * time.Millisecond)
	}

	// 3. Translate the committed offsets exactly and commit them to the
	// other cluster, where the group is empty.
	committed, err := fromAdm.FetchOffsets(ctx, group)
	if err == nil {
		err = committed.Error()
	}
	if err != nil {
		return fail(fmt.Errorf("fetch committed offsets of %s from the %s: %w", group, rep.From, err))
	}
	moved := make(kadm.Offsets)
	for topic, parts := range committed {
		for partition, o := range parts {
			if o.At < 0 {
				continue
			}
			var at int64
			if toTarget {
				// A flipped partition's map is final: nothing to wait for.
				if !c.Maps(topic, partition).Flipped() {
					if err := c.Covered(ctx, topic, partition, o.At); err != nil {
						return fail(fmt.Errorf("group %s: %s/%d at %d not mirrored: %w", group, topic, partition, o.At, err))
					}
				}
				// The map is read after Covered: before, it may lack the
				// records Covered waited for.
				at, err = c.Maps(topic, partition).PositionToTarget(o.At, true)
			} else {
				at, err = c.Maps(topic, partition).PositionToVirtual(o.At)
			}
			if err != nil {
				return fail(fmt.Errorf("group %s: translate %s/%d at %d: %w", group, topic, partition, o.At, err))
			}
			moved.Add(kadm.Offset{Topic: topic, Partition: partition, At: at, LeaderEpoch: -1, Metadata: o.Metadata})
			log.Debug("offset moved", "topic", topic, "partition", partition, "from", o.At, "to", at)
		}
	}
	rep.Partitions = len(moved.Sorted())
	if len(moved) > 0 {
		resp, err := toAdm.CommitOffsets(ctx, group, moved)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return fail(fmt.Errorf("commit translated offsets of %s to the %s (is the group empty there?): %w", group, rep.To, err))
		}
	}

	// 4. Leave the old cluster's group on the members' behalf, so that it
	// is empty for a later move back, then flip.
	if len(members) > 0 {
		if err := leaveGroup(ctx, from, group, members); err != nil {
			log.Warn("could not remove members from the old group; they expire with their session timeout", "err", err)
		}
	}
	if err := c.Phases.SetGroupPhase(ctx, group, fencePhase, endPhase); err != nil {
		return fail(fmt.Errorf("flip group %s: %w", group, err))
	}
	rep.Phase = endPhase
	rep.Total = time.Since(start)
	log.Info("group moved", "partitions", rep.Partitions, "rejoined", rep.Rejoined, "members", rep.Members, "drain", rep.Drain, "total", rep.Total)
	return rep, nil
}

// leaveGroup removes members from a classic group (LeaveGroup v3+).
func leaveGroup(ctx context.Context, cl *kgo.Client, group string, members map[string]bool) error {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	ids := make([]string, 0, len(members))
	for m := range members {
		ids = append(ids, m)
	}
	sort.Strings(ids)
	for _, id := range ids {
		m := kmsg.NewLeaveGroupRequestMember()
		m.MemberID = id
		req.Members = append(req.Members, m)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return err
	}
	if resp.ErrorCode != 0 {
		return fmt.Errorf("leave group: error code %d", resp.ErrorCode)
	}
	return nil
}

func (c *Cutover) drainTimeout() time.Duration {
	if c.DrainTimeout > 0 {
		return c.DrainTimeout
	}
	return 30 * time.Second
}

func (c *Cutover) logger() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}
