package proxy

import (
	"context"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDescribeCluster shows the proxy as the only broker and the
// controller, like Metadata; grepplabs/kafka-proxy leaks upstream addresses
// here, which sends admin clients around the proxy.
func handleDescribeCluster(c *clientConn, r *protocol.Request) (finishFunc, error) {
	cl, err := c.forwardAny(r, r.Body)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		body, err := cl.wait(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := decodeResponse[kmsg.DescribeClusterResponse](body, r.APIVersion)
		if err != nil {
			return nil, err
		}
		b := kmsg.NewDescribeClusterResponseBroker()
		b.NodeID, b.Host, b.Port = c.p.cfg.NodeID, c.p.advHost, c.p.advPort
		resp.Brokers = []kmsg.DescribeClusterResponseBroker{b}
		resp.ControllerID = c.p.cfg.NodeID
		return resp.AppendTo(nil), nil
	}, nil
}
