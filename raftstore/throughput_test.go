package raftstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/offsetsync"
)

// BenchmarkApplyThroughput measures how many commands per second the leader
// commits when 64 proposers apply concurrently (raft batches what arrives
// while the previous batch is written: up to 64 entries per fsync), with 1
// and 3 voters on loopback, raft's default timing, fsync'd bolt logs. Each
// command is a writer's map append (one segment that does not merge, as
// after a compaction gap), so segments/s is also entries/s; batched=N puts N
// partitions in one AppendSegments, as a mirror flushing N partitions does.
//
//	go test -run '^$' -bench ApplyThroughput -benchtime 5s ./raftstore
func BenchmarkApplyThroughput(b *testing.B) {
	for _, c := range []struct{ voters, perEntry int }{{1, 1}, {3, 1}, {3, 16}} {
		b.Run(fmt.Sprintf("voters=%d/batched=%d", c.voters, c.perEntry), func(b *testing.B) {
			defaults := func(cfg *Config) { cfg.Tune = nil; cfg.ReportInterval = -1 }
			n1 := startNode(b, "t1", b.TempDir(), "", true, "", defaults)
			waitLeader(b, n1)
			nodes := []*testNode{n1}
			for i := 2; i <= c.voters; i++ {
				nodes = append(nodes, startNode(b, fmt.Sprintf("t%d", i), b.TempDir(), "", true, n1.srv.Listener.Addr().String(), defaults))
			}
			defer func() {
				for _, n := range nodes {
					_ = n.Close()
					n.srv.Close()
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			const proposers = 64
			// Each proposer writes its own partitions.
			epochs := make([][]uint64, proposers)
			for p := range proposers {
				for k := range c.perEntry {
					res, err := n1.Apply(ctx, ClaimWriter{TopicPartition: TopicPartition{"bench", int32(p*c.perEntry + k)}, Node: "t1"})
					if err != nil {
						b.Fatal(err)
					}
					epochs[p] = append(epochs[p], res.Epoch)
				}
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, proposers)
			b.ResetTimer()
			start := time.Now()
			for p := range proposers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := int64(0); ; i++ {
						if next.Add(1) > int64(b.N) {
							return
						}
						parts := make([]PartitionAppend, c.perEntry)
						for k := range parts {
							parts[k] = PartitionAppend{TopicPartition: TopicPartition{"bench", int32(p*c.perEntry + k)}, Epoch: epochs[p][k],
								Segments: []offsetsync.Segment{{Virtual: 2 * i, Source: 2 * i, Target: i, Length: 1}}}
						}
						if _, err := n1.Apply(ctx, AppendSegments{Node: "t1", Partitions: parts}); err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			took := time.Since(start)
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/took.Seconds(), "entries/s")
			b.ReportMetric(float64(b.N*c.perEntry)/took.Seconds(), "segments/s")
		})
	}
}
