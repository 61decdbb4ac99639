package proxy

import (
	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleFindCoordinator answers locally: the coordinator a client sees is
// always the proxy. The upstream coordinator is looked up afresh (a client
// asks only after losing its coordinator) and remembered for routing; an
// upstream error such as COORDINATOR_NOT_AVAILABLE is passed on so the
// client retries as it would against the cluster.
func handleFindCoordinator(c *clientConn, r *protocol.Request) (finishFunc, error) {
	req, err := decodeRequest[kmsg.FindCoordinatorRequest](r)
	if err != nil {
		return nil, err
	}
	resp := kmsg.NewPtrFindCoordinatorResponse()
	resp.Version = r.APIVersion
	keys := req.CoordinatorKeys
	if r.APIVersion < 4 {
		keys = []string{req.CoordinatorKey}
	}
	for _, key := range keys {
		home := c.p.source
		if req.CoordinatorType == 0 {
			home = c.p.homeOf(c.p.groupPhase(key)) // a moved group's coordinator is the target's
		}
		_, code := home.coordinator(c.ctx, req.CoordinatorType, key, true)
		co := kmsg.NewFindCoordinatorResponseCoordinator()
		co.Key, co.ErrorCode = key, code
		co.NodeID, co.Host, co.Port = c.p.cfg.NodeID, c.p.advHost, c.p.advPort
		if code != 0 {
			co.NodeID, co.Host, co.Port = -1, "", -1
		}
		resp.Coordinators = append(resp.Coordinators, co)
	}
	if r.APIVersion < 4 && len(resp.Coordinators) == 1 {
		co := resp.Coordinators[0]
		resp.ErrorCode, resp.NodeID, resp.Host, resp.Port = co.ErrorCode, co.NodeID, co.Host, co.Port
		resp.Coordinators = nil
	}
	return respond(resp), nil
}
