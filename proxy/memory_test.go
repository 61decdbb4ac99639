package proxy

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/kmigrate/kmigrate/protocol"
)

// TestFetchMaxBytes reads MaxBytes out of Fetch requests of every version
// kmsg encodes, without decoding them.
func TestFetchMaxBytes(t *testing.T) {
	for v := int16(3); v <= 17; v++ {
		req := kmsg.NewPtrFetchRequest()
		req.Version = v
		req.ReplicaID = -1
		req.MaxWaitMillis = 500
		req.MinBytes = 1
		req.MaxBytes = 12345678
		buf := protocol.AppendRequestHeader(nil, req.Key(), v, 7, "test")
		parsed, known, err := protocol.ParseRequest(req.AppendTo(buf))
		if err != nil || !known {
			t.Fatalf("v%d: parse: %v", v, err)
		}
		got, err := fetchMaxBytes(&parsed)
		if err != nil || got != 12345678 {
			t.Errorf("v%d: MaxBytes = %d, %v; want 12345678", v, got, err)
		}
		if est := answerEstimate(&parsed); est != 12345678 {
			t.Errorf("v%d: estimate %d", v, est)
		}
	}
	truncated := protocol.Request{APIKey: 1, APIVersion: 12, Body: []byte{0, 0}}
	if _, err := fetchMaxBytes(&truncated); err == nil {
		t.Error("a truncated fetch body gave no error")
	}
	if est := answerEstimate(&truncated); est != DefaultMaxConnBufferBytes {
		t.Errorf("truncated fetch: estimate %d, want the per-connection budget", est)
	}
}
