package kafkatest

import (
	"strings"
	"testing"
)

func TestOptionsBrokers(t *testing.T) {
	o, err := Options{}.withDefaults()
	if err != nil || o.Brokers != 1 {
		t.Fatalf("zero Options: Brokers %d, err %v; want 1, nil", o.Brokers, err)
	}
	for name, bad := range map[string]Options{
		"SASL":        {Brokers: 3, SASL: true},
		"TLS":         {Brokers: 2, TLS: true},
		"RelayedAddr": {Brokers: 2, RelayedAddr: "127.0.0.1:1"},
	} {
		if _, err := bad.withDefaults(); err == nil || !strings.Contains(err.Error(), "single-broker") {
			t.Errorf("%s with several brokers: err %v, want a refusal naming single-broker clusters", name, err)
		}
	}
}

// TestBrokerProperties: a broker-only node joins the first node's quorum as
// a broker, with its own id, listener and data, and the shared settings.
func TestBrokerProperties(t *testing.T) {
	c := &Cluster{opts: Options{Brokers: 2, BrokerConfig: map[string]string{"log.retention.ms": "1000"}}, dir: "/tmp/x",
		ports: map[string]int{controllerListener: 9093, string(Plaintext): 9092}}
	n := &brokerNode{id: 2, dir: "/tmp/x/broker-2", port: 9094}
	props := c.brokerProperties(n)
	for _, want := range []string{
		"process.roles=broker\n",
		"node.id=2\n",
		"listeners=PLAINTEXT://127.0.0.1:9094\n",
		"advertised.listeners=PLAINTEXT://127.0.0.1:9094\n",
		"controller.quorum.bootstrap.servers=127.0.0.1:9093\n",
		"controller.listener.names=CONTROLLER\n",
		"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n",
		"log.dirs=/tmp/x/broker-2/data\n",
		"offsets.topic.replication.factor=1\n",
		"log.retention.ms=1000\n",
	} {
		if !strings.Contains(props, want) {
			t.Errorf("broker properties lack %q:\n%s", want, props)
		}
	}
}
