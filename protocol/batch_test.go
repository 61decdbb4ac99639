package protocol

import (
	"encoding/binary"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func batch(records int) []byte {
	b := kmsg.RecordBatch{Magic: 2, LastOffsetDelta: int32(records - 1), NumRecords: int32(records), Records: make([]byte, 0)}
	for i := 0; i < records; i++ {
		r := kmsg.Record{OffsetDelta: int32(i), Value: []byte("v")}
		b.Records = r.AppendTo(b.Records)
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12)) // kmsg leaves Length to the caller
	return out
}

func TestOffsetSpan(t *testing.T) {
	two := append(batch(3), batch(5)...)
	if n, err := OffsetSpan(two); err != nil || n != 8 {
		t.Fatalf("OffsetSpan(3+5 records) = %d, %v", n, err)
	}
	if _, err := OffsetSpan(two[:len(two)-1]); err == nil {
		t.Fatal("truncated batch accepted")
	}
	if n, err := OffsetSpan(nil); err != nil || n != 0 {
		t.Fatalf("OffsetSpan(nil) = %d, %v", n, err)
	}
}

func FuzzOffsetSpan(f *testing.F) {
	f.Add(batch(2))
	f.Fuzz(func(t *testing.T, b []byte) { OffsetSpan(b) })
}
