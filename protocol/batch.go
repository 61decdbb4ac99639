package protocol

import (
	"encoding/binary"
	"fmt"
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
