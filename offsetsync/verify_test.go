package offsetsync

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// rec is record number i of a test partition, at offset off in one cluster:
// the same i gives the same content whatever the offset.
func rec(i int, off int64) recordSum {
	return sumRecord(&kgo.Record{
		Offset: off, Key: []byte(fmt.Sprintf("k%d", i)), Value: []byte(fmt.Sprintf("v%d", i)),
		Headers:   []kgo.RecordHeader{{Key: "seq", Value: []byte(fmt.Sprint(i))}},
		Timestamp: time.UnixMilli(1_700_000_000_000 + int64(i)),
	})
}

// recordsOf lays the map's records out on one side: record number v (its
// virtual offset) at its offset in that cluster. Offsets the map skips
// (markers, compaction gaps) hold nothing, as a read_committed consumer
// sees them.
func recordsOf(m OffsetMap, toSide func(int64) (int64, bool)) []recordSum {
	var out []recordSum
	for _, g := range m {
		for v := g.Virtual; v < g.End(); v++ {
			if o, ok := toSide(v); ok {
				out = append(out, rec(int(v), o))
			}
		}
	}
	return out
}

// gapMap is a source with a transaction marker at 10 and a compaction gap
// at 13..14: virtual offsets follow the source's, the target is contiguous.
var gapMap = OffsetMap{
	{Virtual: 0, Source: 0, Target: 0, Length: 10},
	{Virtual: 11, Source: 11, Target: 10, Length: 2},
	{Virtual: 15, Source: 15, Target: 12, Length: 5},
}

// obsOf is a consistent, caught-up partition for m, read in full.
func obsOf(m OffsetMap) *partitionObs {
	srcEnd, _ := m.sideEnd(func(g Segment) int64 { return g.Source })
	tgtEnd, _ := m.sideEnd(func(g Segment) int64 { return g.Target })
	p := &partitionObs{
		tp: tpKey{"t", 0}, m: m,
		src: sideObs{start: 0, end: srcEnd}, tgt: sideObs{start: 0, end: tgtEnd}, tgtEndBefore: tgtEnd,
	}
	p.window = checksumWindow(m, 0, 0, DefaultChecksumRecords)
	p.srcRecs.recs = recordsOf(m, m.VirtualToSource)
	p.tgtRecs.recs = recordsOf(m, m.VirtualToTarget)
	return p
}

func TestVerifyJudge(t *testing.T) {
	tests := []struct {
		name    string
		obs     func() *partitionObs
		verdict Verdict
		reason  string // substring of the reason
		check   func(t *testing.T, p PartitionVerify)
	}{
		{
			name: "contiguous, identical", verdict: VerifyOK,
			obs: func() *partitionObs { return obsOf(OffsetMap{{Virtual: 0, Source: 0, Target: 0, Length: 50}}) },
			check: func(t *testing.T, p PartitionVerify) {
				if p.Checked != 50 || p.Source.Read != 50 || p.Target.Read != 50 || p.Source.Checksum != p.Target.Checksum {
					t.Errorf("checked %d, read %d/%d, checksums %s %s", p.Checked, p.Source.Read, p.Target.Read, p.Source.Checksum, p.Target.Checksum)
				}
			},
		},
		{
			name: "marker and compaction gap in the source: offsets differ, records match", verdict: VerifyOK,
			obs: func() *partitionObs { return obsOf(gapMap) },
			check: func(t *testing.T, p PartitionVerify) {
				// 17 records: source offsets 0..19 minus 10, 13, 14; target 0..16.
				if p.Checked != 17 || p.Source.MappedRecords != 17 || p.Target.MappedRecords != 17 ||
					p.Source.MappedEnd != 20 || p.Target.MappedEnd != 17 || p.VirtualEnd != 20 || p.TargetUnmapped != 0 {
					t.Errorf("%+v", p)
				}
				if p.Source.Checksum != p.Target.Checksum {
					t.Errorf("checksums differ for the same records: %s %s", p.Source.Checksum, p.Target.Checksum)
				}
			},
		},
		{
			name: "trailing marker only: a lag of one offset, not a mismatch", verdict: VerifyLag, reason: "1 offsets behind",
			obs: func() *partitionObs { p := obsOf(gapMap); p.src.end = 21; return p },
		},
		{
			name: "source ahead of the map", verdict: VerifyLag, reason: "30 offsets behind",
			obs: func() *partitionObs { p := obsOf(gapMap); p.src.end = 50; return p },
			check: func(t *testing.T, p PartitionVerify) {
				if p.Lag != 30 || !p.Verdict.Passes() {
					t.Errorf("lag %d, passes %v", p.Lag, p.Verdict.Passes())
				}
			},
		},
		{
			name: "stray record past the mapped end of the target", verdict: VerifyMismatch, reason: "1 records past the mapped end (offsets 17..17)",
			obs: func() *partitionObs {
				p := obsOf(gapMap)
				p.tgtEndBefore, p.tgt.end = 18, 18
				return p
			},
			check: func(t *testing.T, p PartitionVerify) {
				if p.TargetUnmapped != 1 || p.Verdict.Passes() {
					t.Errorf("target unmapped %d", p.TargetUnmapped)
				}
			},
		},
		{
			name: "mirror wrote past the map after it was read: not a mismatch", verdict: VerifyOK,
			obs: func() *partitionObs { p := obsOf(gapMap); p.tgt.end = 25; return p },
		},
		{
			name: "stray record between the mirror's records", verdict: VerifyMismatch, reason: "1 target offsets inside the mirrored range are not in the map (first at 10)",
			obs: func() *partitionObs {
				m := OffsetMap{{Virtual: 0, Source: 0, Target: 0, Length: 10}, {Virtual: 10, Source: 10, Target: 11, Length: 5}}
				p := obsOf(m)
				p.tgtRecs.recs = append(p.tgtRecs.recs, rec(999, 10))
				slices.SortFunc(p.tgtRecs.recs, func(a, b recordSum) int { return int(a.offset - b.offset) })
				return p
			},
			check: func(t *testing.T, p PartitionVerify) {
				if !strings.Contains(p.Reason, "and 1 more problems") {
					t.Errorf("the unnamed record read should be the second problem: %s", p.Reason)
				}
			},
		},
		{
			name: "a value differs", verdict: VerifyMismatch, reason: "record at virtual offset 16 (source 16, target 13): value differs",
			obs: func() *partitionObs {
				p := obsOf(gapMap)
				i := slices.IndexFunc(p.tgtRecs.recs, func(r recordSum) bool { return r.offset == 13 })
				p.tgtRecs.recs[i].value++
				return p
			},
			check: func(t *testing.T, p PartitionVerify) {
				if p.Source.Checksum == p.Target.Checksum {
					t.Error("checksums equal for different records")
				}
			},
		},
		{
			name: "timestamp and headers differ", verdict: VerifyMismatch, reason: "headers, timestamp differs",
			obs: func() *partitionObs {
				p := obsOf(gapMap)
				p.tgtRecs.recs[0].timestamp++
				p.tgtRecs.recs[0].headers++
				return p
			},
		},
		{
			name: "records shifted by one in the target", verdict: VerifyMismatch, reason: "key, value, headers, timestamp differs (and 1 more problems)",
			obs: func() *partitionObs {
				m := OffsetMap{{Virtual: 0, Source: 0, Target: 0, Length: 20}}
				p := obsOf(m)
				for i := range p.tgtRecs.recs {
					p.tgtRecs.recs[i] = rec(i+1, int64(i))
				}
				return p
			},
		},
		{
			name: "a record missing from the target", verdict: VerifyMismatch, reason: "record at virtual offset 12 (source 12) is missing from the target at offset 11",
			obs: func() *partitionObs {
				p := obsOf(gapMap)
				p.tgtRecs.recs = slices.DeleteFunc(p.tgtRecs.recs, func(r recordSum) bool { return r.offset == 11 })
				return p
			},
		},
		{
			name: "a record missing on one side of a compacted topic", verdict: VerifyOK,
			obs: func() *partitionObs {
				p := obsOf(gapMap)
				p.compacted = true
				p.tgtRecs.recs = slices.DeleteFunc(p.tgtRecs.recs, func(r recordSum) bool { return r.offset == 11 })
				return p
			},
			check: func(t *testing.T, p PartitionVerify) {
				if p.Checked != 16 || !strings.Contains(p.Note, "1 records of the checked range are on one side only") {
					t.Errorf("checked %d note %q", p.Checked, p.Note)
				}
			},
		},
		{
			name: "a source record the map skipped", verdict: VerifyMismatch, reason: "1 source records inside the checked range are not in the map (first at offset 13)",
			obs: func() *partitionObs {
				p := obsOf(gapMap)
				p.srcRecs.recs = append(p.srcRecs.recs, rec(13, 13))
				return p
			},
		},
		{
			name: "target truncated below the map", verdict: VerifyMismatch, reason: "the target ends at 12, before the map's target end 17",
			obs: func() *partitionObs { p := obsOf(gapMap); p.tgt.end = 12; return p },
		},
		{
			name: "partition missing on the target", verdict: VerifyMismatch, reason: "does not exist on the target",
			obs: func() *partitionObs { p := obsOf(gapMap); p.tgt = sideObs{start: -1, end: -1}; return p },
		},
		{
			name: "no map, source has records", verdict: VerifyUnmapped, reason: "no offset map",
			obs: func() *partitionObs { return &partitionObs{src: sideObs{0, 5, nil}, tgt: sideObs{0, 0, nil}} },
		},
		{
			name: "no map, target has records", verdict: VerifyMismatch, reason: "the map names none",
			obs: func() *partitionObs { return &partitionObs{src: sideObs{0, 5, nil}, tgt: sideObs{0, 3, nil}} },
		},
		{
			name: "no map, both empty", verdict: VerifyOK,
			obs: func() *partitionObs { return &partitionObs{src: sideObs{7, 7, nil}, tgt: sideObs{0, 0, nil}} },
		},
		{
			name: "anchor only: the mirror is about to copy", verdict: VerifyLag, reason: "3 offsets behind",
			obs: func() *partitionObs {
				return &partitionObs{m: OffsetMap{{Virtual: 5, Source: 5, Target: 0}}, src: sideObs{5, 8, nil}, tgt: sideObs{0, 0, nil}}
			},
		},
		{
			name: "a read that timed out", verdict: VerifyError, reason: "read records: deadline",
			obs: func() *partitionObs {
				p := obsOf(gapMap)
				p.tgtRecs = readResult{err: errors.New("deadline")}
				return p
			},
		},
		{
			name: "offsets unavailable", verdict: VerifyError, reason: "source offsets: not leader",
			obs: func() *partitionObs {
				p := obsOf(gapMap)
				p.src = sideObs{err: errors.New("not leader")}
				return p
			},
		},
		{
			name: "target retention ahead of the source: a note, not a mismatch", verdict: VerifyOK,
			obs: func() *partitionObs {
				p := obsOf(gapMap)
				p.tgt.start = 5
				p.window = checksumWindow(p.m, p.src.start, p.tgt.start, 1000)
				p.tgtRecs.recs = p.tgtRecs.recs[5:]
				return p
			},
			check: func(t *testing.T, p PartitionVerify) {
				if p.Checked != 12 || !strings.Contains(p.Note, "before virtual offset 5 are gone from the target") {
					t.Errorf("checked %d note %q", p.Checked, p.Note)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := judge(tt.obs())
			if got.Verdict != tt.verdict || !strings.Contains(got.Reason, tt.reason) {
				t.Fatalf("verdict %s (%s), want %s containing %q", got.Verdict, got.Reason, tt.verdict, tt.reason)
			}
			if (got.Verdict == VerifyOK) != (got.Reason == "") {
				t.Errorf("reason %q with verdict %s", got.Reason, got.Verdict)
			}
			if tt.check != nil {
				tt.check(t, got)
			}
		})
	}
}

func TestVerifyChecksumWindow(t *testing.T) {
	tests := []struct {
		name               string
		m                  OffsetMap
		srcStart, tgtStart int64
		n                  int
		want               OffsetMap
	}{
		{"within the last segment", gapMap, 0, 0, 3, OffsetMap{{17, 17, 14, 3}}},
		{"across the gaps", gapMap, 0, 0, 8, OffsetMap{{9, 9, 9, 1}, {11, 11, 10, 2}, {15, 15, 12, 5}}},
		{"more than the map", gapMap, 0, 0, 100, gapMap},
		{"source retention", gapMap, 12, 0, 100, OffsetMap{{12, 12, 11, 1}, {15, 15, 12, 5}}},
		{"target retention", gapMap, 0, 11, 100, OffsetMap{{12, 12, 11, 1}, {15, 15, 12, 5}}},
		{"everything gone", gapMap, 30, 30, 100, nil},
		{"one-sided segments left out", OffsetMap{{0, 0, 0, 5}, {5, NoOffset, 5, 5}}, 0, 0, 3, OffsetMap{{2, 2, 2, 3}}},
		{"anchor only", OffsetMap{{5, 5, 0, 0}}, 0, 0, 10, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := checksumWindow(tt.m, tt.srcStart, tt.tgtStart, tt.n); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestVerifyRecordSum(t *testing.T) {
	base := kgo.Record{Key: []byte("ab"), Value: []byte("c"), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("1")}}}
	variants := map[string]func(r *kgo.Record){
		"bytes moved between key and value": func(r *kgo.Record) { r.Key, r.Value = []byte("a"), []byte("bc") },
		"null key":                          func(r *kgo.Record) { r.Key = nil },
		"empty key":                         func(r *kgo.Record) { r.Key = []byte{} },
		"null value":                        func(r *kgo.Record) { r.Value = nil },
		"null header value":                 func(r *kgo.Record) { r.Headers = []kgo.RecordHeader{{Key: "h"}} },
		"header key and value swapped":      func(r *kgo.Record) { r.Headers = []kgo.RecordHeader{{Key: "1", Value: []byte("h")}} },
		"no headers":                        func(r *kgo.Record) { r.Headers = nil },
	}
	want := sumRecord(&base)
	for name, change := range variants {
		r := base
		change(&r)
		if sumRecord(&r).differs(want) == "" {
			t.Errorf("%s: same sum", name)
		}
	}
	same := base
	same.Offset = 42 // the offset is not content
	if d := sumRecord(&same).differs(want); d != "" {
		t.Errorf("offset changed the sum: %s", d)
	}
}

func TestVerifyReportOK(t *testing.T) {
	r := VerifyReport{Partitions: []PartitionVerify{{Topic: "a", Verdict: VerifyOK}, {Topic: "a", Partition: 1, Verdict: VerifyLag, Reason: "behind"}}}
	if !r.OK() || len(r.Problems()) != 0 {
		t.Fatalf("ok and lag must pass: %v", r.Problems())
	}
	for _, v := range []Verdict{VerifyMismatch, VerifyUnmapped, VerifyError} {
		r.Partitions[1].Verdict = v
		if r.OK() {
			t.Errorf("%s passes", v)
		}
		if p := r.Problems(); len(p) != 1 || p[0] != "a/1: "+string(v)+": behind" {
			t.Errorf("problems %q", p)
		}
	}
}
