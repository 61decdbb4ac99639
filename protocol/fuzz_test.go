package protocol

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// FuzzReadFrame: any byte stream yields a frame within bounds or an error.
func FuzzReadFrame(f *testing.F) {
	f.Add(AppendFrame(nil, []byte("abc")))
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte{0, 0, 0, 10, 1, 2})
	f.Fuzz(func(t *testing.T, in []byte) {
		frame, err := ReadFrame(bytes.NewReader(in), 1<<16)
		if err == nil && len(frame) > 1<<16 {
			t.Fatalf("frame of %d bytes passed a 64 KiB bound", len(frame))
		}
	})
}

// FuzzParseRequest: parsing never panics, and a known request's header and
// body together are exactly the frame.
func FuzzParseRequest(f *testing.F) {
	for _, key := range []int16{0, 1, 3, 18} {
		req := kmsg.RequestForKey(key)
		req.SetVersion(req.MaxVersion())
		f.Add(req.AppendTo(AppendRequestHeader(nil, key, req.MaxVersion(), 1, "seed")))
		req.SetVersion(0)
		f.Add(req.AppendTo(AppendRequestHeader(nil, key, 0, 1, "")))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, known, err := ParseRequest(frame)
		if err != nil || !known {
			return
		}
		if !bytes.Equal(append(append([]byte{}, req.Header...), req.Body...), frame) {
			t.Fatal("header+body differ from the frame")
		}
	})
}

// FuzzParseProduceHead: parsing a prefix never panics, and whenever kmsg
// decodes the bytes as a whole produce request with topics, the head agrees
// with it.
func FuzzParseProduceHead(f *testing.F) {
	for _, version := range []int16{2, 3, 9, 12, 13} {
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks = version, -1
		t := kmsg.NewProduceRequestTopic()
		t.Topic, t.TopicID[0] = "seed", 7
		p := kmsg.NewProduceRequestTopicPartition()
		p.Records = []byte("batch")
		t.Partitions = append(t.Partitions, p)
		req.Topics = append(req.Topics, t)
		f.Add(version, req.AppendTo(nil))
	}
	f.Fuzz(func(t *testing.T, version int16, body []byte) {
		if version < 0 || version > kmsg.NewPtrProduceRequest().MaxVersion() {
			return
		}
		head, ok := ParseProduceHead(body, version)
		if ok && head.Topics < 1 {
			t.Fatalf("head without topics accepted: %+v", head)
		}
		req := kmsg.NewPtrProduceRequest()
		req.Version = version
		if req.ReadFrom(body) != nil || len(req.Topics) == 0 {
			return
		}
		if !ok || head.Acks != req.Acks || head.Topics != len(req.Topics) ||
			version >= 13 && head.TopicID != req.Topics[0].TopicID || version < 13 && head.Topic != req.Topics[0].Topic {
			t.Fatalf("v%d: head %+v (ok %v) disagrees with kmsg's decoding", version, head, ok)
		}
	})
}
