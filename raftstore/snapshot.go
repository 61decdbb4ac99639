package raftstore

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/kmigrate/kmigrate/offsetsync"
	"io"
	"time"
)

// Snapshot encoding, version 2. Binary rather than JSON because a snapshot
// may hold millions of segments: varints keep a segment to a few bytes and
// decoding allocation-light. Layout (all integers varints):
//
//	"KMRS" version(byte)
//	applied
//	groups:  count, then per group:  name phase epoch changedAt changedIndex
//	topics:  count, then per topic:  name primary reverseMirror epoch changedAt changedIndex
//	maps:    count, then per map:    topic partition count {virtual source target length}...
//	writers: count, then per writer: topic partition node epoch changedAt changedIndex
//	nodes:   count, then per node:   id raftAddr adminAddr voter writer applied reportedAt dead
//	"END!"
//
// Strings are a length then bytes, booleans one byte, times Unix nanoseconds
// (0 for none). Entries are sorted (Dump order), so equal states give equal
// bytes. The trailer catches truncation; raft's file snapshot store already
// checksums the file. Version 1 had no writer flag per node; it is still read.
const (
	snapshotMagic   = "KMRS"
	snapshotVersion = 2
	snapshotTrailer = "END!"
	// maxSnapshotString bounds a string's length so that a corrupt length
	// cannot make Restore allocate gigabytes.
	maxSnapshotString = 1 << 20
)

// WriteSnapshot writes d in the snapshot encoding.
func WriteSnapshot(w io.Writer, d Dump) error {
	e := &encoder{w: w}
	e.raw([]byte(snapshotMagic))
	e.raw([]byte{snapshotVersion})
	e.uvarint(d.Applied)
	e.uvarint(uint64(len(d.Groups)))
	for _, g := range d.Groups {
		e.str(g.Group)
		e.str(string(g.Phase))
		e.uvarint(g.Epoch)
		e.time(g.ChangedAt)
		e.uvarint(g.ChangedIndex)
	}
	e.uvarint(uint64(len(d.Topics)))
	for _, t := range d.Topics {
		e.str(t.Topic)
		e.str(string(t.Primary))
		e.bool(t.ReverseMirror)
		e.uvarint(t.Epoch)
		e.time(t.ChangedAt)
		e.uvarint(t.ChangedIndex)
	}
	e.uvarint(uint64(len(d.Maps)))
	for _, m := range d.Maps {
		e.str(m.Topic)
		e.varint(int64(m.Partition))
		e.uvarint(uint64(len(m.Segments)))
		for _, s := range m.Segments {
			e.varint(s.Virtual)
			e.varint(s.Source)
			e.varint(s.Target)
			e.varint(s.Length)
		}
	}
	e.uvarint(uint64(len(d.Writers)))
	for _, w := range d.Writers {
		e.str(w.Topic)
		e.varint(int64(w.Partition))
		e.str(w.Node)
		e.uvarint(w.Epoch)
		e.time(w.ChangedAt)
		e.uvarint(w.ChangedIndex)
	}
	e.uvarint(uint64(len(d.Nodes)))
	for _, n := range d.Nodes {
		e.str(n.ID)
		e.str(n.RaftAddr)
		e.str(n.AdminAddr)
		e.bool(n.Voter)
		e.bool(n.Writer)
		e.uvarint(n.Applied)
		e.time(n.ReportedAt)
		e.bool(n.Dead)
	}
	e.raw([]byte(snapshotTrailer))
	return e.err
}

// ReadSnapshot decodes a snapshot written by WriteSnapshot. It refuses
// unknown versions and checks each segment, so a corrupt or foreign file
// fails here rather than leaving a map that breaks translation.
func ReadSnapshot(r io.Reader) (Dump, error) {
	br, ok := r.(io.ByteReader)
	if !ok {
		b := bufio.NewReader(r)
		r, br = b, b
	}
	d := &decoder{r: r, br: br}
	var head [len(snapshotMagic) + 1]byte
	d.raw(head[:])
	if d.err != nil {
		return Dump{}, fmt.Errorf("read snapshot header: %w", d.err)
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return Dump{}, errors.New("not a raftstore snapshot")
	}
	version := head[len(snapshotMagic)]
	if version < 1 || version > snapshotVersion {
		return Dump{}, fmt.Errorf("snapshot version %d: this node reads versions 1 to %d", version, snapshotVersion)
	}
	var out Dump
	out.Applied = d.uvarint()
	for n := d.count(); n > 0 && d.err == nil; n-- {
		out.Groups = append(out.Groups, GroupRoute{
			Group: d.str(), Phase: GroupPhase(d.str()), Epoch: d.uvarint(), ChangedAt: d.time(), ChangedIndex: d.uvarint(),
		})
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		out.Topics = append(out.Topics, TopicRoute{
			Topic: d.str(), Primary: ProducerPrimary(d.str()), ReverseMirror: d.bool(),
			Epoch: d.uvarint(), ChangedAt: d.time(), ChangedIndex: d.uvarint(),
		})
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		m := PartitionMap{TopicPartition: TopicPartition{Topic: d.str(), Partition: d.int32()}}
		for k := d.count(); k > 0 && d.err == nil; k-- {
			s := offsetsync.Segment{Virtual: d.varint(), Source: d.varint(), Target: d.varint(), Length: d.varint()}
			if d.err != nil {
				break
			}
			// Append also checks order and overlap. A map written by this
			// package never merges further, so the count is preserved.
			if _, err := m.Segments.Append(s); err != nil && d.err == nil {
				d.err = fmt.Errorf("map %s/%d: %w", m.Topic, m.Partition, err)
			}
		}
		out.Maps = append(out.Maps, m)
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		out.Writers = append(out.Writers, WriterOwner{
			TopicPartition: TopicPartition{Topic: d.str(), Partition: d.int32()},
			Node:           d.str(), Epoch: d.uvarint(), ChangedAt: d.time(), ChangedIndex: d.uvarint(),
		})
	}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		m := Member{ID: d.str(), RaftAddr: d.str(), AdminAddr: d.str(), Voter: d.bool()}
		if version >= 2 {
			m.Writer = d.bool()
		}
		out.Nodes = append(out.Nodes, Node{Member: m, Applied: d.uvarint(), ReportedAt: d.time(), Dead: d.bool()})
	}
	var tail [len(snapshotTrailer)]byte
	d.raw(tail[:])
	if d.err == nil && string(tail[:]) != snapshotTrailer {
		d.err = errors.New("bad trailer")
	}
	if d.err != nil {
		return Dump{}, fmt.Errorf("read snapshot: %w", d.err)
	}
	return out, nil
}

// encoder writes varints with a sticky error.
type encoder struct {
	w   io.Writer
	err error
	buf [binary.MaxVarintLen64]byte
}

func (e *encoder) raw(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}
func (e *encoder) uvarint(v uint64) { e.raw(e.buf[:binary.PutUvarint(e.buf[:], v)]) }
func (e *encoder) varint(v int64)   { e.raw(e.buf[:binary.PutVarint(e.buf[:], v)]) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.raw([]byte(s)) }
func (e *encoder) bool(b bool) {
	if b {
		e.raw([]byte{1})
	} else {
		e.raw([]byte{0})
	}
}
func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.varint(0)
		return
	}
	e.varint(t.UnixNano())
}

// decoder reads what encoder wrote; after the first error every read
// returns zero values, and the caller checks err once.
type decoder struct {
	r   io.Reader
	br  io.ByteReader
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		d.err = err
	}
}

func (d *decoder) raw(b []byte) {
	if d.err == nil {
		if _, err := io.ReadFull(d.r, b); err != nil {
			d.fail(err)
		}
	}
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(d.br)
	d.fail(err)
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(d.br)
	d.fail(err)
	return v
}

func (d *decoder) int32() int32 {
	v := d.varint()
	if int64(int32(v)) != v {
		d.fail(fmt.Errorf("partition %d out of range", v))
		return 0
	}
	return int32(v)
}

// count reads a collection length; after an error it is 0, so loops stop.
// Nothing is allocated up front from it, so a corrupt count only costs the
// reads until the data runs out.
func (d *decoder) count() int {
	n := d.uvarint()
	if d.err != nil {
		return 0
	}
	if n > 1<<40 {
		d.fail(fmt.Errorf("count %d out of range", n))
		return 0
	}
	return int(n)
}

func (d *decoder) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > maxSnapshotString {
		d.fail(fmt.Errorf("string of %d bytes out of range", n))
		return ""
	}
	b := make([]byte, n)
	d.raw(b)
	return string(b)
}

func (d *decoder) bool() bool {
	if d.err != nil {
		return false
	}
	b, err := d.br.ReadByte()
	d.fail(err)
	if b > 1 {
		d.fail(fmt.Errorf("bad boolean %d", b))
	}
	return b == 1
}

func (d *decoder) time() time.Time {
	n := d.varint()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
