package raftstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Applier proposes commands and reads the resulting state. Store and Memory
// implement it, so code that changes the state (the cutover, the writer
// assignment) can be tested on Memory.
type Applier interface {
	Apply(ctx context.Context, c Command) (Result, error)
	State() Reader
}

var _ Applier = (*Memory)(nil)

// Memory is the state machine without raft, for unit tests of other
// packages: each Apply encodes the command, applies it synchronously at the
// next index through the same code as a raft entry, and returns its Result.
type Memory struct {
	fsm *fsm
	mu  sync.Mutex
	idx uint64
	now func() time.Time
}

// NewMemory returns an empty state.
func NewMemory() *Memory { return &Memory{fsm: newFSM(nil), now: time.Now} }

// SetClock replaces the clock that stamps commands (tests of time-dependent
// callers).
func (m *Memory) SetClock(now func() time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = now
}

// Apply applies c and returns its Result, and Result.Err when refused.
func (m *Memory) Apply(ctx context.Context, c Command) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("raftstore: apply %s: %w", c.Type(), err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	data, err := EncodeCommand(c, m.now())
	if err != nil {
		return Result{}, fmt.Errorf("raftstore: apply: %w", err)
	}
	m.idx++
	res := m.fsm.Apply(&raft.Log{Index: m.idx, Type: raft.LogCommand, Data: data}).(Result)
	return res, res.Err
}

// State returns the state.
func (m *Memory) State() Reader { return m.fsm }

// Dump returns a deep copy of the state.
func (m *Memory) Dump() Dump { return m.fsm.Dump() }

// WaitApplied returns at once for an index already applied, else waits
// for it like Store.WaitApplied.
func (m *Memory) WaitApplied(ctx context.Context, index uint64) error {
	return m.fsm.waitApplied(ctx, index, nil)
}
