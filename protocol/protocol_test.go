package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestReadFrameBounds(t *testing.T) {
	frame := AppendFrame(nil, []byte("hello"))
	got, err := ReadFrame(bytes.NewReader(frame), 5)
	if err != nil || string(got) != "hello" {
		t.Fatalf("ReadFrame = %q, %v", got, err)
	}
	if _, err := ReadFrame(bytes.NewReader(frame), 4); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("frame over the limit: err = %v, want ErrFrameTooLarge", err)
	}
	neg := binary.BigEndian.AppendUint32(nil, 0xffffffff)
	if _, err := ReadFrame(bytes.NewReader(neg), 100); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("negative size: err = %v, want ErrFrameTooLarge", err)
	}
	if _, err := ReadFrame(bytes.NewReader(frame[:6]), 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated body: err = %v, want ErrUnexpectedEOF", err)
	}
}

// TestParseRequestKeepsHeaderTags checks that a flexible header's tagged
// fields stay in Header, which is forwarded verbatim (kmsg's formatter would
// drop them).
func TestParseRequestKeepsHeaderTags(t *testing.T) {
	req := kmsg.NewPtrMetadataRequest()
	req.Version = 12
	hdr := AppendRequestHeader(nil, 3, 12, 42, "client-a")
	// Replace the empty tag section with one tag (key 5, 2 bytes).
	hdr = append(hdr[:len(hdr)-1], 1, 5, 2, 0xAB, 0xCD)
	body := req.AppendTo(nil)
	frame := append(append([]byte{}, hdr...), body...)
	got, known, err := ParseRequest(frame)
	if err != nil || !known {
		t.Fatalf("ParseRequest: known=%v err=%v", known, err)
	}
	if got.APIKey != 3 || got.APIVersion != 12 || got.CorrelationID != 42 || *got.ClientID != "client-a" {
		t.Fatalf("header fields = %+v", got)
	}
	if !bytes.Equal(got.Header, hdr) || !bytes.Equal(got.Body, body) {
		t.Fatalf("header/body split wrong: header %x body %x", got.Header, got.Body)
	}
	rewritten := WithCorrelationID(got.Header, 7)
	if binary.BigEndian.Uint32(rewritten[4:]) != 7 || !bytes.Equal(rewritten[8:], hdr[8:]) {
		t.Fatalf("WithCorrelationID changed more than the id: %x", rewritten)
	}
	if binary.BigEndian.Uint32(got.Header[4:]) != 42 {
		t.Fatal("WithCorrelationID modified the original header")
	}
}

func TestParseRequestRejectsTruncatedHeaders(t *testing.T) {
	full := AppendRequestHeader(nil, 3, 12, 1, "abc")
	for n := 0; n < len(full); n++ {
		if _, _, err := ParseRequest(full[:n]); err == nil {
			t.Errorf("header cut at %d bytes parsed without error", n)
		}
	}
	unknown := binary.BigEndian.AppendUint16(nil, 9999)
	unknown = append(unknown, 0, 0, 0, 0, 0, 1)
	if _, known, err := ParseRequest(unknown); err != nil || known {
		t.Fatalf("unknown key: known=%v err=%v, want unknown without error", known, err)
	}
}

// TestApiVersionsResponseHeaderIsV0 pins the KIP-511 trap: ApiVersions v3+
// is flexible, yet its response header has no tagged fields.
func TestApiVersionsResponseHeaderIsV0(t *testing.T) {
	if !IsFlexible(18, 3) {
		t.Fatal("ApiVersions v3 should be flexible")
	}
	if got := AppendResponseHeader(nil, 9, 18, 3); len(got) != 4 {
		t.Fatalf("ApiVersions v3 response header = %d bytes, want 4", len(got))
	}
	if got := AppendResponseHeader(nil, 9, 3, 12); len(got) != 5 {
		t.Fatalf("Metadata v12 response header = %d bytes, want 5", len(got))
	}
	n, err := ResponseHeaderLen([]byte{0, 0, 0, 9, 0xff}, 18, 3)
	if err != nil || n != 4 {
		t.Fatalf("ResponseHeaderLen(ApiVersions v3) = %d, %v", n, err)
	}
}

func TestIsFlexibleMatchesKmsg(t *testing.T) {
	for key := int16(0); key < 100; key++ {
		req := kmsg.RequestForKey(key)
		if req == nil {
			continue
		}
		for v := int16(0); v <= req.MaxVersion(); v++ {
			req.SetVersion(v)
			if IsFlexible(key, v) != req.IsFlexible() {
				t.Errorf("%s v%d: IsFlexible = %v, kmsg says %v", kmsg.NameForKey(key), v, IsFlexible(key, v), req.IsFlexible())
			}
		}
	}
}
