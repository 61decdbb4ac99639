package proxy

import (
	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDescribeTopicPartitions (KIP-966, used by the Java admin client's
// describeTopics since 3.8) names leaders and replicas: all become the proxy.
func handleDescribeTopicPartitions(c *clientConn, r *protocol.Request) (finishFunc, error) {
	return rewritten(c, r, func(resp *kmsg.DescribeTopicPartitionsResponse, _ *cluster) {
		self := []int32{c.p.cfg.NodeID}
		for i := range resp.Topics {
			parts := resp.Topics[i].Partitions
			for j := range parts {
				pt := &parts[j]
				if pt.LeaderID >= 0 {
					pt.LeaderID = c.p.cfg.NodeID
				}
				pt.Replicas, pt.ISR = self, self
				pt.EligibleLeaderReplicas = asSelf(pt.EligibleLeaderReplicas, self)
				pt.LastKnownELR = asSelf(pt.LastKnownELR, self)
				pt.OfflineReplicas = []int32{}
			}
		}
	})
}

// asSelf maps a replica list onto the proxy: null stays null (the Java
// client reads null and empty differently), a non-empty list becomes the
// proxy alone.
func asSelf(ids, self []int32) []int32 {
	switch {
	case ids == nil:
		return nil
	case len(ids) == 0:
		return []int32{}
	default:
		return self
	}
}
