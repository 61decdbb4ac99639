// Package kafkatest runs real Apache Kafka brokers for integration tests.
//
// Each [Cluster] is one single-node KRaft server (broker and controller in one
// JVM; more brokers on request, see below) listening on 127.0.0.1 with free ports and keeping its data in a
// temporary directory. The Kafka jars come from scripts/kafka-dist.sh, which
// fetches them from Maven Central once and caches them under
// ${KMIGRATE_CACHE:-$HOME/.cache/kmigrate}.
//
// Prerequisites are java (17+) and mvn on PATH. When they are missing Start
// returns an error saying so and StartT fails the test: integration tests
// never skip silently.
//
// # One cluster per test
//
//	func TestSomething(t *testing.T) {
//		c := kafkatest.StartT(t, kafkatest.Options{})
//		cl, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap()))
//		...
//	}
//
// # One cluster per package
//
// Broker start-up takes several seconds, so tests of one package that do not
// stop, kill or restart the broker should share it:
//
//	var kafka = kafkatest.NewShared(kafkatest.Options{SASL: true})
//
//	func TestMain(m *testing.M) { os.Exit(kafkatest.RunMain(m)) }
//
//	func TestA(t *testing.T) {
//		c := kafka.Get(t) // started by the first test that asks for it
//		...
//	}
//
// RunMain stops every cluster the test binary started and removes their data
// directories. Without it the brokers still die with the test binary (they
// get SIGKILL through Linux's parent-death signal) but their temporary
// directories are left behind.
//
// Tests that share a cluster should use their own topic and group names
// (for example derived from t.Name()).
//
// # Security
//
// Options.SASL adds a SASL_PLAINTEXT listener with PLAIN, SCRAM-SHA-256 and
// SCRAM-SHA-512 for Options.Users (default DefaultUser); Options.TLS adds an
// SSL listener with a certificate from a CA generated per cluster (both
// together also add SASL_SSL). Reach them with Cluster.Addr, SASLMechanism,
// Cluster.SASLClient, Cluster.TLSConfig and Cluster.CAFile. The PLAINTEXT
// listener (Cluster.Bootstrap) is always there. Options.OAuthBearer adds
// OAUTHBEARER to the SASL listeners (unsecured JWTs, see UnsecuredJWT) and
// Options.MTLS makes the SSL listener require the client certificate of
// Cluster.ClientCertFiles / Cluster.ClientTLSConfig.
//
// # Several brokers
//
// Options.Brokers > 1 adds broker-only nodes (ids 2, 3, ...) beside the
// first, which stays the KRaft controller. Topics keep one replica, so a
// topic's partitions are led by different brokers: what a proxy must split
// requests across. Clients bootstrap on Cluster.Bootstrap as usual; the
// others are found through Metadata. Stop, Kill and Restart act on the
// first node only.
//
// # Kafka's CLI tools
//
// Tool, ToolStdin and ToolCmd run any main class from the same jars, e.g.
//
//	out, _, err := kafkatest.Tool(ctx, kafkatest.MainTopicCommand,
//		"--bootstrap-server", c.Bootstrap(), "--list")
//
// Cluster.ClientConfig writes the --command-config file a tool needs for the
// SASL and TLS listeners.
//
// # Start-up time
//
// A broker starts in about 4 s on an idle 2-CPU machine once the JVM's
// class-data-sharing archives exist (see cds.go; the first run on a machine
// makes them and takes about 10 s). The package is for Linux (and other
// Unix systems, without the parent-death signal).
package kafkatest
