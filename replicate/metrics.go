package replicate

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	descLagRecords = prometheus.NewDesc("kmigrate_mirror_lag_records",
		"Committed source records not yet acknowledged by the target (transaction markers and aborted records at the tail count until the next record).",
		[]string{"topic", "partition"}, nil)
	descLagSeconds = prometheus.NewDesc("kmigrate_mirror_lag_seconds",
		"Time since the partition was last fully mirrored; 0 while caught up.",
		[]string{"topic", "partition"}, nil)
	descRecords = prometheus.NewDesc("kmigrate_mirror_records_total",
		"Records copied to the target.", []string{"topic", "partition"}, nil)
	descBytes = prometheus.NewDesc("kmigrate_mirror_bytes_total",
		"Key, value and header bytes copied to the target.", []string{"topic", "partition"}, nil)
	descSegments = prometheus.NewDesc("kmigrate_mirror_map_segments",
		"Segments in the partition's offset map.", []string{"topic", "partition"}, nil)
	descFedRecords = prometheus.NewDesc("kmigrate_mirror_fed_records_total",
		"Records copied from the proxy's Produce path (dual-write) rather than fetched from the source.", nil, nil)
	descFedDropped = prometheus.NewDesc("kmigrate_mirror_fed_dropped_total",
		"Fed batches left to the source fetch: not contiguous with the mirror, transactional, or the queue full.", nil, nil)
)

// Describe implements prometheus.Collector: the mirror reports from its own
// state at scrape time, so copying a record updates no metric.
func (m *Mirror) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLagRecords, descLagSeconds, descRecords, descBytes, descSegments, descFedRecords, descFedDropped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Mirror) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descFedRecords, prometheus.CounterValue, float64(m.fedRecords))
	ch <- prometheus.MustNewConstMetric(descFedDropped, prometheus.CounterValue, float64(m.fedDropped))
	for tp, st := range m.parts {
		labels := []string{tp.Topic, strconv.Itoa(int(tp.Partition))}
		lag := st.lag()
		lagSeconds := 0.0
		if lag > 0 && !st.caughtUpAt.IsZero() {
			lagSeconds = now.Sub(st.caughtUpAt).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(descLagRecords, prometheus.GaugeValue, float64(lag), labels...)
		ch <- prometheus.MustNewConstMetric(descLagSeconds, prometheus.GaugeValue, lagSeconds, labels...)
		ch <- prometheus.MustNewConstMetric(descRecords, prometheus.CounterValue, float64(st.copied), labels...)
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(st.bytes), labels...)
		ch <- prometheus.MustNewConstMetric(descSegments, prometheus.GaugeValue, float64(st.segments), labels...)
	}
}
