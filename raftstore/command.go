package raftstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// CommandType is the first byte of every raft log entry written by raftstore.
// Values are never reused: a command whose body changes incompatibly keeps
// its type and gets a new version.
type CommandType uint8

const (
	CmdSetGroupPhase    CommandType = 1
	CmdSetTopicPrimary  CommandType = 2
	CmdSetReverseMirror CommandType = 3
	CmdAppendSegments   CommandType = 4
	CmdClaimWriter      CommandType = 5
	CmdReleaseWriter    CommandType = 6
	CmdRegisterNode     CommandType = 7
	CmdReportApplied    CommandType = 8
	CmdSetNodeDead      CommandType = 9
	CmdRemoveNode       CommandType = 10
	CmdFillSource       CommandType = 11
)

// IgnoreUnknownFlag, set on a type byte, tells nodes that do not know the
// type to skip the entry instead of refusing it (Consul's convention): for
// commands that only add optional information, so that they can be rolled out
// before every node understands them.
const IgnoreUnknownFlag CommandType = 0x80

// headerLen is the type byte, the version byte and the proposal time.
const headerLen = 1 + 1 + 8

// Errors returned in Result.Err (and by Apply). Each is wrapped with the
// details; test with errors.Is.
var (
	// ErrUnknownCommand: a type or version this node does not know. The
	// entry is refused and the state is unchanged.
	ErrUnknownCommand = errors.New("unknown command")
	// ErrBadCommand: the entry does not decode, or its fields are invalid.
	ErrBadCommand = errors.New("bad command")
	// ErrEpochMismatch: a compare-and-set found another epoch than expected.
	ErrEpochMismatch = errors.New("epoch mismatch")
	// ErrPhaseMismatch: the route is not in the phase the command expected.
	ErrPhaseMismatch = errors.New("phase mismatch")
	// ErrInvalidTransition: the route cannot go from its phase to the one asked.
	ErrInvalidTransition = errors.New("invalid transition")
	// ErrStaleWriter: a writer that does not hold the partition at that epoch.
	ErrStaleWriter = errors.New("stale writer")
	// ErrUnknownNode: the node is not registered.
	ErrUnknownNode = errors.New("unknown node")
	// ErrNodeDead: the node is declared dead.
	ErrNodeDead = errors.New("node is dead")
)

// Command is one change of the replicated state. The set is closed: only the
// types of this package implement it.
type Command interface {
	// Type is the command's type byte.
	Type() CommandType
	// apply changes s, entirely or not at all: a refused command leaves the
	// state as it was. It must be deterministic: no clock, no randomness,
	// no I/O, no map iteration order.
	apply(s *state, x applyCtx) Result
}

// applyCtx is what Apply knows besides the command: the log index and the
// proposer's clock at proposal time, both the same on every node.
type applyCtx struct {
	index uint64
	at    time.Time
}

// Result is what applying a command returned, the same on every node.
type Result struct {
	// Index is the raft index of the command.
	Index uint64 `json:"index"`
	// Epoch is the epoch of the route or writer after the command, when the
	// command touches one.
	Epoch uint64 `json:"epoch,omitempty"`
	// Changed is false when the command was refused or changed nothing (an
	// idempotent repeat).
	Changed bool `json:"changed"`
	// Ignored is true for an unknown command carrying IgnoreUnknownFlag.
	Ignored bool `json:"ignored,omitempty"`
	// Err is why the command was refused; nil when it was applied.
	Err error `json:"-"`
}

// commandVersions is the current body version of each type: the version this
// node writes, and the highest it reads.
var commandVersions = map[CommandType]uint8{
	CmdSetGroupPhase:    1,
	CmdSetTopicPrimary:  1,
	CmdSetReverseMirror: 1,
	CmdAppendSegments:   1,
	CmdClaimWriter:      1,
	CmdReleaseWriter:    1,
	CmdRegisterNode:     1,
	CmdReportApplied:    1,
	CmdSetNodeDead:      1,
	CmdRemoveNode:       1,
	CmdFillSource:       1,
}

// decoders decode a body of a given version. One decoder per type serves all
// versions while only version 1 exists; a version 2 adds its own case.
var decoders = map[CommandType]func(version uint8, body []byte) (Command, error){
	CmdSetGroupPhase:    decodeJSON[SetGroupPhase],
	CmdSetTopicPrimary:  decodeJSON[SetTopicPrimary],
	CmdSetReverseMirror: decodeJSON[SetReverseMirror],
	CmdAppendSegments:   decodeJSON[AppendSegments],
	CmdClaimWriter:      decodeJSON[ClaimWriter],
	CmdReleaseWriter:    decodeJSON[ReleaseWriter],
	CmdRegisterNode:     decodeJSON[RegisterNode],
	CmdReportApplied:    decodeJSON[ReportApplied],
	CmdSetNodeDead:      decodeJSON[SetNodeDead],
	CmdRemoveNode:       decodeJSON[RemoveNode],
	CmdFillSource:       decodeJSON[FillSource],
}

// EncodeCommand encodes c as proposed at time at:
//
//	byte 0     type
//	byte 1     body version
//	bytes 2-9  proposal time, Unix nanoseconds, big-endian (0: none)
//	bytes 10-  body: the command as JSON
//
// The encoding is deterministic: encoding/json writes struct fields in
// declaration order and command bodies hold no maps or floats.
func EncodeCommand(c Command, at time.Time) ([]byte, error) {
	t := c.Type()
	v, ok := commandVersions[t]
	if !ok {
		return nil, fmt.Errorf("%w: type %d", ErrUnknownCommand, t)
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode command type %d: %w", t, err)
	}
	buf := make([]byte, headerLen, headerLen+len(body))
	buf[0], buf[1] = byte(t), v
	var nanos int64
	if !at.IsZero() {
		nanos = at.UnixNano()
	}
	binary.BigEndian.PutUint64(buf[2:], uint64(nanos))
	return append(buf, body...), nil
}

// errIgnored marks an unknown entry that carries IgnoreUnknownFlag.
var errIgnored = errors.New("ignored unknown command")

// DecodeCommand decodes an entry written by EncodeCommand.
func DecodeCommand(data []byte) (c Command, at time.Time, err error) {
	if len(data) < headerLen {
		return nil, time.Time{}, fmt.Errorf("%w: entry of %d bytes is shorter than its header", ErrBadCommand, len(data))
	}
	t, v := CommandType(data[0]), data[1]
	if nanos := int64(binary.BigEndian.Uint64(data[2:])); nanos != 0 {
		at = time.Unix(0, nanos).UTC()
	}
	dec, ok := decoders[t]
	if !ok || v == 0 || v > commandVersions[t] {
		if t&IgnoreUnknownFlag != 0 {
			return nil, at, fmt.Errorf("%w: type %d version %d", errIgnored, t, v)
		}
		return nil, at, fmt.Errorf("%w: type %d version %d", ErrUnknownCommand, t, v)
	}
	c, err = dec(v, data[headerLen:])
	if err != nil {
		return nil, at, fmt.Errorf("%w: type %d: %w", ErrBadCommand, t, err)
	}
	return c, at, nil
}

// decodeJSON decodes a JSON body strictly: a field this node does not know
// means a newer writer, whose meaning this node cannot honour, so it refuses
// the entry rather than apply part of it.
func decodeJSON[T Command](_ uint8, body []byte) (Command, error) {
	var c T
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the body")
	}
	return c, nil
}

// applyEntry decodes and applies one entry; it never panics on bad input and
// leaves s unchanged when it refuses the entry.
func applyEntry(s *state, data []byte, index uint64) Result {
	c, at, err := DecodeCommand(data)
	if errors.Is(err, errIgnored) {
		return Result{Index: index, Ignored: true}
	}
	if err != nil {
		return Result{Index: index, Err: err}
	}
	res := c.apply(s, applyCtx{index: index, at: at})
	res.Index = index
	if res.Err != nil {
		res.Changed = false
	}
	return res
}

func refuse(err error, format string, args ...any) Result {
	return Result{Err: fmt.Errorf("%w: "+format, append([]any{err}, args...)...)}
}
