package proxy

import (
	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDescribeCluster shows the proxy as the only broker and the
// controller, like Metadata; grepplabs/kafka-proxy leaks upstream addresses
// here, which sends admin clients around the proxy.
func handleDescribeCluster(c *clientConn, r *protocol.Request) (finishFunc, error) {
	return rewritten(c, r, func(resp *kmsg.DescribeClusterResponse, _ *cluster) {
		b := kmsg.NewDescribeClusterResponseBroker()
		b.NodeID, b.Host, b.Port = c.p.cfg.NodeID, c.p.advHost, c.p.advPort
		resp.Brokers = []kmsg.DescribeClusterResponseBroker{b}
		resp.ControllerID = c.p.cfg.NodeID
	})
}
