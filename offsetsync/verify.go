package offsetsync

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// DefaultChecksumRecords is how many of the last mapped records of each
// partition Verify reads from both clusters when VerifyConfig.ChecksumRecords
// is 0.
const DefaultChecksumRecords = 1000

// ErrUnknownTopic is returned by Verify for a topic the source does not have.
var ErrUnknownTopic = errors.New("unknown topic: not on the source cluster")

// Verdict is the outcome of verifying one partition, and what it means for
// a cutover:
//
//   - ok: the target holds exactly what the map says, and the mirror has
//     copied up to the source's end.
//   - lag: consistent, but the source has offsets past what is mapped. Not a
//     refusal: a cutover waits for the mirror itself (Covered).
//   - mismatch: the clusters disagree (different or missing records, target
//     records the map does not name, a side shorter than the map). Refuses.
//   - unmapped: the source has records but the partition has no map (the
//     mirror has not started it, or the topic is not in its selection). Refuses.
//   - error: the partition could not be checked. Refuses: nothing was shown.
type Verdict string

const (
	VerifyOK       Verdict = "ok"
	VerifyLag      Verdict = "lag"
	VerifyMismatch Verdict = "mismatch"
	VerifyUnmapped Verdict = "unmapped"
	VerifyError    Verdict = "error"
)

// Passes reports whether a cutover may proceed on this verdict.
func (v Verdict) Passes() bool { return v == VerifyOK || v == VerifyLag }

// VerifyConfig says what to compare. Source and Target are plain clients (no
// consumer group, no consumed topics): Verify derives short-lived consumers
// from their options to read records.
type VerifyConfig struct {
	Source, Target *kgo.Client
	// Maps returns a copy of a partition's offset map.
	Maps func(topic string, partition int32) OffsetMap
	// Topics to verify (every partition the source has); required.
	Topics []string
	// Groups to list; empty lists every group of either cluster that has
	// committed to one of Topics.
	Groups []string
	// ChecksumRecords is how many of the last mapped records of each
	// partition are read from both clusters and compared: 0 means
	// DefaultChecksumRecords, a negative value disables the reading.
	ChecksumRecords int
	// Settle bounds the wait for the map to name target records that
	// existed when Verify started (default 5 s): the mirror records its
	// mappings only after the target acknowledged them, so a tail of
	// unmapped target records is normal for a moment while it runs.
	Settle time.Duration
	// Timeout bounds each request to a cluster (default 15 s) and
	// ReadTimeout the reading of the records (default 60 s).
	Timeout, ReadTimeout time.Duration
	Log                  *slog.Logger
}

// VerifyReport is the result of Verify.
type VerifyReport struct {
	Time time.Time `json:"time"`
	// ChecksumRecords is the window read per partition, 0 when disabled.
	ChecksumRecords int               `json:"checksum_records"`
	Partitions      []PartitionVerify `json:"partitions"`
	Groups          []GroupVerify     `json:"groups"`
}

// OK reports whether a cutover may proceed: every partition is ok or lagging.
func (r VerifyReport) OK() bool {
	for _, p := range r.Partitions {
		if !p.Verdict.Passes() {
			return false
		}
	}
	return true
}

// Problems lists the partitions that refuse a cutover, one line each.
func (r VerifyReport) Problems() []string {
	var out []string
	for _, p := range r.Partitions {
		if !p.Verdict.Passes() {
			out = append(out, fmt.Sprintf("%s/%d: %s: %s", p.Topic, p.Partition, p.Verdict, p.Reason))
		}
	}
	return out
}

// PartitionVerify is what Verify found for one partition.
type PartitionVerify struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Verdict   Verdict `json:"verdict"`
	// Reason is one line for any verdict but ok.
	Reason string     `json:"reason,omitempty"`
	Source VerifySide `json:"source"`
	Target VerifySide `json:"target"`
	// VirtualEnd is the map's end: the first virtual offset not mapped.
	VirtualEnd int64 `json:"virtual_end"`
	Segments   int   `json:"segments"`
	// Lag is the number of source offsets past the map's source end.
	// Transaction markers and aborted records count, so a caught-up mirror
	// may show a small lag until the next record arrives.
	Lag int64 `json:"lag"`
	// TargetUnmapped counts target offsets the map does not name: past its
	// target end (not settled within VerifyConfig.Settle) or between
	// mirrored segments. Anything but 0 is a mismatch.
	TargetUnmapped int64 `json:"target_unmapped"`
	// Checked is the number of virtual offsets compared record by record.
	Checked int `json:"checked"`
	// Note says something worth knowing that is not a mismatch.
	Note string `json:"note,omitempty"`
}

// VerifySide is one cluster's view of a partition.
type VerifySide struct {
	LogStart int64 `json:"log_start"`
	// End is the high watermark; -1 when the partition does not exist there.
	End int64 `json:"end"`
	// MappedFrom and MappedEnd bound the offsets the map names on this side
	// (-1 when none), MappedRecords counts them: on the source, the
	// difference is compaction gaps, markers and aborted records.
	MappedFrom    int64 `json:"mapped_from"`
	MappedEnd     int64 `json:"mapped_end"`
	MappedRecords int64 `json:"mapped_records"`
	// Read is the number of records read in the checksum window and
	// Checksum their FNV-64a (virtual offset, key, value, headers, timestamp
	// in virtual order): equal checksums mean equal windows.
	Read     int    `json:"read"`
	Checksum string `json:"checksum,omitempty"`
}

// GroupVerify is where a group has committed on each side.
type GroupVerify struct {
	Group      string           `json:"group"`
	Error      string           `json:"error,omitempty"`
	Partitions []GroupPartition `json:"partitions"`
}

// GroupPartition is one partition's committed positions. -1: no commit.
type GroupPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Source    int64  `json:"source"`
	Target    int64  `json:"target"`
	// SourceOnTarget is the source commit translated to a target position
	// (PositionToTarget), -1 when it cannot be; InSync says the target's
	// commit equals it.
	SourceOnTarget int64  `json:"source_on_target"`
	InSync         bool   `json:"in_sync"`
	Note           string `json:"note,omitempty"`
}

// Verify compares the source and target clusters through the offset map, per
// partition of cfg.Topics: ends, what the map names on each side, and the
// records themselves over the last mapped ones (see Verdict). It also lists
// where each group has committed on each side; groups never fail the
// report, since a group on the target has committed there since its cutover
// and its source commit is stale by design. A cutover runs it first and
// refuses unless the report is OK.
//
// It returns an error for a request it cannot serve (no topics, a topic the
// source does not have, ErrUnknownTopic; a cluster that does not answer);
// partitions that cannot be checked get the error verdict instead.
func Verify(ctx context.Context, cfg VerifyConfig) (VerifyReport, error) {
	cfg = cfg.withDefaults()
	rep := VerifyReport{Time: time.Now().UTC(), Partitions: []PartitionVerify{}, Groups: []GroupVerify{}}
	if cfg.ChecksumRecords > 0 {
		rep.ChecksumRecords = cfg.ChecksumRecords
	}
	if len(cfg.Topics) == 0 {
		return rep, errors.New("verify: no topics given")
	}
	if cfg.Source == nil || cfg.Target == nil || cfg.Maps == nil {
		return rep, errors.New("verify: Source, Target and Maps are required")
	}
	topics := slices.Compact(slices.Sorted(slices.Values(cfg.Topics)))
	srcAdm, dstAdm := kadm.NewClient(cfg.Source), kadm.NewClient(cfg.Target)

	// Order matters. The source's partitions first; then the target's ends;
	// then the map, once it names what the target held (settle); then
	// every start and end again. Ends only grow, so an end read after the
	// map below the map's end is a truncation, and a target record that
	// existed before the map was read and is still not in it was not an
	// in-flight write of the mirror.
	parts, err := listOffsets(ctx, cfg, srcAdm, "source", false, topics)
	if err != nil {
		return rep, err
	}
	for _, topic := range topics {
		if _, ok := parts[topic]; !ok {
			return rep, fmt.Errorf("verify %s: %w", topic, ErrUnknownTopic)
		}
	}
	tgtBefore, err := listOffsets(ctx, cfg, dstAdm, "target", false, topics)
	if err != nil {
		return rep, err
	}
	cfg.settle(ctx, tgtBefore)
	obs := map[tpKey]*partitionObs{}
	parts.Each(func(o kadm.ListedOffset) {
		p := &partitionObs{tp: tpKey{o.Topic, o.Partition}, m: cfg.Maps(o.Topic, o.Partition), tgtEndBefore: -1}
		if t1, ok := tgtBefore.Lookup(o.Topic, o.Partition); ok && t1.Err == nil {
			p.tgtEndBefore = t1.Offset
		}
		obs[p.tp] = p
	})
	var listed [4]kadm.ListedOffsets // source start, end; target start, end
	for i, l := range []struct {
		adm   *kadm.Client
		side  string
		start bool
	}{{srcAdm, "source", true}, {srcAdm, "source", false}, {dstAdm, "target", true}, {dstAdm, "target", false}} {
		if listed[i], err = listOffsets(ctx, cfg, l.adm, l.side, l.start, topics); err != nil {
			return rep, err
		}
	}
	compacted := compactedTopics(ctx, cfg, topics, srcAdm, dstAdm)
	for k, p := range obs {
		p.compacted = compacted[k.topic]
		p.src = sideOf(listed[0], listed[1], k)
		p.tgt = sideOf(listed[2], listed[3], k)
	}

	// Read the checksum windows of every partition, both clusters at once.
	if cfg.ChecksumRecords > 0 {
		srcRanges, dstRanges := map[tpKey]readRange{}, map[tpKey]readRange{}
		for k, p := range obs {
			if p.src.err != nil || p.tgt.err != nil {
				continue
			}
			p.window = checksumWindow(p.m, p.src.start, p.tgt.start, cfg.ChecksumRecords)
			if len(p.window) == 0 {
				continue
			}
			first, last := p.window[0], p.window[len(p.window)-1]
			srcRanges[k] = readRange{first.Source, last.SourceEnd()}
			dstRanges[k] = readRange{first.Target, last.TargetEnd()}
		}
		readCtx, cancel := context.WithTimeout(ctx, cfg.ReadTimeout)
		var wg sync.WaitGroup
		var srcRead, dstRead map[tpKey]readResult
		var srcErr, dstErr error
		wg.Go(func() { srcRead, srcErr = readRanges(readCtx, cfg.Source, srcRanges) })
		wg.Go(func() { dstRead, dstErr = readRanges(readCtx, cfg.Target, dstRanges) })
		wg.Wait()
		cancel()
		if err := errors.Join(srcErr, dstErr); err != nil {
			return rep, fmt.Errorf("verify: read records: %w", err)
		}
		for k, p := range obs {
			p.srcRecs, p.tgtRecs = srcRead[k], dstRead[k]
		}
	}

	for _, p := range obs {
		rep.Partitions = append(rep.Partitions, judge(p))
	}
	slices.SortFunc(rep.Partitions, func(a, b PartitionVerify) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition) - int(b.Partition)
	})
	for _, p := range rep.Partitions {
		if !p.Verdict.Passes() {
			cfg.Log.Warn("verify: partition refuses cutover", "topic", p.Topic, "partition", p.Partition, "verdict", p.Verdict, "reason", p.Reason)
		}
	}

	groups, err := verifyGroups(ctx, cfg, srcAdm, dstAdm, topics)
	if err != nil {
		return rep, err
	}
	rep.Groups = groups
	return rep, nil
}

func (cfg VerifyConfig) withDefaults() VerifyConfig {
	if cfg.ChecksumRecords == 0 {
		cfg.ChecksumRecords = DefaultChecksumRecords
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 60 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return cfg
}

// settle waits (bounded by cfg.Settle) until the map names every target
// record that existed at tgt: the mirror's acknowledged but not yet
// recorded writes. What remains unnamed is judged by judge.
func (cfg VerifyConfig) settle(ctx context.Context, tgt kadm.ListedOffsets) {
	deadline := time.Now().Add(cfg.Settle)
	for {
		behind := 0
		tgt.Each(func(o kadm.ListedOffset) {
			if o.Err != nil {
				return
			}
			m := cfg.Maps(o.Topic, o.Partition)
			if end, ok := m.sideEnd(func(g Segment) int64 { return g.Target }); ok && end < o.Offset {
				behind++
			}
		})
		if behind == 0 || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

type tpKey struct {
	topic     string
	partition int32
}

// sideObs is one cluster's offsets of a partition; start and end are -1 when
// the partition does not exist there.
type sideObs struct {
	start, end int64
	err        error
}

// sideOf is one cluster's offsets of partition k: -1 when it lacks the
// partition.
func sideOf(starts, ends kadm.ListedOffsets, k tpKey) sideObs {
	s, sok := starts.Lookup(k.topic, k.partition)
	e, eok := ends.Lookup(k.topic, k.partition)
	switch {
	case !sok && !eok, errors.Is(e.Err, kerr.UnknownTopicOrPartition):
		return sideObs{start: -1, end: -1}
	case !sok || !eok:
		return sideObs{err: errors.New("no answer from the partition's leader")}
	case s.Err != nil || e.Err != nil:
		return sideObs{err: errors.Join(s.Err, e.Err)}
	}
	return sideObs{start: s.Offset, end: e.Offset}
}

// listOffsets lists log start (start) or high watermark offsets of topics.
// A topic a cluster lacks is absent from the answer.
func listOffsets(ctx context.Context, cfg VerifyConfig, adm *kadm.Client, side string, start bool, topics []string) (kadm.ListedOffsets, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	list, what := adm.ListEndOffsets, "end"
	if start {
		list, what = adm.ListStartOffsets, "start"
	}
	got, err := list(ctx, topics...)
	if err != nil {
		// kadm answers partial results with *ShardErrors: partitions on the
		// brokers that answered are usable, the others carry no entry and
		// are judged as errors below.
		var shard *kadm.ShardErrors
		if !errors.As(err, &shard) || shard.AllFailed {
			return nil, fmt.Errorf("verify: list %s offsets on the %s: %w", what, side, err)
		}
		cfg.Log.Warn("verify: some brokers did not answer", "cluster", side, "err", err)
	}
	// kadm marks a missing topic with a partition -1 entry; drop it so a
	// missing topic simply has no partitions.
	for topic, ps := range got {
		if o, ok := ps[-1]; ok && errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			delete(got, topic)
		}
	}
	return got, nil
}

// compactedTopics says which topics are compacted on either side: there a
// record present on one side only is the cleaner's doing, not a mismatch.
// Without the right to describe configs, topics count as not compacted
// (stricter).
func compactedTopics(ctx context.Context, cfg VerifyConfig, topics []string, adms ...*kadm.Client) map[string]bool {
	out := map[string]bool{}
	for _, adm := range adms {
		cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		cfgs, err := adm.DescribeTopicConfigs(cctx, topics...)
		cancel()
		if err != nil {
			cfg.Log.Warn("verify: cannot describe topic configs; treating topics as not compacted", "err", err)
			continue
		}
		for _, rc := range cfgs {
			for _, c := range rc.Configs {
				if c.Key == "cleanup.policy" && c.Value != nil && strings.Contains(*c.Value, "compact") {
					out[rc.Name] = true
				}
			}
		}
	}
	return out
}

// partitionObs is everything observed of one partition; judge turns it into
// a verdict without touching the network.
type partitionObs struct {
	tp        tpKey
	m         OffsetMap
	src, tgt  sideObs
	compacted bool
	// tgtEndBefore is the target's end read before the map (-1 unknown):
	// records below it and past the map's target end are not the mirror's
	// in-flight writes.
	tgtEndBefore int64
	// window is the part of the map whose records were read; srcRecs and
	// tgtRecs what was read of it.
	window           OffsetMap
	srcRecs, tgtRecs readResult
}

// recordSum is a record reduced to hashes of its parts, so a mismatch can
// say which part differs.
type recordSum struct {
	offset                int64
	key, value, headers   uint64
	timestamp             int64
	hasKey, hasValue, ctl bool
}

type readResult struct {
	recs []recordSum
	err  error
}

// checksumWindow is the part of m holding its last n records present in both
// clusters, starting no earlier than either side's log start. Segments on one
// side only (after a producer flip) are left out.
func checksumWindow(m OffsetMap, srcStart, tgtStart int64, n int) OffsetMap {
	var w OffsetMap
	for i := len(m) - 1; i >= 0 && n > 0; i-- {
		s := m[i]
		if s.Source == NoOffset || s.Target == NoOffset || s.Length == 0 {
			continue
		}
		if s.Length > int64(n) {
			s = s.advance(s.Length - int64(n))
		}
		if k := max(srcStart-s.Source, tgtStart-s.Target); k > 0 {
			if k >= s.Length {
				break // older segments are gone too
			}
			s = s.advance(k)
			n = 0 // nothing older is left on one side
		}
		w = append(w, s)
		n -= int(s.Length)
	}
	slices.Reverse(w)
	return w
}

// judge decides one partition's verdict from what was observed.
func judge(p *partitionObs) PartitionVerify {
	m := p.m
	out := PartitionVerify{
		Topic: p.tp.topic, Partition: p.tp.partition, VirtualEnd: m.End(), Segments: len(m),
		Source: side(m, p.src, func(g Segment) int64 { return g.Source }),
		Target: side(m, p.tgt, func(g Segment) int64 { return g.Target }),
	}
	var problems []string
	mismatch := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	switch {
	case p.src.err != nil:
		return verdict(out, VerifyError, "source offsets: "+p.src.err.Error())
	case p.tgt.err != nil:
		return verdict(out, VerifyError, "target offsets: "+p.tgt.err.Error())
	case len(m) == 0 && p.tgt.end > p.tgt.start:
		return verdict(out, VerifyMismatch, fmt.Sprintf("the target holds offsets %d..%d but the map names none: not written by the mirror", p.tgt.start, p.tgt.end-1))
	case len(m) == 0 && p.src.end > p.src.start:
		return verdict(out, VerifyUnmapped, fmt.Sprintf("no offset map: the mirror has not copied this partition (the source holds %d..%d; is the topic in the mirror's --topics?)", p.src.start, p.src.end-1))
	case len(m) == 0:
		return verdict(out, VerifyOK, "") // empty on both sides
	}
	srcEnd, srcOK := m.sideEnd(func(g Segment) int64 { return g.Source })
	tgtEnd, tgtOK := m.sideEnd(func(g Segment) int64 { return g.Target })
	if !tgtOK {
		return verdict(out, VerifyError, "the map names no target records: nothing to compare")
	}
	if p.tgt.end < 0 {
		return verdict(out, VerifyMismatch, "the partition does not exist on the target, but the map names target records")
	}
	if p.tgt.end < tgtEnd {
		mismatch("the target ends at %d, before the map's target end %d: mapped records are gone (topic recreated or truncated?)", p.tgt.end, tgtEnd)
	}
	if p.tgtEndBefore > tgtEnd {
		out.TargetUnmapped += p.tgtEndBefore - tgtEnd
		mismatch("the target holds %d records past the mapped end (offsets %d..%d) that the map does not name: written by something other than the mirror, or by a mirror that stopped before recording them", p.tgtEndBefore-tgtEnd, tgtEnd, p.tgtEndBefore-1)
	}
	if holes, at := targetHoles(m); holes > 0 {
		out.TargetUnmapped += holes
		mismatch("%d target offsets inside the mirrored range are not in the map (first at %d): another writer wrote between the mirror's records", holes, at)
	}
	if srcOK && p.src.end < srcEnd {
		mismatch("the source ends at %d, before the map's source end %d (source truncated or recreated?)", p.src.end, srcEnd)
	}
	if srcOK {
		out.Lag = max(0, p.src.end-srcEnd)
	}
	if first := firstTargetOffset(m); first >= 0 && p.tgt.start > first {
		// Retention on the target ran ahead of the source's: a group
		// positioned before v would be reset after its cutover.
		if v, err := m.PositionToVirtual(p.tgt.start); err == nil {
			if s, ok := m.VirtualToSource(v); ok && p.src.start < s {
				out.Note = fmt.Sprintf("the target's log starts at %d: records before virtual offset %d are gone from the target but still on the source", p.tgt.start, v)
			}
		}
	}
	out.Checked = compareWindow(p, &out, mismatch)
	if err := errors.Join(p.srcRecs.err, p.tgtRecs.err); err != nil && len(problems) == 0 {
		return verdict(out, VerifyError, "read records: "+err.Error())
	}
	if len(problems) > 0 {
		reason := problems[0]
		if len(problems) > 1 {
			reason += fmt.Sprintf(" (and %d more problems)", len(problems)-1)
		}
		return verdict(out, VerifyMismatch, reason)
	}
	if out.Lag > 0 {
		return verdict(out, VerifyLag, fmt.Sprintf("the mirror is %d offsets behind the source (source end %d, mapped up to %d)", out.Lag, p.src.end, srcEnd))
	}
	return verdict(out, VerifyOK, "")
}

func verdict(p PartitionVerify, v Verdict, reason string) PartitionVerify {
	p.Verdict, p.Reason = v, reason
	return p
}

// side fills one cluster's view from its offsets and the map.
func side(m OffsetMap, o sideObs, off func(Segment) int64) VerifySide {
	s := VerifySide{LogStart: o.start, End: o.end, MappedFrom: -1, MappedEnd: -1}
	for _, g := range m {
		if off(g) == NoOffset {
			continue
		}
		if s.MappedFrom < 0 {
			s.MappedFrom = off(g)
		}
		s.MappedEnd = off(g) + g.Length
		s.MappedRecords += g.Length
	}
	return s
}

func firstTargetOffset(m OffsetMap) int64 {
	for _, g := range m {
		if g.Target != NoOffset {
			return g.Target
		}
	}
	return -1
}

// targetHoles counts target offsets between consecutive mirrored segments
// (both sides present) that no segment names. The mirror writes the target
// with one idempotent producer and no transactions, so its records are
// contiguous there: a hole is another writer's record. Holes next to a
// target-only segment (produced after a producer flip, where transaction
// markers take offsets) are not counted.
func targetHoles(m OffsetMap) (holes, first int64) {
	first = -1
	prev := -1
	for i, g := range m {
		if g.Target == NoOffset {
			prev = -1
			continue
		}
		if prev >= 0 && m[prev].Source != NoOffset && g.Source != NoOffset {
			if gap := g.Target - m[prev].TargetEnd(); gap > 0 {
				if first < 0 {
					first = m[prev].TargetEnd()
				}
				holes += gap
			}
		}
		prev = i
	}
	return holes, first
}

// compareWindow compares the records read from both clusters over the
// window, by virtual offset, and fills the checksums. It returns the number
// of virtual offsets compared.
func compareWindow(p *partitionObs, out *PartitionVerify, mismatch func(string, ...any)) int {
	if len(p.window) == 0 || p.srcRecs.err != nil || p.tgtRecs.err != nil {
		return 0
	}
	w, m := p.window, p.m
	// Every record read must be one the map names: a source record it does
	// not name was skipped by the mirror, a target record it does not name
	// was written by someone else.
	bySide := func(recs []recordSum, what string, toVirtual func(int64) (int64, bool)) map[int64]recordSum {
		got := make(map[int64]recordSum, len(recs))
		unnamed, firstUnnamed := 0, int64(-1)
		for _, r := range recs {
			v, ok := toVirtual(r.offset)
			if !ok {
				if unnamed == 0 {
					firstUnnamed = r.offset
				}
				unnamed++
				continue
			}
			if _, in := w.find(v); in {
				got[v] = r
			}
		}
		if unnamed > 0 {
			mismatch("%d %s records inside the checked range are not in the map (first at offset %d)", unnamed, what, firstUnnamed)
		}
		return got
	}
	src := bySide(p.srcRecs.recs, "source", m.SourceToVirtual)
	tgt := bySide(p.tgtRecs.recs, "target", m.TargetToVirtual)
	out.Source.Read, out.Target.Read = len(p.srcRecs.recs), len(p.tgtRecs.recs)

	srcSum, tgtSum := fnv.New64a(), fnv.New64a()
	checked, differ, oneSided := 0, 0, 0
	for _, g := range w {
		for v := g.Virtual; v < g.End(); v++ {
			s, sok := src[v]
			t, tok := tgt[v]
			if sok {
				s.sumInto(srcSum, v)
			}
			if tok {
				t.sumInto(tgtSum, v)
			}
			switch {
			case sok && tok:
				checked++
				if d := s.differs(t); d != "" {
					if differ == 0 {
						mismatch("record at virtual offset %d (source %d, target %d): %s differs", v, s.offset, t.offset, d)
					}
					differ++
				}
			case sok != tok && p.compacted:
				// The cleaners of the two clusters run at different times.
				oneSided++
			case sok:
				mismatch("record at virtual offset %d (source %d) is missing from the target at offset %d", v, s.offset, g.Target+(v-g.Virtual))
			case tok:
				mismatch("record at virtual offset %d (target %d) is missing from the source at offset %d", v, t.offset, g.Source+(v-g.Virtual))
			}
		}
	}
	if differ > 1 {
		mismatch("%d records differ in all", differ)
	}
	if oneSided > 0 && out.Note == "" {
		out.Note = fmt.Sprintf("%d records of the checked range are on one side only (compacted topic: the cleaners run at different times)", oneSided)
	}
	out.Source.Checksum = fmt.Sprintf("%016x", srcSum.Sum64())
	out.Target.Checksum = fmt.Sprintf("%016x", tgtSum.Sum64())
	return checked
}

func (r recordSum) sumInto(h hash.Hash64, v int64) {
	var b [8 * 5]byte
	binary.BigEndian.PutUint64(b[0:], uint64(v))
	binary.BigEndian.PutUint64(b[8:], r.key)
	binary.BigEndian.PutUint64(b[16:], r.value)
	binary.BigEndian.PutUint64(b[24:], r.headers)
	binary.BigEndian.PutUint64(b[32:], uint64(r.timestamp))
	h.Write(b[:])
}

// differs names the parts that differ, "" when none does.
func (r recordSum) differs(o recordSum) string {
	var parts []string
	if r.key != o.key || r.hasKey != o.hasKey {
		parts = append(parts, "key")
	}
	if r.value != o.value || r.hasValue != o.hasValue {
		parts = append(parts, "value")
	}
	if r.headers != o.headers {
		parts = append(parts, "headers")
	}
	if r.timestamp != o.timestamp {
		parts = append(parts, "timestamp")
	}
	return strings.Join(parts, ", ")
}

// sumRecord hashes a record's parts. Lengths are written before bytes and a
// null is distinct from an empty value, so different records cannot collide
// by shifting bytes between parts.
func sumRecord(r *kgo.Record) recordSum {
	bytesHash := func(parts ...[]byte) uint64 {
		h := fnv.New64a()
		var n [9]byte
		for _, b := range parts {
			if b == nil {
				h.Write([]byte{0})
				continue
			}
			n[0] = 1
			binary.BigEndian.PutUint64(n[1:], uint64(len(b)))
			h.Write(n[:])
			h.Write(b)
		}
		return h.Sum64()
	}
	hdrs := make([][]byte, 0, 2*len(r.Headers))
	for _, hd := range r.Headers {
		hdrs = append(hdrs, []byte(hd.Key), hd.Value)
	}
	return recordSum{
		offset: r.Offset, key: bytesHash(r.Key), value: bytesHash(r.Value), headers: bytesHash(hdrs...),
		timestamp: r.Timestamp.UnixMilli(), hasKey: r.Key != nil, hasValue: r.Value != nil,
	}
}

type readRange struct{ from, to int64 }

// readRanges reads [from, to) of each partition, committed data records
// only (what the mirror copies), with a consumer derived from cl's options.
func readRanges(ctx context.Context, cl *kgo.Client, ranges map[tpKey]readRange) (map[tpKey]readResult, error) {
	out := make(map[tpKey]readResult, len(ranges))
	offsets := map[string]map[int32]kgo.Offset{}
	for k, r := range ranges {
		if r.from >= r.to {
			continue
		}
		if offsets[k.topic] == nil {
			offsets[k.topic] = map[int32]kgo.Offset{}
		}
		offsets[k.topic][k.partition] = kgo.NewOffset().At(r.from)
	}
	if len(offsets) == 0 {
		return out, nil
	}
	opts := append(slices.Clone(cl.Opts()),
		kgo.ConsumePartitions(offsets),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		// Markers are kept so that a range ending in one is seen to end.
		kgo.KeepControlRecords(),
	)
	rd, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	defer rd.Close()

	done := map[tpKey]bool{}
	pending := 0
	for _, ps := range offsets {
		pending += len(ps)
	}
	finish := func(k tpKey, err error) {
		if done[k] {
			return
		}
		done[k] = true
		pending--
		if err != nil {
			r := out[k]
			r.err = err
			out[k] = r
		}
		rd.PauseFetchPartitions(map[string][]int32{k.topic: {k.partition}})
	}
	last := map[tpKey]int64{}
	for pending > 0 {
		fetches := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			k := tpKey{topic, partition}
			if _, ok := ranges[k]; ok {
				finish(k, err)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) {
			k := tpKey{r.Topic, r.Partition}
			rr, ok := ranges[k]
			if !ok || done[k] {
				return
			}
			last[k] = r.Offset
			if r.Offset >= rr.to {
				finish(k, nil)
				return
			}
			if r.Offset >= rr.from && !r.Attrs.IsControl() {
				res := out[k]
				res.recs = append(res.recs, sumRecord(r))
				out[k] = res
			}
			if r.Offset >= rr.to-1 {
				finish(k, nil)
			}
		})
	}
	for k, r := range ranges {
		if r.from < r.to && !done[k] {
			at := r.from
			if o, ok := last[k]; ok {
				at = o + 1
			}
			res := out[k]
			res.err = fmt.Errorf("read %s/%d stopped at offset %d of %d..%d: %w", k.topic, k.partition, at, r.from, r.to-1, context.Cause(ctx))
			out[k] = res
		}
	}
	return out, nil
}

// verifyGroups lists the committed positions of groups on the topics, on
// both sides, with the source's translated through the map.
func verifyGroups(ctx context.Context, cfg VerifyConfig, srcAdm, dstAdm *kadm.Client, topics []string) ([]GroupVerify, error) {
	groups := slices.Clone(cfg.Groups)
	if len(groups) == 0 {
		for _, a := range []struct {
			adm  *kadm.Client
			side string
		}{{srcAdm, "source"}, {dstAdm, "target"}} {
			lctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
			listed, err := a.adm.ListGroups(lctx)
			cancel()
			if err != nil {
				return nil, fmt.Errorf("verify: list groups on the %s: %w", a.side, err)
			}
			groups = append(groups, listed.Groups()...)
		}
	}
	slices.Sort(groups)
	groups = slices.Compact(groups)
	if len(groups) == 0 {
		return []GroupVerify{}, nil
	}
	fetch := func(adm *kadm.Client) kadm.FetchOffsetsResponses {
		fctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		return adm.FetchManyOffsets(fctx, groups...)
	}
	srcCommits, dstCommits := fetch(srcAdm), fetch(dstAdm)
	wanted := map[string]bool{}
	for _, t := range topics {
		wanted[t] = true
	}
	explicit := len(cfg.Groups) > 0
	out := []GroupVerify{}
	for _, g := range groups {
		gv := GroupVerify{Group: g, Partitions: []GroupPartition{}}
		s, d := srcCommits[g], dstCommits[g]
		// A cluster that never saw the group has no commits for it; some
		// brokers say so with GROUP_ID_NOT_FOUND.
		known := func(err error) error {
			if errors.Is(err, kerr.GroupIDNotFound) {
				return nil
			}
			return err
		}
		if err := errors.Join(known(s.Err), known(d.Err)); err != nil {
			gv.Error = err.Error()
		}
		at := map[tpKey]*GroupPartition{}
		add := func(fetched kadm.OffsetResponses, onSource bool) {
			for topic, ps := range fetched {
				if !wanted[topic] {
					continue
				}
				for partition, o := range ps {
					if o.Err != nil || o.At < 0 {
						continue
					}
					k := tpKey{topic, partition}
					gp := at[k]
					if gp == nil {
						gp = &GroupPartition{Topic: topic, Partition: partition, Source: -1, Target: -1, SourceOnTarget: -1}
						at[k] = gp
					}
					if onSource {
						gp.Source = o.At
					} else {
						gp.Target = o.At
					}
				}
			}
		}
		add(s.Fetched, true)
		add(d.Fetched, false)
		if len(at) == 0 && !explicit && gv.Error == "" {
			continue // commits to other topics only
		}
		for k, gp := range at {
			if gp.Source >= 0 {
				// Virtual offsets are source offsets while producers write
				// the source, so the source commit is a virtual position.
				t, err := cfg.Maps(k.topic, k.partition).PositionToTarget(gp.Source, false)
				switch {
				case err == nil:
					gp.SourceOnTarget = t
					gp.InSync = gp.Target == t
				case errors.Is(err, ErrNotCovered):
					gp.Note = "the source commit is past what the mirror has copied"
				default:
					gp.Note = err.Error()
				}
			}
			gv.Partitions = append(gv.Partitions, *gp)
		}
		sort.Slice(gv.Partitions, func(i, j int) bool {
			a, b := gv.Partitions[i], gv.Partitions[j]
			return a.Topic < b.Topic || a.Topic == b.Topic && a.Partition < b.Partition
		})
		out = append(out, gv)
	}
	return out, nil
}
