package proxy

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Metrics are the proxy's Prometheus series. Histograms are looked up once
// per API key and kept, so the hot path does no label hashing.
type Metrics struct {
	connections prometheus.Gauge
	bytesIn     prometheus.Counter
	bytesOut    prometheus.Counter
	cutThrough  prometheus.Counter
	streamedIn  prometheus.Counter
	latency     *prometheus.HistogramVec
	byKey       [128]prometheus.Observer
	produceHold prometheus.Histogram
	// bufferedBytes is what client requests and their answers reserve
	// (memory.go); refusedConns counts connections closed at accept.
	bufferedBytes prometheus.Gauge
	refusedConns  prometheus.Counter
	reauth        *prometheus.CounterVec
	clientAuths   *prometheus.CounterVec
}

// NewMetrics registers the proxy's series with reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kmigrate_client_connections", Help: "Open client connections.",
		}),
		bytesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmigrate_client_bytes_in_total", Help: "Bytes received from clients, frames included.",
		}),
		bytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmigrate_client_bytes_out_total", Help: "Bytes sent to clients, frames included.",
		}),
		cutThrough: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmigrate_client_bytes_cut_through_total", Help: "Answer body bytes moved from an upstream socket straight to a client's without being read into memory (fetch answers needing no rewrite).",
		}),
		streamedIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmigrate_client_bytes_in_cut_through_total", Help: "Produce body bytes moved from a client's socket straight to an upstream broker's without being read into memory (produces whose route their head decides).",
		}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "kmigrate_request_duration_seconds",
			Help:    "Time from reading a client request to writing its response, per API and upstream cluster.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}, []string{"api", "cluster"}),
		produceHold: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kmigrate_produce_hold_seconds",
			Help:    "How long produces were held while their topic's producers flipped to the other cluster.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}),
		bufferedBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kmigrate_client_buffered_bytes", Help: "Bytes reserved by client requests in flight and their answers not yet written.",
		}),
		refusedConns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kmigrate_client_connections_refused_total", Help: "Client connections closed at once because their address had --max-connections-per-ip open.",
		}),
		reauth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmigrate_upstream_reauth_total",
			Help: "Upstream connections replaced by a newly authenticated one because the broker's SASL session (connections.max.reauth.ms, token expiry) was about to end.",
		}, []string{"cluster"}),
		clientAuths: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kmigrate_client_auth_total",
			Help: "Client authentications at the proxy by mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, TLS for client certificates; none: a request before any SaslHandshake; unsupported: a mechanism not offered) and result (success, failure).",
		}, []string{"mechanism", "result"}),
	}
	reg.MustRegister(m.connections, m.bytesIn, m.bytesOut, m.cutThrough, m.streamedIn, m.latency, m.produceHold, m.bufferedBytes, m.refusedConns, m.reauth, m.clientAuths)
	for key := range m.byKey {
		if name := kmsg.NameForKey(int16(key)); name != "Unknown" {
			m.byKey[key] = m.latency.WithLabelValues(name, "source")
		}
	}
	return m
}

func (m *Metrics) observe(key int16, d time.Duration) {
	if key >= 0 && int(key) < len(m.byKey) && m.byKey[key] != nil {
		m.byKey[key].Observe(d.Seconds())
		return
	}
	m.latency.WithLabelValues(strconv.Itoa(int(key)), "source").Observe(d.Seconds())
}

// upstreamRenewed counts one connection to cluster replaced before its SASL
// session ended.
func (m *Metrics) upstreamRenewed(cluster string) {
	m.reauth.WithLabelValues(cluster).Inc()
}

// clientAuth counts one client authentication. mechanism is one of the
// proxy's own names, never a client's string, to bound the series.
func (m *Metrics) clientAuth(mechanism, result string) {
	m.clientAuths.WithLabelValues(mechanism, result).Inc()
}
