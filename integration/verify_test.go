package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// recs builds n records in partition p with offsets from 0 and distinct
// values "p<p>-<i>".
func recs(topic string, p int32, n int) []Record {
	out := make([]Record, n)
	base := time.UnixMilli(1_700_000_000_000)
	for i := range out {
		out[i] = Record{
			Topic:     topic,
			Partition: p,
			Offset:    int64(i),
			Key:       []byte(fmt.Sprintf("k%d", i%3)),
			Value:     []byte(fmt.Sprintf("p%d-%d", p, i)),
			Headers:   []Header{{Key: "h", Value: []byte{byte(i)}}},
			Timestamp: base.Add(time.Duration(i) * time.Millisecond),
		}
	}
	return out
}

// interleave merges partitions round-robin, keeping each partition's order.
func interleave(parts ...[]Record) []Record {
	var out []Record
	for i := 0; ; i++ {
		added := false
		for _, p := range parts {
			if i < len(p) {
				out = append(out, p[i])
				added = true
			}
		}
		if !added {
			return out
		}
	}
}

func clone(rs []Record) []Record { return append([]Record(nil), rs...) }

type want struct{ lost, dup, reord, unexp, mism int }

func check(t *testing.T, r Report, w want) {
	t.Helper()
	got := want{r.Lost, r.Duplicated, r.Reordered, r.Unexpected, r.Mismatched}
	if got != w {
		t.Fatalf("got lost/dup/reordered/unexpected/mismatched = %+v, want %+v\n%s", got, w, r)
	}
	if r.OK() != (w == want{}) {
		t.Fatalf("OK() = %v for %+v", r.OK(), got)
	}
	if !r.OK() && len(r.Problems) == 0 {
		t.Fatalf("a failing report lists no problems:\n%s", r)
	}
}

func TestCompareIdentical(t *testing.T) {
	p0, p1 := recs("t", 0, 50), recs("t", 1, 30)
	produced := interleave(p0, p1)
	// Consumed: partitions interleave differently; that is not reordering.
	consumed := append(clone(p1), p0...)
	r := Compare(produced, consumed)
	check(t, r, want{})
	if r.Produced != 80 || r.Consumed != 80 {
		t.Fatalf("totals %d/%d", r.Produced, r.Consumed)
	}
	if got := r.Partitions[TopicPartition{"t", 1}]; got == nil || got.Produced != 30 || got.Consumed != 30 {
		t.Fatalf("partition 1 report %+v", got)
	}
	if strings.Contains(r.String(), "\n") {
		t.Fatalf("a clean report should be one line:\n%s", r)
	}
}

func TestCompareEmpty(t *testing.T) {
	check(t, Compare(nil, nil), want{})
	check(t, Compare(recs("t", 0, 3), nil), want{lost: 3})
	check(t, Compare(nil, recs("t", 0, 2)), want{unexp: 2})
}

func TestCompareLost(t *testing.T) {
	p := recs("t", 0, 10)
	consumed := append(clone(p[:3]), p[5:]...) // 3 and 4 missing
	r := Compare(p, consumed)
	check(t, r, want{lost: 2})
	if r.Partitions[TopicPartition{"t", 0}].Lost != 2 {
		t.Fatalf("lost not attributed to the partition: %s", r)
	}
	if !strings.Contains(r.String(), "lost") || !strings.Contains(r.String(), `"p0-3"`) {
		t.Fatalf("report does not name the lost record:\n%s", r)
	}
}

func TestCompareDuplicated(t *testing.T) {
	p := recs("t", 0, 10)
	// Redelivery of 4..7 after 7, as after a rebalance without a commit:
	// duplicates, and not reordering (the first deliveries are in order).
	consumed := append(clone(p[:8]), p[4:]...)
	check(t, Compare(p, consumed), want{dup: 4})
	// The same record three times counts twice.
	consumed = append(clone(p), p[0], p[0])
	check(t, Compare(p, consumed), want{dup: 2})
}

func TestCompareReordered(t *testing.T) {
	p := recs("t", 0, 10)
	swapped := clone(p)
	swapped[2], swapped[3] = swapped[3], swapped[2]
	check(t, Compare(p, swapped), want{reord: 1})

	// Without offsets on the consumer side only the order counts.
	noOff := func(rs []Record) []Record {
		rs = clone(rs)
		for i := range rs {
			rs[i].Offset = -1
		}
		return rs
	}
	swapped = noOff(swapped)
	check(t, Compare(p, swapped), want{reord: 1})
	// One record moved from the front to the back: one out of place.
	rot := noOff(append(clone(p[1:]), p[0]))
	check(t, Compare(p, rot), want{reord: 1})
	// Fully reversed: all but one.
	rev := noOff(p)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	check(t, Compare(p, rev), want{reord: 9})
}

func TestCompareReorderedPerPartition(t *testing.T) {
	p0, p1 := recs("t", 0, 5), recs("t", 1, 5)
	produced := interleave(p0, p1)
	consumed := interleave(p0, p1)
	// Reorder only inside partition 1 (offsets unknown to the consumer).
	for i := range consumed {
		consumed[i].Offset = -1
	}
	var idx []int
	for i, c := range consumed {
		if c.Partition == 1 {
			idx = append(idx, i)
		}
	}
	consumed[idx[0]], consumed[idx[4]] = consumed[idx[4]], consumed[idx[0]]
	r := Compare(produced, consumed)
	check(t, r, want{reord: 2})
	if r.Partitions[TopicPartition{"t", 0}].Reordered != 0 || r.Partitions[TopicPartition{"t", 1}].Reordered != 2 {
		t.Fatalf("reordering not attributed to partition 1:\n%s", r)
	}
}

func TestCompareCorrupted(t *testing.T) {
	p := recs("t", 0, 5)
	for name, mutate := range map[string]func(*Record){
		"value byte":        func(r *Record) { r.Value = append([]byte{}, r.Value...); r.Value[0] ^= 1 },
		"key":               func(r *Record) { r.Key = []byte("other") },
		"null key":          func(r *Record) { r.Key = nil },
		"header value":      func(r *Record) { r.Headers = []Header{{Key: "h", Value: []byte("x")}} },
		"header dropped":    func(r *Record) { r.Headers = nil },
		"header null value": func(r *Record) { r.Headers = []Header{{Key: "h", Value: nil}} },
		"header added": func(r *Record) {
			r.Headers = append(append([]Header{}, r.Headers...), Header{Key: "extra", Value: []byte{}})
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := clone(p)
			mutate(&c[2])
			check(t, Compare(p, c), want{lost: 1, unexp: 1})
		})
	}
}

func TestCompareNullVersusEmpty(t *testing.T) {
	mk := func(k, v, hv []byte) []Record {
		return []Record{{Partition: 0, Offset: -1, Key: k, Value: v, Headers: []Header{{Key: "h", Value: hv}}}}
	}
	e := []byte{}
	check(t, Compare(mk(nil, nil, nil), mk(nil, nil, nil)), want{})
	check(t, Compare(mk(e, e, e), mk(e, e, e)), want{})
	check(t, Compare(mk(nil, e, e), mk(e, e, e)), want{lost: 1, unexp: 1})
	check(t, Compare(mk(e, nil, e), mk(e, e, e)), want{lost: 1, unexp: 1})
	check(t, Compare(mk(e, e, nil), mk(e, e, e)), want{lost: 1, unexp: 1})
	// Header order is part of the record.
	a := []Record{{Partition: -1, Offset: -1, Headers: []Header{{"a", e}, {"b", e}}}}
	b := []Record{{Partition: -1, Offset: -1, Headers: []Header{{"b", e}, {"a", e}}}}
	check(t, Compare(a, b), want{lost: 1, unexp: 1})
	// Key and value boundaries cannot alias.
	x := []Record{{Partition: -1, Offset: -1, Key: []byte("ab"), Value: []byte("c")}}
	y := []Record{{Partition: -1, Offset: -1, Key: []byte("a"), Value: []byte("bc")}}
	check(t, Compare(x, y), want{lost: 1, unexp: 1})
}

func TestCompareMismatched(t *testing.T) {
	p := recs("t", 0, 4)
	c := clone(p)
	c[0].Offset = 99
	c[1].Timestamp = c[1].Timestamp.Add(time.Millisecond)
	c[2].Partition = 3
	c[3].Topic = "other"
	r := Compare(p, c)
	check(t, r, want{mism: 4})
	// Unknown fields on either side are not compared.
	c = clone(p)
	for i := range c {
		c[i].Offset, c[i].Timestamp, c[i].Topic = -1, time.Time{}, ""
	}
	check(t, Compare(p, c), want{})
}

func TestCompareUnknownProducedPartition(t *testing.T) {
	// A producer that does not know partitions (console producer input):
	// the produced list is in input order, consumption per partition.
	p0, p1 := recs("t", 0, 6), recs("t", 1, 6)
	consumed := interleave(p0, p1)
	produced := clone(consumed)
	for i := range produced {
		produced[i].Partition, produced[i].Offset, produced[i].Topic = -1, -1, ""
	}
	check(t, Compare(produced, consumed), want{})
	// Swapping two records of different partitions in the input is not
	// reordering; swapping within a partition is.
	produced[0], produced[1] = produced[1], produced[0]
	check(t, Compare(produced, consumed), want{})
	produced[0], produced[2] = produced[2], produced[0] // now p0[1] before p0[0]
	check(t, Compare(produced, consumed), want{reord: 1})
	// Lost records of unknown partition are reported under partition -1.
	r := Compare(produced, consumed[1:])
	if r.Lost != 1 || r.Partitions[TopicPartition{"", -1}] == nil || r.Partitions[TopicPartition{"", -1}].Lost != 1 {
		t.Fatalf("lost record of unknown partition:\n%s", r)
	}
}

func TestCompareSameContentTwice(t *testing.T) {
	// The same content produced twice to different partitions: each copy
	// matches the delivery from its own partition.
	a := Record{Topic: "t", Partition: 0, Offset: 0, Value: []byte("same")}
	b := Record{Topic: "t", Partition: 1, Offset: 0, Value: []byte("same")}
	check(t, Compare([]Record{a, b}, []Record{b, a}), want{})
	check(t, Compare([]Record{a, b}, []Record{b, a, a}), want{dup: 1})
	check(t, Compare([]Record{a, b}, []Record{b}), want{lost: 1})
	// Twice in one partition and delivered twice: clean.
	a2 := a
	a2.Offset = 1
	check(t, Compare([]Record{a, a2}, []Record{a, a2}), want{})
}

func TestCompareMixed(t *testing.T) {
	p := recs("t", 0, 100)
	for i := range p {
		p[i].Offset = -1
	}
	c := clone(p)
	c = append(c[:10], c[11:]...)                                       // lose p[10]
	c[20], c[21] = c[21], c[20]                                         // reorder one
	c = append(c, p[50])                                                // duplicate one
	c = append(c, Record{Partition: 0, Offset: -1, Value: []byte("x")}) // unexpected
	r := Compare(p, c)
	check(t, r, want{lost: 1, dup: 1, reord: 1, unexp: 1})
	s := r.String()
	for _, w := range []string{"lost 1", "duplicated 1", "reordered 1", "unexpected 1", "t[0]"} {
		if !strings.Contains(s, w) {
			t.Errorf("report lacks %q:\n%s", w, s)
		}
	}
}

func TestCompareProblemsBounded(t *testing.T) {
	r := Compare(recs("t", 0, 500), nil)
	if r.Lost != 500 || len(r.Problems) != MaxProblems {
		t.Fatalf("lost %d, %d problems listed", r.Lost, len(r.Problems))
	}
}

func TestLongestIncreasing(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want int
	}{
		{nil, 0}, {[]int{1}, 1}, {[]int{1, 2, 3}, 3}, {[]int{3, 2, 1}, 1},
		{[]int{0, 8, 4, 12, 2, 10, 6, 14, 1, 9}, 4}, {[]int{2, 2, 2}, 1},
	} {
		if got := longestIncreasing(c.in); got != c.want {
			t.Errorf("longestIncreasing(%v) = %d, want %d", c.in, got, c.want)
		}
	}
}
