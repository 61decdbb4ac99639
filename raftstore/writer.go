package raftstore

import (
	"context"
	"errors"
	"fmt"
	"github.com/kmigrate/kmigrate/offsetsync"
)

// AssignWriter makes node the mirror writer of tp, taking the partition from
// its current owner if any. It is meant for the leader (Apply refuses on
// followers): it reads the current epoch locally and claims with it, so if
// another claim got in first the compare-and-set fails with ErrEpochMismatch
// instead of two nodes both believing they own the partition. A node that
// already owns tp keeps it at the same epoch (no needless fencing of a
// healthy writer).
func AssignWriter(ctx context.Context, a Applier, tp TopicPartition, node string) (WriterOwner, error) {
	cur, _ := a.State().Writer(tp)
	if cur.Node == node {
		return cur, nil
	}
	res, err := a.Apply(ctx, ClaimWriter{TopicPartition: tp, Node: node, IfEpoch: cur.Epoch})
	if err != nil {
		return WriterOwner{}, fmt.Errorf("assign writer of %s/%d to %s: %w", tp.Topic, tp.Partition, node, err)
	}
	w, _ := a.State().Writer(tp)
	if w.Epoch != res.Epoch || w.Node != node {
		// Applied, then moved again before we read it: report what we won.
		w = WriterOwner{TopicPartition: tp, Node: node, Epoch: res.Epoch}
	}
	return w, nil
}

// CheckWriter reports whether node still holds tp at epoch in r: a writer
// calls it before each write to the target, and stops on ErrStaleWriter.
func CheckWriter(r Reader, tp TopicPartition, node string, epoch uint64) error {
	w, _ := r.Writer(tp)
	if w.Node != node || w.Epoch != epoch {
		return fmt.Errorf("%w: %s/%d is owned by %q at epoch %d, not %q at epoch %d",
			ErrStaleWriter, tp.Topic, tp.Partition, w.Node, w.Epoch, node, epoch)
	}
	return nil
}

// IsRefusal reports whether err is a command the state machine refused (as
// opposed to a failure to reach the leader or commit).
func IsRefusal(err error) bool {
	for _, e := range []error{ErrUnknownCommand, ErrBadCommand, ErrEpochMismatch, ErrPhaseMismatch,
		ErrInvalidTransition, ErrStaleWriter, ErrUnknownNode, ErrNodeDead, offsetsync.ErrSegment} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
