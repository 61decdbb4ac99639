package protocol

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// v2 record batch header layout (KIP-98): the fields the proxy reads without
// decoding records.
const (
	batchLengthOffset     = 8  // int32, bytes after this field
	batchMagicOffset      = 16 // int8
	batchLastDeltaOffset  = 23 // int32 lastOffsetDelta
	batchHeaderMinimumLen = 61
)

// OffsetSpan returns how many offsets the record batches in records occupy
// (the sum of lastOffsetDelta+1), which with a Produce answer's base offset
// gives the last offset written. Only v2 batches exist since Kafka 4.0.
func OffsetSpan(records []byte) (int64, error) {
	var span int64
	for pos := 0; pos < len(records); {
		if len(records)-pos < batchHeaderMinimumLen {
			return 0, fmt.Errorf("%w: record batch header truncated at byte %d", ErrMalformed, pos)
		}
		b := records[pos:]
		if magic := b[batchMagicOffset]; magic != 2 {
			return 0, fmt.Errorf("%w: record batch magic %d, only v2 is supported", ErrMalformed, magic)
		}
		length := int(int32(binary.BigEndian.Uint32(b[batchLengthOffset:])))
		if length < batchHeaderMinimumLen-12 || length > len(b)-12 {
			return 0, fmt.Errorf("%w: record batch length %d at byte %d", ErrMalformed, length, pos)
		}
		span += int64(int32(binary.BigEndian.Uint32(b[batchLastDeltaOffset:]))) + 1
		pos += 12 + length
	}
	return span, nil
}

// More v2 batch header fields (KIP-98). The CRC covers everything from the
// attributes on; the base offset, length and partition leader epoch before
// it are not covered, which is what lets the proxy move a batch between
// offset spaces without touching its records.
const (
	batchBaseOffsetOffset  = 0  // int64
	batchLeaderEpochOffset = 12 // int32
	batchCRCOffset         = 17 // uint32, CRC-32C of bytes [21:]
	batchAttributesOffset  = 21 // int16
	batchProducerIDOffset  = 43 // int64
	batchProducerEpochOff  = 51 // int16
	batchBaseSequenceOff   = 53 // int32
	batchTransactionalFlag = 0x10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Batch is one v2 record batch inside a records field, aliasing its bytes.
type Batch []byte

// Batches splits records into its v2 batches, checking each header's
// length and magic. The batches alias records.
func Batches(records []byte) ([]Batch, error) {
	var out []Batch
	for pos := 0; pos < len(records); {
		if len(records)-pos < batchHeaderMinimumLen {
			return nil, fmt.Errorf("%w: record batch header truncated at byte %d", ErrMalformed, pos)
		}
		b := records[pos:]
		if magic := b[batchMagicOffset]; magic != 2 {
			return nil, fmt.Errorf("%w: record batch magic %d, only v2 is supported", ErrMalformed, magic)
		}
		length := int(int32(binary.BigEndian.Uint32(b[batchLengthOffset:])))
		if length < batchHeaderMinimumLen-12 || length > len(b)-12 {
			return nil, fmt.Errorf("%w: record batch length %d at byte %d", ErrMalformed, length, pos)
		}
		out = append(out, Batch(b[:12+length:12+length]))
		pos += 12 + length
	}
	return out, nil
}

// CompleteBatches is Batches up to the first batch that is truncated or
// malformed, without an error: a fetch answer may end with part of a batch.
func CompleteBatches(records []byte) []Batch {
	var out []Batch
	for pos := 0; len(records)-pos >= batchHeaderMinimumLen; {
		b := records[pos:]
		length := int(int32(binary.BigEndian.Uint32(b[batchLengthOffset:])))
		if b[batchMagicOffset] != 2 || length < batchHeaderMinimumLen-12 || length > len(b)-12 {
			break
		}
		out = append(out, Batch(b[:12+length:12+length]))
		pos += 12 + length
	}
	return out
}

func (b Batch) BaseOffset() int64 { return int64(binary.BigEndian.Uint64(b[batchBaseOffsetOffset:])) }

// SetBaseOffset moves the batch to another offset space; the CRC does not
// cover the base offset, so nothing else changes.
func (b Batch) SetBaseOffset(o int64) {
	binary.BigEndian.PutUint64(b[batchBaseOffsetOffset:], uint64(o))
}

// LastOffsetDelta is the last record's offset minus the base offset.
func (b Batch) LastOffsetDelta() int32 {
	return int32(binary.BigEndian.Uint32(b[batchLastDeltaOffset:]))
}

func (b Batch) ProducerID() int64 { return int64(binary.BigEndian.Uint64(b[batchProducerIDOffset:])) }
func (b Batch) ProducerEpoch() int16 {
	return int16(binary.BigEndian.Uint16(b[batchProducerEpochOff:]))
}
func (b Batch) BaseSequence() int32 { return int32(binary.BigEndian.Uint32(b[batchBaseSequenceOff:])) }
func (b Batch) Transactional() bool {
	return binary.BigEndian.Uint16(b[batchAttributesOffset:])&batchTransactionalFlag != 0
}

// SetProducer rewrites the producer id, epoch and base sequence, which the
// CRC covers, and recomputes the CRC (over the compressed bytes as they
// are: nothing is decompressed).
func (b Batch) SetProducer(id int64, epoch int16, baseSequence int32) {
	binary.BigEndian.PutUint64(b[batchProducerIDOffset:], uint64(id))
	binary.BigEndian.PutUint16(b[batchProducerEpochOff:], uint16(epoch))
	binary.BigEndian.PutUint32(b[batchBaseSequenceOff:], uint32(baseSequence))
	binary.BigEndian.PutUint32(b[batchCRCOffset:], crc32.Checksum(b[batchAttributesOffset:], castagnoli))
}

// CRCValid reports whether the batch's CRC matches its bytes.
func (b Batch) CRCValid() bool {
	return binary.BigEndian.Uint32(b[batchCRCOffset:]) == crc32.Checksum(b[batchAttributesOffset:], castagnoli)
}
