package proxy

import (
	"context"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDescribeTopicPartitions (KIP-966, used by the Java admin client's
// describeTopics since 3.8) names leaders and replicas: all become the proxy.
func handleDescribeTopicPartitions(c *clientConn, r *protocol.Request) (finishFunc, error) {
	cl, err := c.forward(c.p.source.anyBroker(), r, r.Body, true)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		body, err := cl.wait(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := decodeResponse[kmsg.DescribeTopicPartitionsResponse](body, r.APIVersion)
		if err != nil {
			return nil, err
		}
		self := []int32{c.p.cfg.NodeID}
		for i := range resp.Topics {
			parts := resp.Topics[i].Partitions
			for j := range parts {
				pt := &parts[j]
				if pt.LeaderID >= 0 {
					pt.LeaderID = c.p.cfg.NodeID
				}
				pt.Replicas, pt.ISR = self, self
				pt.EligibleLeaderReplicas, pt.LastKnownELR, pt.OfflineReplicas = nil, nil, nil
			}
		}
		return resp.AppendTo(nil), nil
	}, nil
}
