package proxy

import (
	"context"
	"sync"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handler starts serving one request: it decides where the request goes and
// writes it upstream (synchronously, on the connection's reader goroutine, so
// upstream order equals client order), and returns how to build the answer.
// A nil finishFunc means the request has no response.
type handler func(c *clientConn, r *protocol.Request) (finishFunc, error)

const (
	fetchKey       = 1
	apiVersionsKey = 18
)

// route says how each API key the proxy serves reaches upstream. A key absent
// here is neither advertised in ApiVersions nor accepted.
var routes map[int16]handler

// init breaks the cycle routes → handleApiVersions → apiVersions → routes.
func init() { routes = routeTable() }

func routeTable() map[int16]handler {
	return map[int16]handler{
		0:  handleProduce,
		1:  handleFetch,
		2:  handleListOffsets,
		3:  handleMetadata,
		8:  groupRouted(func(r *kmsg.OffsetCommitRequest) string { return r.Group }),
		9:  handleOffsetFetch,
		10: handleFindCoordinator,
		11: handleJoinGroup,
		12: groupRouted(func(r *kmsg.HeartbeatRequest) string { return r.Group }),
		13: groupRouted(func(r *kmsg.LeaveGroupRequest) string { return r.Group }),
		14: groupRouted(func(r *kmsg.SyncGroupRequest) string { return r.Group }),
		15: handleDescribeGroups,
		16: handleListGroups,
		17: handleSASLHandshake,
		18: handleApiVersions,
		19: toAnyBroker, // CreateTopics: brokers forward to the KRaft controller
		20: toAnyBroker, // DeleteTopics
		21: handleDeleteRecords,
		22: handleInitProducerID,
		23: handleOffsetForLeaderEpoch,
		24: handleAddPartitionsToTxn,
		25: handleAddOffsetsToTxn,
		26: handleEndTxn,
		28: groupRouted(func(r *kmsg.TxnOffsetCommitRequest) string { return r.Group }),
		29: toAnyBroker, // DescribeAcls
		30: toAnyBroker, // CreateAcls
		31: toAnyBroker, // DeleteAcls
		32: toAnyBroker, // DescribeConfigs
		33: toAnyBroker, // AlterConfigs
		35: toAnyBroker, // DescribeLogDirs
		36: handleSASLAuthenticate,
		37: toAnyBroker, // CreatePartitions
		42: handleDeleteGroups,
		43: toAnyBroker, // ElectLeaders
		44: toAnyBroker, // IncrementalAlterConfigs
		45: toAnyBroker, // AlterPartitionReassignments
		46: toAnyBroker, // ListPartitionReassignments
		47: groupRouted(func(r *kmsg.OffsetDeleteRequest) string { return r.Group }),
		48: toAnyBroker, // DescribeClientQuotas
		49: toAnyBroker, // AlterClientQuotas
		50: toAnyBroker, // DescribeUserScramCredentials
		51: toAnyBroker, // AlterUserScramCredentials
		55: toAnyBroker, // DescribeQuorum: brokers forward to the controller
		60: handleDescribeCluster,
		61: handleDescribeProducers,
		65: handleDescribeTransactions,
		66: handleListTransactions,
		68: groupRouted(func(r *kmsg.ConsumerGroupHeartbeatRequest) string { return r.Group }),
		69: handleConsumerGroupDescribe,
		74: toAnyBroker, // ListConfigResources
		75: handleDescribeTopicPartitions,
	}
}

// versionCaps lower the version the proxy advertises below what kmsg knows,
// where a newer version changes who may send the request.
var versionCaps = map[int16]int16{
	// v4+ batches transactions for broker-to-broker use (KIP-890);
	// clients send v3 or lower.
	24: 3,
}

// targetVersionCaps apply when groups can move: topic ids differ between
// the clusters, so group requests that name topics by id would name
// unknown topics on the other cluster. Versions naming topics by name are
// served instead (every client falls back to them).
var targetVersionCaps = map[int16]int16{
	// Produce v13 uses topic ids; v12 and EndTxn v5 are transactions V2
	// (KIP-890), whose epoch bump at every EndTxn the mapping of moved
	// transactional ids does not follow (txn.go).
	0:  11,
	26: 4,
	1:  12, // Fetch v13 uses topic ids
	8:  9,  // OffsetCommit v10 uses topic ids
	9:  9,  // OffsetFetch v10 uses topic ids
	28: 5,  // TxnOffsetCommit v6 uses topic ids
}

func handlerFor(key int16) handler { return routes[key] }

// apiVersionTable is what the proxy answers in ApiVersions: for each routed
// key, the versions both the proxy (kmsg) and the upstream cluster support.
type apiVersionTable struct {
	once     sync.Once
	versions map[int16][2]int16
}

func (p *Proxy) apiVersions() map[int16][2]int16 {
	p.versionTable.once.Do(func() {
		m := make(map[int16][2]int16)
		for key := range routes {
			if key == apiVersionsKey {
				// Answered by the proxy itself, whatever upstream has.
				m[key] = [2]int16{0, min16(4, kmsg.NewPtrApiVersionsRequest().MaxVersion())}
				continue
			}
			if v, ok := saslVersions[key]; ok && p.cfg.ClientSASL != nil {
				m[key] = v // the proxy authenticates clients itself
				continue
			}
			umin, umax, ok := p.source.supports(key)
			if !ok {
				continue
			}
			if p.target != nil {
				// Clients may be routed to either cluster mid-session.
				tmin, tmax, ok := p.target.supports(key)
				if !ok {
					continue
				}
				umin, umax = max(umin, tmin), min16(umax, tmax)
			}
			hi := min16(umax, kmsg.RequestForKey(key).MaxVersion())
			if c, ok := versionCaps[key]; ok {
				hi = min16(hi, c)
			}
			if c, ok := targetVersionCaps[key]; ok && p.target != nil {
				hi = min16(hi, c)
			}
			if key == fetchKey && !p.cfg.FetchLeaderHints {
				hi = min16(hi, maxCutThroughFetch)
			}
			if umin <= hi {
				m[key] = [2]int16{umin, hi}
			}
		}
		p.versionTable.versions = m
	})
	return p.versionTable.versions
}

func (p *Proxy) versionAllowed(key, version int16) bool {
	v, ok := p.apiVersions()[key]
	return ok && version >= v[0] && version <= v[1]
}

// toAnyBroker forwards unchanged to one broker: for admin requests that any
// broker accepts (and forwards to the KRaft controller where needed).
func toAnyBroker(c *clientConn, r *protocol.Request) (finishFunc, error) {
	cl, _, err := c.forwardAny(r, r.Body)
	if err != nil {
		return nil, err
	}
	return cl.wait, nil
}

// respondBody answers with an encoded body.
func respondBody(body []byte) finishFunc {
	return func(context.Context) ([]byte, error) { return body, nil }
}

// respond wraps a response the proxy built itself.
func respond(resp kmsg.Response) finishFunc {
	body := resp.AppendTo(nil)
	return func(context.Context) ([]byte, error) { return body, nil }
}

// rewritten forwards a request any broker can serve and rewrites its
// answer before the client sees it.
func rewritten[S any, PS interface {
	*S
	kmsg.Response
}](c *clientConn, r *protocol.Request, rewrite func(PS, *cluster)) (finishFunc, error) {
	cl, from, err := c.forwardAny(r, r.Body)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]byte, error) {
		body, err := cl.wait(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := decodeResponse[S, PS](body, r.APIVersion)
		if err != nil {
			return nil, err
		}
		rewrite(resp, from)
		return resp.AppendTo(nil), nil
	}, nil
}
