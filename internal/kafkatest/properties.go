package kafkatest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// serverProperties renders the first node's server.properties.
func (c *Cluster) serverProperties() string {
	p := c.commonProperties()
	// One JVM is both the KRaft controller and a broker. The quorum is the
	// dynamic single-voter kind made by `kafka-storage format --standalone`,
	// as in Kafka's own config/server.properties.
	p["process.roles"] = "broker,controller"
	p["node.id"] = "1"
	p["log.dirs"] = filepath.Join(c.dir, "data")

	var listeners, advertisedListeners, protoMap []string
	for _, l := range c.opts.listeners() {
		listeners = append(listeners, string(l)+"://"+c.hostPort(string(l)))
		if l == Relayed {
			advertisedListeners = append(advertisedListeners, string(l)+"://"+c.opts.RelayedAddr)
			protoMap = append(protoMap, string(l)+":PLAINTEXT")
			continue
		}
		advertisedListeners = append(advertisedListeners, string(l)+"://"+c.hostPort(string(l)))
		protoMap = append(protoMap, string(l)+":"+string(l))
	}
	advertised := strings.Join(advertisedListeners, ",")
	listeners = append(listeners, controllerListener+"://"+c.hostPort(controllerListener))
	protoMap = append(protoMap, controllerListener+":PLAINTEXT")
	p["listeners"] = strings.Join(listeners, ",")
	p["advertised.listeners"] = advertised + "," + controllerListener + "://" + c.hostPort(controllerListener)
	p["listener.security.protocol.map"] = strings.Join(protoMap, ",")

	if c.opts.SASL {
		mechs := []string{MechPlain, MechScramSHA256, MechScramSHA512}
		if c.opts.OAuthBearer {
			mechs = append(mechs, MechOAuthBearer)
		}
		p["sasl.enabled.mechanisms"] = strings.Join(mechs, ",")
		// PLAIN users live in the JAAS config; SCRAM users in the metadata
		// log (added at format time), so their JAAS config is empty.
		var plain strings.Builder
		plain.WriteString("org.apache.kafka.common.security.plain.PlainLoginModule required")
		for _, u := range c.opts.Users {
			fmt.Fprintf(&plain, " user_%s=%q", u.Name, u.Password)
		}
		plain.WriteString(";")
		scram := "org.apache.kafka.common.security.scram.ScramLoginModule required;"
		for _, l := range []Listener{SASLPlaintext, SASLSSL} {
			if _, ok := c.ports[string(l)]; !ok {
				continue
			}
			prefix := "listener.name." + strings.ToLower(string(l)) + "."
			p[prefix+"plain.sasl.jaas.config"] = plain.String()
			p[prefix+"scram-sha-256.sasl.jaas.config"] = scram
			p[prefix+"scram-sha-512.sasl.jaas.config"] = scram
			if c.opts.OAuthBearer {
				// No server callback handler configured: the broker
				// validates with OAuthBearerUnsecuredValidatorCallbackHandler.
				// The login claim is only for the broker's own (unused)
				// login on this listener.
				p[prefix+"oauthbearer.sasl.jaas.config"] = `org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="broker";`
			}
		}
	}
	if c.opts.ACLs {
		p["authorizer.class.name"] = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
		p["super.users"] = "User:ANONYMOUS;User:" + c.opts.Users[0].Name
	}
	if c.certs != nil {
		// Kafka reads PEM key material straight from the config
		// (ssl.keystore.type=PEM), so no JKS/PKCS12 keystore is needed. The
		// inline form allows an unencrypted key; the file form does not.
		p["ssl.keystore.type"] = "PEM"
		p["ssl.keystore.certificate.chain"] = pemProperty(c.certs.certPEM)
		p["ssl.keystore.key"] = pemProperty(c.certs.keyPEM)
		p["ssl.client.auth"] = "none"
		if c.opts.MTLS {
			// Only the SSL listener: SASL_SSL clients authenticate by SASL.
			p["listener.name.ssl.ssl.client.auth"] = "required"
			p["ssl.truststore.type"] = "PEM"
			p["ssl.truststore.certificates"] = pemProperty(c.certs.caPEM)
		}
	}

	for k, v := range c.opts.BrokerConfig {
		p[k] = v
	}
	return renderProperties(p)
}

// commonProperties are the settings every node of the cluster shares.
func (c *Cluster) commonProperties() map[string]string {
	return map[string]string{
		"controller.quorum.bootstrap.servers": c.hostPort(controllerListener),
		"controller.listener.names":           controllerListener,
		"inter.broker.listener.name":          string(Plaintext),

		// One replica of everything: a single broker, or each partition on
		// one of several (Options.Brokers).
		"num.partitions":                                   "1",
		"default.replication.factor":                       "1",
		"min.insync.replicas":                              "1",
		"offsets.topic.replication.factor":                 "1",
		"transaction.state.log.replication.factor":         "1",
		"transaction.state.log.min.isr":                    "1",
		"share.coordinator.state.topic.replication.factor": "1",
		"share.coordinator.state.topic.min.isr":            "1",
		"auto.create.topics.enable":                        "true",
		"delete.topic.enable":                              "true",

		// Speed: no wait before the first rebalance, fewer partitions in the
		// internal topics (50 each by default, created on first use), and
		// fewer threads so two brokers fit on a 2-CPU machine.
		"group.initial.rebalance.delay.ms":     "0",
		"offsets.topic.num.partitions":         "10",
		"transaction.state.log.num.partitions": "10",
		"num.network.threads":                  "2",
		"num.io.threads":                       "4",
		"num.recovery.threads.per.data.dir":    "1",
		"background.threads":                   "4",
		// After a crash (Kill) the restarted broker cannot register until
		// the controller expires its previous session (9s by default), so
		// keep sessions short; heartbeats are loopback calls within one JVM.
		"broker.session.timeout.ms":    "4500",
		"broker.heartbeat.interval.ms": "1000",
		// The log cleaner allocates its dedupe buffer (128 MiB by default)
		// on the heap at start-up; 16 MiB is plenty for tests.
		"log.cleaner.dedupe.buffer.size": "16777216",
	}
}

// brokerProperties renders the server.properties of a broker-only node of a
// multi-broker cluster (Options.Brokers).
func (c *Cluster) brokerProperties(n *brokerNode) string {
	p := c.commonProperties()
	p["process.roles"] = "broker"
	p["node.id"] = strconv.Itoa(n.id)
	p["log.dirs"] = filepath.Join(n.dir, "data")
	p["listeners"] = string(Plaintext) + "://" + n.addr()
	p["advertised.listeners"] = string(Plaintext) + "://" + n.addr()
	p["listener.security.protocol.map"] = string(Plaintext) + ":PLAINTEXT," + controllerListener + ":PLAINTEXT"
	for k, v := range c.opts.BrokerConfig {
		p[k] = v
	}
	return renderProperties(p)
}

// renderProperties writes p sorted by key. Values are written verbatim: the
// callers supply values that are already valid in a .properties file.
func renderProperties(p map[string]string) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Generated by kmigrate internal/kafkatest.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s\n", k, p[k])
	}
	return b.String()
}

// ClientConfig writes a Kafka client .properties file for listener l, for
// the CLI tools' --command-config / --consumer.config / --producer.config
// options, and returns its path. mechanism and user are used only for the
// SASL listeners (mechanism defaults to SCRAM-SHA-512, user to the first
// configured user). The file also sets bootstrap.servers.
func (c *Cluster) ClientConfig(l Listener, mechanism string, user *User) (string, error) {
	addr := c.Addr(l)
	if addr == "" {
		return "", fmt.Errorf("kafkatest: cluster %s has no %s listener", c.opts.Name, l)
	}
	p := map[string]string{
		"bootstrap.servers": addr,
		"security.protocol": string(l),
	}
	if l == SASLPlaintext || l == SASLSSL {
		if mechanism == "" {
			mechanism = MechScramSHA512
		}
		u := c.opts.Users[0]
		if user != nil {
			u = *user
		}
		module := "org.apache.kafka.common.security.scram.ScramLoginModule"
		if mechanism == MechPlain {
			module = "org.apache.kafka.common.security.plain.PlainLoginModule"
		}
		p["sasl.mechanism"] = mechanism
		p["sasl.jaas.config"] = fmt.Sprintf("%s required username=%q password=%q;", module, u.Name, u.Password)
	}
	if l == SSL || l == SASLSSL {
		p["ssl.truststore.type"] = "PEM"
		p["ssl.truststore.certificates"] = pemProperty(c.certs.caPEM)
	}
	f, err := os.CreateTemp(c.dir, "client-*.properties")
	if err != nil {
		return "", fmt.Errorf("kafkatest: create client config: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(renderProperties(p)); err != nil {
		return "", fmt.Errorf("kafkatest: write client config: %w", err)
	}
	return f.Name(), nil
}
