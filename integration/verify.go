// Package integration holds the client-interoperability tests: real,
// third-party Kafka clients (Kafka's Java console tools, librdkafka through
// kcat and confluent-kafka-python, franz-go) run against a bootstrap address
// (a real broker, or kmigrate's proxy in front of it), and what they consumed
// is checked record by record against what was produced.
//
// The tests give every client the address returned by bootstrap(t, cluster):
// a kmigrate proxy in front of a real broker by default (proxy_test.go), or
// the broker itself with -tags direct, which validates the tests:
//
//	go test ./integration               # through the proxy (what CI runs)
//	go test -tags direct ./integration  # direct to Kafka
//
// This file is the reusable part: [Record] is a client-neutral view of one
// record and [Compare] counts lost, duplicated and reordered records per
// partition. The mirror and cutover tests use it too.
package integration

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Header is one record header. A nil Value is a null header value, distinct
// from an empty one.
type Header struct {
	Key   string
	Value []byte
}

// Record is one Kafka record as a producer sent it or a consumer saw it.
// Key and Value keep Kafka's distinction between null (nil) and empty
// (non-nil, length 0).
type Record struct {
	Topic     string // "" when unknown
	Partition int32  // -1 when unknown (e.g. a producer that does not report it)
	Offset    int64  // -1 when unknown
	Key       []byte
	Value     []byte
	Headers   []Header
	Timestamp time.Time // zero when unknown
}

// FromKgo converts a franz-go record, copying its bytes (franz-go may reuse
// them) and keeping nil versus empty.
func FromKgo(r *kgo.Record) Record {
	out := Record{
		Topic:     r.Topic,
		Partition: r.Partition,
		Offset:    r.Offset,
		Key:       cloneBytes(r.Key),
		Value:     cloneBytes(r.Value),
		Timestamp: r.Timestamp,
	}
	for _, h := range r.Headers {
		out.Headers = append(out.Headers, Header{Key: h.Key, Value: cloneBytes(h.Value)})
	}
	return out
}

func cloneBytes(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

func (tp TopicPartition) String() string { return fmt.Sprintf("%s[%d]", tp.Topic, tp.Partition) }

// PartitionReport holds the counts of one partition. Lost records count in
// the partition they were produced to (Partition -1 when the producer did not
// know it); everything else in the partition they were consumed from.
type PartitionReport struct {
	Produced   int
	Consumed   int
	Lost       int
	Duplicated int
	Reordered  int
	Unexpected int
	Mismatched int
}

// Report is the result of [Compare]. A run is clean when Lost, Duplicated,
// Reordered, Unexpected and Mismatched are all zero; see [Report.OK].
type Report struct {
	Produced int // records in the produced list
	Consumed int // records in the consumed list, duplicates included

	// Lost counts produced records that were never consumed.
	Lost int
	// Duplicated counts deliveries beyond the first of a produced record
	// (a record delivered three times counts 2).
	Duplicated int
	// Reordered counts, per consumed partition, the first deliveries that
	// are out of produce order: the fewest records that would have to be
	// moved to restore it (count minus the longest in-order subsequence).
	Reordered int
	// Unexpected counts consumed records that match no produced record by
	// content (key, value, headers). A record whose bytes were altered counts
	// as one Lost plus one Unexpected.
	Unexpected int
	// Mismatched counts matched records whose topic, partition, offset or
	// timestamp differ from what was produced, where both sides know it.
	Mismatched int

	Partitions map[TopicPartition]*PartitionReport
	// Problems describes the first problems found (at most MaxProblems).
	Problems []string
}

// MaxProblems bounds Report.Problems.
const MaxProblems = 20

// OK reports whether nothing was lost, duplicated, reordered, unexpected or
// mismatched.
func (r Report) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.Reordered == 0 && r.Unexpected == 0 && r.Mismatched == 0
}

// String summarises the report: totals, the partitions with problems, and the
// first problems.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "produced %d, consumed %d: lost %d, duplicated %d, reordered %d, unexpected %d, mismatched %d",
		r.Produced, r.Consumed, r.Lost, r.Duplicated, r.Reordered, r.Unexpected, r.Mismatched)
	tps := make([]TopicPartition, 0, len(r.Partitions))
	for tp := range r.Partitions {
		tps = append(tps, tp)
	}
	sort.Slice(tps, func(i, j int) bool {
		if tps[i].Topic != tps[j].Topic {
			return tps[i].Topic < tps[j].Topic
		}
		return tps[i].Partition < tps[j].Partition
	})
	for _, tp := range tps {
		p := r.Partitions[tp]
		if p.Lost+p.Duplicated+p.Reordered+p.Unexpected+p.Mismatched == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n  %s: produced %d, consumed %d: lost %d, duplicated %d, reordered %d, unexpected %d, mismatched %d",
			tp, p.Produced, p.Consumed, p.Lost, p.Duplicated, p.Reordered, p.Unexpected, p.Mismatched)
	}
	for _, p := range r.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p)
	}
	return b.String()
}

func (r *Report) partition(topic string, partition int32) *PartitionReport {
	tp := TopicPartition{topic, partition}
	p := r.Partitions[tp]
	if p == nil {
		p = &PartitionReport{}
		r.Partitions[tp] = p
	}
	return p
}

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < MaxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Compare matches consumed records to produced ones and counts what went
// wrong.
//
// Records are matched by content: key, value and headers (in order), with
// null distinct from empty. Producing the same content more than once is
// allowed; each copy then matches one delivery, preferring a copy produced to
// the partition the delivery came from.
//
// produced must be in produce order within each partition (the order of
// acknowledgements of one partition, or offset order); records of different
// partitions may interleave freely. consumed is in delivery order. Topic,
// Partition, Offset and Timestamp are compared only where both sides know
// them (non-empty, >= 0, non-zero); a difference counts as Mismatched.
func Compare(produced, consumed []Record) Report {
	r := Report{
		Produced:   len(produced),
		Consumed:   len(consumed),
		Partitions: map[TopicPartition]*PartitionReport{},
	}
	byID := map[string][]int{} // content -> indices into produced, in order
	for i := range produced {
		p := &produced[i]
		id := identity(p)
		byID[id] = append(byID[id], i)
		r.partition(p.Topic, p.Partition).Produced++
	}
	delivered := make([]int, len(produced)) // deliveries per produced record

	// For each consumed partition, the produced indices of first
	// deliveries, in delivery order.
	firsts := map[TopicPartition][]int{}
	for ci := range consumed {
		c := &consumed[ci]
		tp := TopicPartition{c.Topic, c.Partition}
		pr := r.partition(c.Topic, c.Partition)
		pr.Consumed++
		cands := byID[identity(c)]
		if len(cands) == 0 {
			r.Unexpected++
			pr.Unexpected++
			r.problem("unexpected: consumed %s never produced", describe(c))
			continue
		}
		// First copy not delivered yet, preferring the same partition.
		pick := -1
		for _, i := range cands {
			if delivered[i] > 0 {
				continue
			}
			if samePartition(&produced[i], c) {
				pick = i
				break
			}
			if pick < 0 {
				pick = i
			}
		}
		if pick < 0 {
			// Every copy was delivered already: a duplicate delivery.
			r.Duplicated++
			pr.Duplicated++
			delivered[cands[0]]++
			r.problem("duplicated: %s delivered again", describe(c))
			continue
		}
		delivered[pick]++
		p := &produced[pick]
		if diffs := mismatches(p, c); diffs != "" {
			r.Mismatched++
			pr.Mismatched++
			r.problem("mismatched: %s: %s", describe(c), diffs)
		}
		firsts[tp] = append(firsts[tp], pick)
	}

	for tp, idx := range firsts {
		if n := len(idx) - longestIncreasing(idx); n > 0 {
			r.Reordered += n
			r.Partitions[tp].Reordered += n
			r.problem("reordered: %d records of %s delivered out of produce order (first inversion: %s)",
				n, tp, firstInversion(produced, idx))
		}
	}
	for i := range produced {
		if delivered[i] == 0 {
			p := &produced[i]
			r.Lost++
			r.partition(p.Topic, p.Partition).Lost++
			r.problem("lost: %s never consumed", describe(p))
		}
	}
	return r
}

func samePartition(p, c *Record) bool {
	return p.Partition < 0 || c.Partition < 0 || p.Partition == c.Partition
}

func mismatches(p, c *Record) string {
	var d []string
	if p.Topic != "" && c.Topic != "" && p.Topic != c.Topic {
		d = append(d, fmt.Sprintf("topic %q, produced to %q", c.Topic, p.Topic))
	}
	if p.Partition >= 0 && c.Partition >= 0 && p.Partition != c.Partition {
		d = append(d, fmt.Sprintf("partition %d, produced to %d", c.Partition, p.Partition))
	}
	if p.Offset >= 0 && c.Offset >= 0 && p.Offset != c.Offset {
		d = append(d, fmt.Sprintf("offset %d, produced at %d", c.Offset, p.Offset))
	}
	if !p.Timestamp.IsZero() && !c.Timestamp.IsZero() && !p.Timestamp.Equal(c.Timestamp) {
		d = append(d, fmt.Sprintf("timestamp %d ms, produced with %d ms", c.Timestamp.UnixMilli(), p.Timestamp.UnixMilli()))
	}
	return strings.Join(d, "; ")
}

// identity encodes key, value and headers unambiguously: every field is
// length-prefixed, with -1 for null.
func identity(r *Record) string {
	var b bytes.Buffer
	put := func(v []byte, isNull bool) {
		n := int64(len(v))
		if isNull {
			n = -1
		}
		var l [binary.MaxVarintLen64]byte
		b.Write(l[:binary.PutVarint(l[:], n)])
		b.Write(v)
	}
	put(r.Key, r.Key == nil)
	put(r.Value, r.Value == nil)
	put(nil, false) // separator, so that headers cannot alias the value
	for _, h := range r.Headers {
		put([]byte(h.Key), false)
		put(h.Value, h.Value == nil)
	}
	return b.String()
}

// longestIncreasing is the length of the longest strictly increasing
// subsequence of a (patience sorting, O(n log n)).
func longestIncreasing(a []int) int {
	var tails []int
	for _, x := range a {
		i := sort.SearchInts(tails, x)
		if i == len(tails) {
			tails = append(tails, x)
		} else {
			tails[i] = x
		}
	}
	return len(tails)
}

func firstInversion(produced []Record, idx []int) string {
	for i := 1; i < len(idx); i++ {
		if idx[i] < idx[i-1] {
			return fmt.Sprintf("%s delivered after %s", describe(&produced[idx[i]]), describe(&produced[idx[i-1]]))
		}
	}
	return "none"
}

// describe names a record briefly for problem reports.
func describe(r *Record) string {
	var b strings.Builder
	if r.Topic != "" || r.Partition >= 0 {
		fmt.Fprintf(&b, "%s[%d]", r.Topic, r.Partition)
	}
	if r.Offset >= 0 {
		fmt.Fprintf(&b, "@%d", r.Offset)
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "key=%s value=%s", short(r.Key), short(r.Value))
	if len(r.Headers) > 0 {
		fmt.Fprintf(&b, " headers=%d", len(r.Headers))
	}
	return b.String()
}

func short(v []byte) string {
	if v == nil {
		return "null"
	}
	const max = 40
	if len(v) > max {
		return fmt.Sprintf("%q...(%d bytes)", v[:max], len(v))
	}
	return fmt.Sprintf("%q", v)
}
