package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// bootstrapBroker is the pseudo broker id of "any seed broker" before the
// proxy knows real ids.
const bootstrapBroker int32 = -1

// cluster is the proxy's view of one upstream cluster: its brokers, who leads
// each partition, who coordinates each group and transactional id, and what
// API versions it speaks. The view is fed by the Metadata responses clients
// receive through the proxy and by the proxy's own control requests.
type cluster struct {
	up      Upstream
	log     *slog.Logger
	maxResp int32

	mu              sync.RWMutex
	brokers         map[int32]string // node id → host:port
	topics          map[string]*topicRoute
	topicNames      map[[16]byte]string
	coordinators    map[coordinatorKey]int32
	versions        map[int16][2]int16 // key → [min, max] the cluster supports
	apiVersionsResp *kmsg.ApiVersionsResponse

	controlMu sync.Mutex // one control connection, redialled on failure
	control   *brokerConn

	metrics *Metrics // nil in tests that build a cluster alone
}

type topicRoute struct {
	id      [16]byte
	leaders []int32 // index is the partition; -1 when leaderless
}

type coordinatorKey struct {
	keyType int8 // 0 group, 1 transaction
	key     string
}

func newCluster(up Upstream, log *slog.Logger, maxResp int32) *cluster {
	return &cluster{
		up:           up,
		log:          log.With("cluster", up.Name),
		maxResp:      maxResp,
		brokers:      make(map[int32]string),
		topics:       make(map[string]*topicRoute),
		topicNames:   make(map[[16]byte]string),
		coordinators: make(map[coordinatorKey]int32),
	}
}

// start learns the cluster's API versions and brokers; the proxy refuses to
// start without them because it could not answer ApiVersions truthfully.
func (cl *cluster) start(ctx context.Context) error {
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 3
	req.ClientSoftwareName = "kmigrate"
	req.ClientSoftwareVersion = "dev"
	resp, err := cl.controlRequest(ctx, req)
	if err != nil {
		return fmt.Errorf("api versions of %s: %w", cl.up.Name, err)
	}
	av := resp.(*kmsg.ApiVersionsResponse)
	if err := kerr.ErrorForCode(av.ErrorCode); err != nil {
		return fmt.Errorf("api versions of %s: %w", cl.up.Name, err)
	}
	versions := make(map[int16][2]int16, len(av.ApiKeys))
	for _, k := range av.ApiKeys {
		versions[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
	}
	cl.mu.Lock()
	cl.versions = versions
	cl.apiVersionsResp = av
	cl.mu.Unlock()
	return cl.refreshMetadata(ctx, nil)
}

// features returns the cluster's ApiVersions answer for its feature
// fields (KIP-584).
func (cl *cluster) features() *kmsg.ApiVersionsResponse {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	return cl.apiVersionsResp
}

// supports returns the versions of key the cluster accepts.
func (cl *cluster) supports(key int16) (min, max int16, ok bool) {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	v, ok := cl.versions[key]
	return v[0], v[1], ok
}

// controlRequest sends a request the proxy itself needs (metadata,
// coordinators) on the shared control connection, at the highest version both
// sides know.
func (cl *cluster) controlRequest(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	if req.Key() != 18 {
		_, max, ok := cl.supports(req.Key())
		if !ok {
			return nil, fmt.Errorf("%s does not support %s", cl.up.Name, kmsg.NameForKey(req.Key()))
		}
		req.SetVersion(min16(max, req.MaxVersion()))
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	bc, err := cl.controlConn(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := bc.roundTrip(ctx, req)
	if err != nil {
		bc.close(err)
		return nil, err
	}
	return resp, nil
}

func (cl *cluster) controlConn(ctx context.Context) (*brokerConn, error) {
	cl.controlMu.Lock()
	defer cl.controlMu.Unlock()
	if cl.control != nil && cl.control.usable() {
		return cl.control, nil
	}
	var lastErr error
	for _, addr := range cl.dialCandidates() {
		bc, err := dialBroker(ctx, &cl.up, addr, 16, cl.maxResp)
		if err == nil {
			// The proxy's own requests need no order between them: the
			// old connection just finishes what it has.
			if old := cl.control; old != nil && old.renewing() {
				old.retire()
				if cl.metrics != nil {
					cl.metrics.upstreamRenewed(cl.up.Name)
				}
			}
			cl.control = bc
			return bc, nil
		}
		lastErr = err
	}
	return nil, fmt.Errorf("no %s broker reachable: %w", cl.up.Name, lastErr)
}

// dialCandidates lists known brokers first, then the seeds, so that a seed
// list naming brokers that have since left does not stop the proxy.
func (cl *cluster) dialCandidates() []string {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	var out []string
	for _, id := range cl.sortedBrokerIDs() {
		out = append(out, cl.brokers[id])
	}
	return append(out, cl.up.Bootstrap...)
}

func (cl *cluster) sortedBrokerIDs() []int32 {
	ids := make([]int32, 0, len(cl.brokers))
	for id := range cl.brokers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// brokerAddr returns the address to dial for an upstream broker id.
func (cl *cluster) brokerAddr(id int32) (string, bool) {
	if id == bootstrapBroker {
		return cl.up.Bootstrap[0], true
	}
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	addr, ok := cl.brokers[id]
	return addr, ok
}

// anyBroker is where requests without a natural owner go (admin requests,
// Metadata): the lowest live broker id, so that one client's such requests
// share a connection.
func (cl *cluster) anyBroker() int32 {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	ids := cl.sortedBrokerIDs()
	if len(ids) == 0 {
		return bootstrapBroker
	}
	return ids[0]
}

// allBrokers lists every known broker, for requests that must be broadcast.
func (cl *cluster) allBrokers() []int32 {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	ids := cl.sortedBrokerIDs()
	if len(ids) == 0 {
		return []int32{bootstrapBroker}
	}
	return ids
}

// refreshMetadata asks the cluster for topics (nil: all) and learns from
// the answer.
func (cl *cluster) refreshMetadata(ctx context.Context, topics []string) error {
	req := kmsg.NewPtrMetadataRequest()
	if topics != nil {
		for _, t := range topics {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(t)
			req.Topics = append(req.Topics, rt)
		}
	}
	resp, err := cl.controlRequest(ctx, req)
	if err != nil {
		return fmt.Errorf("metadata from %s: %w", cl.up.Name, err)
	}
	cl.learnMetadata(resp.(*kmsg.MetadataResponse), topics == nil)
	return nil
}

// learnMetadata records brokers and leaders from an upstream Metadata answer
// (before the proxy rewrites it for the client). With complete set, topics
// absent from the answer are forgotten.
func (cl *cluster) learnMetadata(resp *kmsg.MetadataResponse, complete bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(resp.Brokers) > 0 {
		brokers := make(map[int32]string, len(resp.Brokers))
		for _, b := range resp.Brokers {
			brokers[b.NodeID] = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		}
		cl.brokers = brokers
	}
	if complete {
		cl.topics = make(map[string]*topicRoute)
		cl.topicNames = make(map[[16]byte]string)
	}
	for _, t := range resp.Topics {
		if t.Topic == nil {
			continue
		}
		if t.ErrorCode != 0 {
			if t.ErrorCode == kerr.UnknownTopicOrPartition.Code {
				delete(cl.topics, *t.Topic)
			}
			continue
		}
		route := &topicRoute{id: t.TopicID}
		maxPartition := int32(-1)
		for _, p := range t.Partitions {
			maxPartition = max(maxPartition, p.Partition)
		}
		route.leaders = make([]int32, maxPartition+1)
		for i := range route.leaders {
			route.leaders[i] = -1
		}
		for _, p := range t.Partitions {
			route.leaders[p.Partition] = p.Leader
		}
		cl.topics[*t.Topic] = route
		if t.TopicID != ([16]byte{}) {
			cl.topicNames[t.TopicID] = *t.Topic
		}
	}
}

// leader returns the upstream broker leading topic/partition, refreshing
// the view once on a miss. Unknown leaders route to any broker, which then
// answers the client with the proper error (UNKNOWN_TOPIC_OR_PARTITION,
// NOT_LEADER_OR_FOLLOWER) that the client already knows how to handle.
func (cl *cluster) leader(ctx context.Context, topic string, partition int32) int32 {
	if id, ok := cl.cachedLeader(topic, partition); ok {
		return id
	}
	if err := cl.refreshMetadata(ctx, []string{topic}); err != nil {
		warnOnce.warn(cl.log, "leader lookup failed", "topic", topic, "partition", partition, "err", err)
	}
	if id, ok := cl.cachedLeader(topic, partition); ok {
		return id
	}
	return cl.anyBroker()
}

func (cl *cluster) cachedLeader(topic string, partition int32) (int32, bool) {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	route := cl.topics[topic]
	if route == nil || partition < 0 || int(partition) >= len(route.leaders) {
		return 0, false
	}
	id := route.leaders[partition]
	_, known := cl.brokers[id]
	return id, id >= 0 && known
}

// soleLeader reports the broker leading every partition of topic, when
// one does and the cache knows it (a single-broker cluster, a topic of one
// partition): a request for that topic alone goes there whichever
// partitions it names.
func (cl *cluster) soleLeader(topic string) (int32, bool) {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	route := cl.topics[topic]
	if route == nil || len(route.leaders) == 0 {
		return 0, false
	}
	id := route.leaders[0]
	for _, l := range route.leaders[1:] {
		if l != id {
			return 0, false
		}
	}
	_, known := cl.brokers[id]
	return id, id >= 0 && known
}

// topicName resolves a topic id (Fetch v13+, Produce v13+), refreshing once.
func (cl *cluster) topicName(ctx context.Context, id [16]byte) (string, bool) {
	cl.mu.RLock()
	name, ok := cl.topicNames[id]
	cl.mu.RUnlock()
	if ok {
		return name, true
	}
	if err := cl.refreshMetadata(ctx, nil); err != nil {
		warnOnce.warn(cl.log, "topic id lookup failed", "err", err)
	}
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	name, ok = cl.topicNames[id]
	return name, ok
}

// topicID is the id this cluster gave a topic, as last seen.
func (cl *cluster) topicID(name string) ([16]byte, bool) {
	cl.mu.RLock()
	defer cl.mu.RUnlock()
	route := cl.topics[name]
	if route == nil || route.id == ([16]byte{}) {
		return [16]byte{}, false
	}
	return route.id, true
}

// coordinator returns the broker coordinating a group (keyType 0) or a
// transactional id (keyType 1), from cache unless fresh is set. When the
// cluster has no coordinator yet, the request goes to any broker, which
// answers NOT_COORDINATOR and makes the client look again.
func (cl *cluster) coordinator(ctx context.Context, keyType int8, key string, fresh bool) (int32, int16) {
	ck := coordinatorKey{keyType, key}
	if !fresh {
		cl.mu.RLock()
		id, ok := cl.coordinators[ck]
		cl.mu.RUnlock()
		if ok {
			return id, 0
		}
	}
	req := kmsg.NewPtrFindCoordinatorRequest()
	req.CoordinatorType = keyType
	req.CoordinatorKey = key
	req.CoordinatorKeys = []string{key}
	resp, err := cl.controlRequest(ctx, req)
	if err != nil {
		warnOnce.warn(cl.log, "coordinator lookup failed", "key", key, "type", keyType, "err", err)
		return cl.anyBroker(), kerr.CoordinatorNotAvailable.Code
	}
	fc := resp.(*kmsg.FindCoordinatorResponse)
	id, code, host, port := fc.NodeID, fc.ErrorCode, fc.Host, fc.Port
	if fc.Version >= 4 {
		if len(fc.Coordinators) != 1 {
			return cl.anyBroker(), kerr.CoordinatorNotAvailable.Code
		}
		c := fc.Coordinators[0]
		id, code, host, port = c.NodeID, c.ErrorCode, c.Host, c.Port
	}
	if code != 0 {
		return cl.anyBroker(), code
	}
	cl.mu.Lock()
	cl.coordinators[ck] = id
	if _, ok := cl.brokers[id]; !ok {
		cl.brokers[id] = net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	cl.mu.Unlock()
	return id, 0
}

func min16(a, b int16) int16 {
	if a < b {
		return a
	}
	return b
}
