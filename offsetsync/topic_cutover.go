package offsetsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Producer primaries of a topic. A flip walks source → draining → target.
const (
	PrimarySource      = "source"
	PrimaryDraining    = "draining"
	PrimaryTarget      = "target"
	PrimaryRollingBack = "rolling-back"
)

// TopicStore is where topic primaries live (the raft store).
type TopicStore interface {
	TopicPrimary(topic string) string
	// SetTopicPrimary moves topic from one primary to another and, in the
	// same step, appends segs (partition → segment) to its maps.
	SetTopicPrimary(ctx context.Context, topic, from, to string, segs map[int32]Segment) error
	// CloseTopic moves topic from one primary to another and, in the same
	// step, drops the open segment of each of its partitions.
	CloseTopic(ctx context.Context, topic, from, to string) error
}

// ProduceGate is what the proxy nodes report about a topic's produces: how
// many they forwarded to the source and have not seen answered.
type ProduceGate interface {
	InflightProduces(topic string) int
}

// TopicCutover moves a topic's producers to the target: the virtual log
// continues there without a gap, an overlap or a change any client sees.
type TopicCutover struct {
	Source, Target *kgo.Client
	Topics         TopicStore
	Gate           ProduceGate
	Maps           func(topic string, partition int32) OffsetMap
	// Covered waits until the mirror has copied everything before virtual
	// position v of a partition.
	Covered func(ctx context.Context, topic string, partition int32, v int64) error
	// HoldTimeout bounds the flip (default 10 s): the proxies hold the
	// topic's produces meanwhile, so past it the flip is reverted and the
	// held produces go to the source.
	HoldTimeout time.Duration
	// Verify, if set, runs before anything changes (unless forced); an
	// error refuses the flip.
	Verify func(ctx context.Context, topic string) error
	Log    *slog.Logger
}

// TopicReport says what a topic flip did.
type TopicReport struct {
	Topic       string `json:"topic"`
	From        string `json:"from"`
	To          string `json:"to"`
	Primary     string `json:"primary"`
	AlreadyDone bool   `json:"already_done,omitempty"`
	Partitions  int    `json:"partitions"`
	// Hold is how long produces of the topic were held: the producers'
	// pause.
	Hold  time.Duration `json:"hold_ns"`
	Total time.Duration `json:"total_ns"`
	// Flip is where each partition's virtual log continues on the target.
	Flip map[int32]Segment `json:"flip,omitempty"`
}

// ErrSourceDiverged is returned for a rollback when the source's offsets
// no longer equal the virtual log's: something other than the reverse
// mirror wrote the source after the flip.
var ErrSourceDiverged = errors.New("the source's offsets no longer match the virtual log")

// ErrTargetNotEmpty is returned when the target holds records of a
// partition beyond those the mirror wrote: the virtual log could not
// continue there exactly.
var ErrTargetNotEmpty = errors.New("the target holds records the mirror did not write")

// Run flips topic's producers to the target (toTarget). Asked twice, the
// second call reports AlreadyDone. force skips Verify.
func (c *TopicCutover) Run(ctx context.Context, topic string, toTarget, force bool) (TopicReport, error) {
	start := time.Now()
	rep := TopicReport{Topic: topic, From: "source", To: "target"}
	if !toTarget {
		return c.rollback(ctx, topic, start)
	}
	log := c.logger().With("topic", topic)
	cur := c.Topics.TopicPrimary(topic)
	rep.Primary = cur
	switch cur {
	case PrimaryTarget:
		rep.AlreadyDone = true
		return rep, nil
	case PrimarySource, PrimaryDraining:
	default:
		return rep, fmt.Errorf("topic %s is %s: %w", topic, cur, ErrInProgress)
	}
	if c.Verify != nil && cur == PrimarySource && !force {
		if err := c.Verify(ctx, topic); err != nil {
			return rep, fmt.Errorf("verify %s before the flip: %w", topic, err)
		}
	}

	srcAdm, dstAdm := kadm.NewClient(c.Source), kadm.NewClient(c.Target)
	partitions, err := c.partitions(ctx, srcAdm, dstAdm, topic)
	if err != nil {
		return rep, err
	}
	rep.Partitions = len(partitions)

	if cur == PrimarySource {
		if err := c.Topics.SetTopicPrimary(ctx, topic, PrimarySource, PrimaryDraining, nil); err != nil {
			return rep, fmt.Errorf("hold produces of %s: %w", topic, err)
		}
		log.Info("topic draining: produces held", "partitions", len(partitions))
	}
	holdStart := time.Now()
	fail := func(err error) (TopicReport, error) {
		// Undo: the proxies send the held produces to the source.
		return c.revert(rep, holdStart, PrimaryDraining, PrimarySource, err)
	}
	hold, cancel := context.WithTimeout(ctx, c.holdTimeout())
	defer cancel()

	// 1. Nothing of the topic may still be on its way to the source: its
	// records or transaction markers would land after the flip point.
	if err := c.quiesce(hold, srcAdm, topic); err != nil {
		return fail(fmt.Errorf("topic %s on the source: %w", topic, err))
	}

	// 2. Wait until the mirror holds everything the source has.
	ends, err := endOffsets(hold, srcAdm, topic)
	if err != nil {
		return fail(fmt.Errorf("source end offsets of %s: %w", topic, err))
	}
	for _, p := range partitions {
		end, _ := ends.Lookup(topic, p)
		if err := c.Covered(hold, topic, p, end.Offset); err != nil {
			return fail(fmt.Errorf("topic %s partition %d: mirror has not reached the source end %d: %w", topic, p, end.Offset, err))
		}
	}
	// Read after Covered: the target's ends then include every record the
	// mirror wrote.
	targetEnds, err := endOffsets(hold, dstAdm, topic)
	if err != nil {
		return fail(fmt.Errorf("target end offsets of %s: %w", topic, err))
	}
	flip := make(map[int32]Segment, len(partitions))
	for _, p := range partitions {
		end, _ := ends.Lookup(topic, p)
		// The map is read after Covered, which waited for its last records.
		m := c.Maps(topic, p)
		tEnd, err := m.PositionToTarget(end.Offset, true)
		if err != nil {
			return fail(fmt.Errorf("topic %s partition %d: translate the source end %d: %w", topic, p, end.Offset, err))
		}
		// The target may lag the map only by records still being written;
		// Covered waited for those, so the ends must agree.
		if got, _ := targetEnds.Lookup(topic, p); got.Offset != tEnd {
			return fail(fmt.Errorf("topic %s partition %d: target ends at %d, the map at %d: %w", topic, p, got.Offset, tEnd, ErrTargetNotEmpty))
		}
		flip[p] = OpenSegment(end.Offset, tEnd)
	}

	// 3. Flip: the open segments and the new primary in one raft entry.
	if err := c.Topics.SetTopicPrimary(ctx, topic, PrimaryDraining, PrimaryTarget, flip); err != nil {
		return fail(fmt.Errorf("flip topic %s: %w", topic, err))
	}
	rep.Primary = PrimaryTarget
	rep.Hold = time.Since(holdStart)
	rep.Total = time.Since(start)
	rep.Flip = flip
	log.Info("topic flipped to the target", "partitions", len(partitions), "hold", rep.Hold, "total", rep.Total)
	return rep, nil
}

// rollback moves a flipped topic's producers back to the source: produces
// are held, the reverse mirror is awaited until the source holds every
// record produced to the target, and the open segments are closed in the
// same raft entry that makes the source primary again. Virtual offsets then
// equal source offsets again, which is what the proxy assumes of a topic
// the source serves.
func (c *TopicCutover) rollback(ctx context.Context, topic string, start time.Time) (TopicReport, error) {
	rep := TopicReport{Topic: topic, From: "target", To: "source"}
	log := c.logger().With("topic", topic, "to", "source")
	cur := c.Topics.TopicPrimary(topic)
	rep.Primary = cur
	switch cur {
	case PrimarySource:
		rep.AlreadyDone = true
		return rep, nil
	case PrimaryTarget, PrimaryRollingBack:
	default:
		return rep, fmt.Errorf("topic %s is %s: %w", topic, cur, ErrInProgress)
	}
	srcAdm, dstAdm := kadm.NewClient(c.Source), kadm.NewClient(c.Target)
	partitions, err := c.partitions(ctx, srcAdm, dstAdm, topic)
	if err != nil {
		return rep, err
	}
	rep.Partitions = len(partitions)
	if cur == PrimaryTarget {
		if err := c.Topics.SetTopicPrimary(ctx, topic, PrimaryTarget, PrimaryRollingBack, nil); err != nil {
			return rep, fmt.Errorf("hold produces of %s: %w", topic, err)
		}
		log.Info("topic rolling back: produces held", "partitions", len(partitions))
	}
	holdStart := time.Now()
	fail := func(err error) (TopicReport, error) {
		return c.revert(rep, holdStart, PrimaryRollingBack, PrimaryTarget, err)
	}
	hold, cancel := context.WithTimeout(ctx, c.holdTimeout())
	defer cancel()
	if err := c.quiesce(hold, dstAdm, topic); err != nil {
		return fail(fmt.Errorf("topic %s on the target: %w", topic, err))
	}
	ends, err := endOffsets(hold, dstAdm, topic)
	if err != nil {
		return fail(fmt.Errorf("target end offsets of %s: %w", topic, err))
	}
	// The reverse mirror must have copied everything the target has.
	for _, p := range partitions {
		end, _ := ends.Lookup(topic, p)
		for {
			last, ok := c.Maps(topic, p).Last()
			if !ok || !last.Open() {
				return fail(fmt.Errorf("topic %s partition %d has no open segment: not flipped", topic, p))
			}
			if last.Target >= end.Offset {
				break
			}
			select {
			case <-hold.Done():
				return fail(fmt.Errorf("topic %s partition %d: the reverse mirror has copied up to target offset %d of %d (is it running, and the source reachable?): %w", topic, p, last.Target, end.Offset, hold.Err()))
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	sourceEnds, err := endOffsets(hold, srcAdm, topic)
	if err != nil {
		return fail(fmt.Errorf("source end offsets of %s: %w", topic, err))
	}
	for _, p := range partitions {
		m := c.Maps(topic, p)
		open, _ := m.Last()
		got, _ := sourceEnds.Lookup(topic, p)
		if got.Offset != open.Virtual {
			return fail(fmt.Errorf("topic %s partition %d: the source ends at %d where the virtual log goes on at %d: %w", topic, p, got.Offset, open.Virtual, ErrSourceDiverged))
		}
		if n := len(m); n >= 2 && m[n-2].Source != NoOffset && m[n-2].Source != m[n-2].Virtual && m[n-2].TargetEnd() == open.Target {
			return fail(fmt.Errorf("topic %s partition %d: reverse-mirrored records sit at source %d for virtual %d: %w", topic, p, m[n-2].Source, m[n-2].Virtual, ErrSourceDiverged))
		}
	}
	if err := c.Topics.CloseTopic(ctx, topic, PrimaryRollingBack, PrimarySource); err != nil {
		return fail(fmt.Errorf("roll back topic %s: %w", topic, err))
	}
	rep.Primary = PrimarySource
	rep.Hold = time.Since(holdStart)
	rep.Total = time.Since(start)
	log.Info("topic rolled back to the source", "partitions", len(partitions), "hold", rep.Hold, "total", rep.Total)
	return rep, nil
}

// revert undoes a hold: the topic goes back to the primary it left, and
// the proxies send the produces they held there.
func (c *TopicCutover) revert(rep TopicReport, holdStart time.Time, holding, back string, err error) (TopicReport, error) {
	if rerr := c.Topics.SetTopicPrimary(context.Background(), rep.Topic, holding, back, nil); rerr != nil {
		err = errors.Join(err, fmt.Errorf("revert topic %s to the %s: %w", rep.Topic, back, rerr))
	}
	rep.Primary = c.Topics.TopicPrimary(rep.Topic)
	rep.Hold = time.Since(holdStart)
	return rep, err
}

// quiesce waits, with the topic's produces held, until nothing of it is on
// its way to the cluster it leaves (adm's): no produce forwarded and not yet
// answered, no transaction open through any proxy node (both counted by
// the gate), and no transaction open on the cluster itself.
func (c *TopicCutover) quiesce(ctx context.Context, adm *kadm.Client, topic string) error {
	for c.Gate.InflightProduces(topic) > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("produces still in flight: %w", ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	return waitStable(ctx, adm, topic)
}

// endOffsets lists topic's end offsets, any partition's error failing it.
func endOffsets(ctx context.Context, adm *kadm.Client, topic string) (kadm.ListedOffsets, error) {
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	return ends, err
}

// waitStable waits until no transaction is open on any partition of topic:
// the last stable offset equals the end offset everywhere.
func waitStable(ctx context.Context, adm *kadm.Client, topic string) error {
	for {
		ends, err := endOffsets(ctx, adm, topic)
		stable, err2 := adm.ListCommittedOffsets(ctx, topic)
		if err == nil && err2 == nil {
			err = stable.Error()
		}
		if err == nil {
			err = err2
		}
		if err != nil {
			return fmt.Errorf("end and stable offsets: %w", err)
		}
		open := false
		ends.Each(func(e kadm.ListedOffset) {
			if s, ok := stable.Lookup(topic, e.Partition); !ok || s.Offset < e.Offset {
				open = true
			}
		})
		if !open {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("a transaction is still open on it: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// partitions lists the topic's partitions, checking that the target has
// the same ones and that the mirror maps every one of them.
func (c *TopicCutover) partitions(ctx context.Context, srcAdm, dstAdm *kadm.Client, topic string) ([]int32, error) {
	src, err := srcAdm.ListTopics(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("describe %s on the source: %w", topic, err)
	}
	st, ok := src[topic]
	if !ok || st.Err != nil {
		return nil, fmt.Errorf("topic %s on the source: %v", topic, errOr(st.Err, "not found"))
	}
	dst, err := dstAdm.ListTopics(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("describe %s on the target: %w", topic, err)
	}
	dt, ok := dst[topic]
	if !ok || dt.Err != nil {
		return nil, fmt.Errorf("topic %s on the target: %v", topic, errOr(dt.Err, "not found"))
	}
	if len(dt.Partitions) != len(st.Partitions) {
		return nil, fmt.Errorf("topic %s has %d partitions on the source and %d on the target", topic, len(st.Partitions), len(dt.Partitions))
	}
	var parts []int32
	for p := range st.Partitions {
		if len(c.Maps(topic, p)) == 0 {
			return nil, fmt.Errorf("topic %s partition %d is not mirrored yet (no offset map): start the proxy with a target and let the mirror begin", topic, p)
		}
		parts = append(parts, p)
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i] < parts[j] })
	return parts, nil
}

func errOr(err error, otherwise string) any {
	if err != nil {
		return err
	}
	return otherwise
}

func (c *TopicCutover) holdTimeout() time.Duration {
	if c.HoldTimeout > 0 {
		return c.HoldTimeout
	}
	return 10 * time.Second
}

func (c *TopicCutover) logger() *slog.Logger {
	if c.Log != nil {
		return c.Log
	}
	return slog.Default()
}
