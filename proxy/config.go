package proxy

import (
	"context"
	"crypto/tls"
	"log/slog"

	"github.com/kmigrate/kmigrate/offsetsync"
	"github.com/twmb/franz-go/pkg/sasl"
)

// Config describes one proxy instance: where it listens, what it advertises
// to clients, and how it reaches the upstream cluster.
type Config struct {
	// Listen is the client-facing address, e.g. "127.0.0.1:9092" or
	// "127.0.0.1:0" for a free port.
	Listen string
	// Advertise is the host:port clients are told to connect to in every
	// Metadata, FindCoordinator and DescribeCluster answer. Empty means the
	// address the listener actually bound.
	Advertise string
	// NodeID is the broker id the proxy presents itself as.
	NodeID int32
	// ClientTLS, when set, makes the client listener speak TLS. With
	// ClientAuth tls.RequireAndVerifyClientCert it authenticates clients by
	// certificate (mTLS).
	ClientTLS *tls.Config
	// ClientSASL, when set, makes every client authenticate with SASL
	// before any other request is served (sasl.go).
	ClientSASL *ClientSASL
	// MaxFrameBytes bounds a single request or response frame; 0 means
	// protocol.DefaultMaxFrameBytes (100 MiB, Kafka's socket.request.max.bytes).
	MaxFrameBytes int32
	// MaxInFlight bounds the requests one client connection may have
	// outstanding; the proxy stops reading from that client beyond it.
	// 0 means DefaultMaxInFlight.
	MaxInFlight int
	// MaxBufferBytes bounds the bytes all client requests in flight and
	// their unwritten answers may reserve; MaxConnBufferBytes the same per
	// connection (memory.go). 0 means DefaultMaxBufferBytes (1 GiB) and
	// DefaultMaxConnBufferBytes (64 MiB).
	MaxBufferBytes     int64
	MaxConnBufferBytes int64
	// MaxConnectionsPerIP closes, at accept, a connection from an address
	// that has this many open (Kafka's max.connections.per.ip); 0 means
	// no limit.
	MaxConnectionsPerIP int
	// FetchLeaderHints serves Fetch v16+, whose answers may carry KIP-951
	// leader hints the proxy must rewrite, so every fetch answer is read
	// into memory. Off (the default), Fetch is served up to v15 and
	// answers are cut through from the upstream socket (cutthrough.go).
	FetchLeaderHints bool
	// Source is the cluster the proxy forwards to.
	Source Upstream
	// Target, when set, is the cluster consumer groups move to.
	Target *Upstream
	// Routing says where each consumer group is served; nil keeps every
	// group on the source.
	Routing Routing
	// Maps gives a partition's offset map, to translate the committed
	// offsets of groups served by the target.
	Maps OffsetMaps
	// Covered waits until the mirror has copied everything before virtual
	// position v of a partition, so that a commit at v can be translated.
	Covered func(ctx context.Context, topic string, partition int32, v int64) error
	// PeerMovedMembers, with several nodes, lists the members of a group
	// the other nodes sent to its new home in a flip and still wait for
	// there (their Proxy.MovedMembers), so that a generation without them
	// is not synced through this node (moved.go); nil on a single node.
	PeerMovedMembers func(ctx context.Context, group string) []MovedMember
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
	// SyncProduce holds each Produce answer until Mirror reports its
	// records in the target (produce.mode=sync); past the request's timeout
	// the partition is answered REQUEST_TIMED_OUT, which clients retry.
	SyncProduce bool
	Mirror      MirrorWaiter
	// Feed, when set, gets every batch the source acknowledged through
	// this proxy, with its offset, for the mirror to copy without waiting
	// for its fetch (the dual-write path, replicate/feed.go).
	Feed MirrorFeeder
	// Metrics receives the proxy's Prometheus series; nil means a private
	// registry nobody scrapes.
	Metrics *Metrics
}

// Upstream is how the proxy reaches one Kafka cluster.
type Upstream struct {
	Name      string   // "source" or "target", used in logs and metrics
	Bootstrap []string // host:port seeds
	TLS       *tls.Config
	SASL      sasl.Mechanism // nil for no SASL
}

// Routing reports a consumer group's phase: "source", "draining", "fenced",
// "target", "rollback-draining" or "rollback-fenced" (see offsetsync's
// cutover sequence).
type Routing interface {
	GroupPhase(group string) string
	// TopicPrimary is the cluster taking a topic's produces: "source",
	// "draining" (a flip holds them), "target" or "rolling-back".
	TopicPrimary(topic string) string
	// TopicEpoch counts the changes of a topic's primary (0: never moved).
	TopicEpoch(topic string) uint64
}

// OffsetMaps reads offset maps.
type OffsetMaps interface {
	OffsetMap(topic string, partition int32) offsetsync.OffsetMap
}

// MirrorFeeder takes records the source just acknowledged at baseOffset
// (logAppendTime from the Produce answer, -1 for CreateTime). It must not
// block and may ignore them.
type MirrorFeeder interface {
	Feed(topic string, partition int32, baseOffset, logAppendTime int64, records []byte)
}

// MirrorWaiter reports when a source offset has reached the target.
type MirrorWaiter interface {
	WaitMirrored(ctx context.Context, topic string, partition int32, offset int64) error
}

// DefaultMaxInFlight is the per-connection bound on outstanding requests.
const DefaultMaxInFlight = 128
