package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// ErrMalformed marks a frame that does not parse as a Kafka message.
var ErrMalformed = errors.New("malformed frame")

// Request is one client request split into its raw header and body. The
// header is kept as bytes so that forwarding never drops fields the proxy does
// not interpret (client id, header tagged fields: kmsg's formatter drops the
// latter).
type Request struct {
	APIKey        int16
	APIVersion    int16
	CorrelationID int32
	ClientID      *string
	Header        []byte // header bytes exactly as received
	Body          []byte
}

// Flexible reports whether the request uses KIP-482 flexible encoding, and
// with it the v2 request header and v1 response header.
func (r *Request) Flexible() bool { return IsFlexible(r.APIKey, r.APIVersion) }

// ParseRequest splits a frame into header and body. Keys the proxy does not
// know are still parsed up to the correlation id so that they can be refused
// cleanly; their Body is empty and ok is false.
func ParseRequest(frame []byte) (req Request, known bool, err error) {
	if len(frame) < 8 {
		return req, false, fmt.Errorf("%w: request header needs 8 bytes, got %d", ErrMalformed, len(frame))
	}
	req.APIKey = int16(binary.BigEndian.Uint16(frame[0:]))
	req.APIVersion = int16(binary.BigEndian.Uint16(frame[2:]))
	req.CorrelationID = int32(binary.BigEndian.Uint32(frame[4:]))
	if kmsg.RequestForKey(req.APIKey) == nil {
		req.Header = frame
		return req, false, nil
	}
	pos := 8
	if len(frame) < pos+2 {
		return req, true, fmt.Errorf("%w: %s v%d: truncated client id", ErrMalformed, kmsg.NameForKey(req.APIKey), req.APIVersion)
	}
	idLen := int(int16(binary.BigEndian.Uint16(frame[pos:])))
	pos += 2
	if idLen >= 0 {
		if len(frame) < pos+idLen {
			return req, true, fmt.Errorf("%w: %s v%d: truncated client id", ErrMalformed, kmsg.NameForKey(req.APIKey), req.APIVersion)
		}
		id := string(frame[pos : pos+idLen])
		req.ClientID = &id
		pos += idLen
	}
	if req.Flexible() {
		end, err := skipTags(frame, pos)
		if err != nil {
			return req, true, fmt.Errorf("%s v%d header: %w", kmsg.NameForKey(req.APIKey), req.APIVersion, err)
		}
		pos = end
	}
	req.Header = frame[:pos]
	req.Body = frame[pos:]
	return req, true, nil
}

// skipTags walks a tagged-field section starting at pos and returns the
// position just after it.
func skipTags(b []byte, pos int) (int, error) {
	count, n := binary.Uvarint(b[pos:])
	if n <= 0 {
		return 0, fmt.Errorf("%w: bad tagged field count", ErrMalformed)
	}
	pos += n
	for i := uint64(0); i < count; i++ {
		if _, n = binary.Uvarint(b[pos:]); n <= 0 {
			return 0, fmt.Errorf("%w: bad tag", ErrMalformed)
		}
		pos += n
		size, n := binary.Uvarint(b[pos:])
		if n <= 0 || size > uint64(len(b)) {
			return 0, fmt.Errorf("%w: bad tag size", ErrMalformed)
		}
		pos += n
		if pos+int(size) > len(b) {
			return 0, fmt.Errorf("%w: tag runs past the frame", ErrMalformed)
		}
		pos += int(size)
	}
	return pos, nil
}

// firstFlexible[key] is the first version of key that uses flexible
// encoding, or -1. Computed once: IsFlexible runs on every request.
var firstFlexible = func() map[int16]int16 {
	m := make(map[int16]int16)
	for key := int16(0); key < 200; key++ {
		req := kmsg.RequestForKey(key)
		if req == nil {
			continue
		}
		m[key] = -1
		for v := int16(0); v <= req.MaxVersion(); v++ {
			req.SetVersion(v)
			if req.IsFlexible() {
				m[key] = v
				break
			}
		}
	}
	return m
}()

// IsFlexible reports whether key at version uses flexible encoding.
func IsFlexible(key, version int16) bool {
	first, ok := firstFlexible[key]
	return ok && first >= 0 && version >= first
}

// ResponseHeaderLen is the length of the response header the broker sends
// for key at version. ApiVersions always answers with a v0 header (KIP-511):
// a client that does not yet know the broker's versions must still be able to
// read the reply.
func ResponseHeaderLen(frame []byte, key, version int16) (int, error) {
	if len(frame) < 4 {
		return 0, fmt.Errorf("%w: response shorter than its correlation id", ErrMalformed)
	}
	if key == 18 || !IsFlexible(key, version) {
		return 4, nil
	}
	return skipTags(frame, 4)
}

// WithCorrelationID returns header with its correlation id replaced. The
// header is copied because the original frame may still be in use.
func WithCorrelationID(header []byte, id int32) []byte {
	out := make([]byte, len(header))
	copy(out, header)
	binary.BigEndian.PutUint32(out[4:], uint32(id))
	return out
}

// AppendResponseHeader appends a response header the proxy originates.
func AppendResponseHeader(dst []byte, correlationID int32, key, version int16) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(correlationID))
	if key != 18 && IsFlexible(key, version) {
		dst = append(dst, 0) // no tagged fields
	}
	return dst
}

// AppendRequestHeader appends a v1/v2 request header for a request the
// proxy itself originates.
func AppendRequestHeader(dst []byte, key, version int16, correlationID int32, clientID string) []byte {
	dst = binary.BigEndian.AppendUint16(dst, uint16(key))
	dst = binary.BigEndian.AppendUint16(dst, uint16(version))
	dst = binary.BigEndian.AppendUint32(dst, uint32(correlationID))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(clientID)))
	dst = append(dst, clientID...)
	if IsFlexible(key, version) {
		dst = append(dst, 0)
	}
	return dst
}
