package raftstore

import "time"

// StuckFlips returns the commands that revert every flip left half-done:
// a group or topic in an intermediate phase whose last change is older than
// the bound. A cutover's own run is bounded well below these (a topic holds
// produces for at most 10 s, a group drains for at most 30 s), so a route
// still in between after them was left by a node that died mid-flip: its
// held produces and JoinGroups would otherwise wait for an operator. The
// leader applies these; each is compare-and-set on the epoch it saw, so a
// cutover that moves on meanwhile wins.
func StuckFlips(r Reader, now time.Time, topicAfter, groupAfter time.Duration) []Command {
	var out []Command
	for _, t := range r.Topics() {
		var back ProducerPrimary
		switch t.Primary {
		case ProducerDraining:
			back = ProducerSource
		case ProducerRollingBack:
			back = ProducerTarget
		default:
			continue
		}
		if now.Sub(t.ChangedAt) > topicAfter {
			epoch := t.Epoch
			out = append(out, SetTopicPrimary{Topic: t.Topic, Primary: back, From: t.Primary, IfEpoch: &epoch})
		}
	}
	for _, g := range r.Groups() {
		var back GroupPhase
		switch g.Phase {
		case GroupDraining, GroupFenced:
			back = GroupSource
		case GroupRollbackDraining, GroupRollbackFenced:
			back = GroupTarget
		default:
			continue
		}
		if now.Sub(g.ChangedAt) > groupAfter {
			epoch := g.Epoch
			out = append(out, SetGroupPhase{Group: g.Group, Phase: back, From: g.Phase, IfEpoch: &epoch})
		}
	}
	return out
}
