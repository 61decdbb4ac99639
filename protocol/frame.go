// Package protocol reads and writes Kafka wire frames and headers and holds
// the per-message rewrites the proxy applies. Message bodies are encoded and
// decoded with franz-go's kmsg; record batches inside them stay opaque bytes.
package protocol

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxFrameBytes mirrors Kafka's socket.request.max.bytes default.
const DefaultMaxFrameBytes = 100 << 20

// ErrFrameTooLarge is returned for a frame whose length prefix exceeds the
// configured bound; the connection must be closed because the stream cannot
// be resynchronised without reading the oversized body.
var ErrFrameTooLarge = errors.New("frame exceeds maximum size")

// ReadFrame reads one size-prefixed frame. The returned slice is freshly
// allocated and owned by the caller: frames are handed to other goroutines
// (upstream writers, response mergers), so reusing a buffer would race.
func ReadFrame(r io.Reader, maxBytes int32) ([]byte, error) {
	size, err := ReadFrameSize(r, maxBytes)
	if err != nil {
		return nil, err
	}
	return ReadFrameBody(r, size)
}

// ReadFrameSize reads a frame's size prefix and checks it against maxBytes.
func ReadFrameSize(r io.Reader, maxBytes int32) (int32, error) {
	var sizeBuf [4]byte
	if _, err := io.ReadFull(r, sizeBuf[:]); err != nil {
		return 0, err
	}
	size := int32(binary.BigEndian.Uint32(sizeBuf[:]))
	if size < 0 || size > maxBytes {
		return 0, fmt.Errorf("%w: %d bytes announced, limit %d", ErrFrameTooLarge, size, maxBytes)
	}
	return size, nil
}

// ReadFrameBody reads the size bytes of a frame that follow its prefix.
func ReadFrameBody(r io.Reader, size int32) ([]byte, error) {
	frame := make([]byte, size)
	if err := ReadFrameInto(r, frame); err != nil {
		return nil, err
	}
	return frame, nil
}

// ReadFrameInto fills frame, a buffer of the frame's size, with the bytes
// that follow its prefix.
func ReadFrameInto(r io.Reader, frame []byte) error {
	if _, err := io.ReadFull(r, frame); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("reading %d-byte frame: %w", len(frame), err)
	}
	return nil
}

// AppendFrame appends the 4-byte size prefix and the frame parts to dst.
func AppendFrame(dst []byte, parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return dst
}
