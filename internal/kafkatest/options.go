package kafkatest

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Listener names a client listener of a Cluster. The names double as
// Kafka's security protocol names.
type Listener string

// Client listeners. Plaintext is always present; the others depend on
// Options.SASL and Options.TLS.
const (
	Plaintext     Listener = "PLAINTEXT"      // always on
	SASLPlaintext Listener = "SASL_PLAINTEXT" // Options.SASL
	SSL           Listener = "SSL"            // Options.TLS
	SASLSSL       Listener = "SASL_SSL"       // Options.SASL and Options.TLS
	Relayed       Listener = "RELAYED"        // Options.RelayedAddr: plaintext, advertised as the relay
)

// controllerListener is the KRaft controller's listener; clients never use it.
const controllerListener = "CONTROLLER"

// SASL mechanisms enabled on the SASL listeners.
const (
	MechPlain       = "PLAIN"
	MechScramSHA256 = "SCRAM-SHA-256"
	MechScramSHA512 = "SCRAM-SHA-512"
	MechOAuthBearer = "OAUTHBEARER" // Options.OAuthBearer
)

const (
	defaultHeapMB    = 512
	defaultTimeout   = 90 * time.Second
	defaultLogLevel  = "WARN"
	stopGracePeriod  = 20 * time.Second
	formatTimeout    = 60 * time.Second
	maxStartAttempts = 3 // retries cover a lost race for a free port
)

// User is a SASL user known to the broker for every enabled mechanism.
type User struct {
	Name     string
	Password string
}

// DefaultUser is created when Options.SASL is set and Options.Users is empty.
var DefaultUser = User{Name: "admin", Password: "admin-secret"}

// Options configure a Cluster. The zero value is a PLAINTEXT-only broker.
type Options struct {
	// Name labels the cluster in errors, logs and its temporary directory
	// name, e.g. "source" or "target".
	Name string

	// SASL adds a SASL_PLAINTEXT listener (and SASL_SSL with TLS) offering
	// PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 for Users.
	SASL bool
	// Users are the SASL users, created for all three mechanisms: PLAIN via
	// the listener's JAAS config, SCRAM via kafka-storage format --add-scram.
	// Defaults to DefaultUser. Names are limited to [A-Za-z0-9._-] and
	// passwords may not hold quotes, backslashes, commas, brackets or spaces,
	// which the JAAS and --add-scram syntaxes cannot carry.
	Users []User

	// TLS adds an SSL listener (and SASL_SSL with SASL) whose certificate is
	// signed by a CA generated for this cluster; see Cluster.TLSConfig and
	// Cluster.CAFile.
	TLS bool

	// ACLs turns on Kafka's StandardAuthorizer with no ACL granted: only
	// super users may do anything. The super users are the first of Users
	// (the harness's admin) and ANONYMOUS, the principal of the PLAINTEXT
	// and controller listeners, so the broker itself and the harness's
	// set-up keep working while the other Users get only the ACLs a test
	// grants them (over the SASL listeners).
	ACLs bool

	// OAuthBearer also offers OAUTHBEARER on the SASL listeners, checked by
	// Kafka's unsecured validator: it accepts unsigned JWTs ({"alg":"none"})
	// whose claims carry "sub" (the principal) and an "exp" in the future.
	// See UnsecuredJWT. Needs SASL.
	OAuthBearer bool

	// MTLS makes the SSL listener require a client certificate signed by
	// the cluster's CA (ssl.client.auth=required); see Cluster.ClientCertFiles
	// and Cluster.ClientTLSConfig. SASL_SSL keeps authenticating by SASL
	// only. Needs TLS.
	MTLS bool

	// RelayedAddr adds a plaintext listener, Relayed, that advertises this
	// address instead of its own: a relay (a toxiproxy) listening there and
	// forwarding to Cluster.Addr(Relayed) then carries all the traffic of
	// a client bootstrapped at RelayedAddr, Metadata's broker addresses
	// included, while Bootstrap() stays direct for the test's own checks.
	RelayedAddr string

	// BrokerConfig overrides or adds server.properties entries, e.g.
	// {"log.retention.ms": "1000"}. Listener settings are the harness's.
	BrokerConfig map[string]string

	// Brokers is how many brokers the cluster has (default 1). The first
	// node is the KRaft controller and a broker, as in a single-node
	// cluster; the others are brokers only (node ids 2, 3, ...), each with
	// a PLAINTEXT listener. Topics keep one replica, so their partitions
	// spread over the brokers, each led by the one holding it. SASL, TLS
	// and RelayedAddr apply to single-broker clusters only. Stop, Kill and
	// Restart act on the first node; Close stops them all.
	Brokers int

	// HeapMB is the broker JVM's maximum heap (default 512).
	HeapMB int
	// ShippedJVM runs the broker JVM with the settings Apache Kafka's own
	// bin/kafka-server-start.sh and kafka-run-class.sh give it: a fixed
	// heap (-Xms = -Xmx = HeapMB) and G1 with a 20 ms pause goal. The
	// default is the harness's small profile (serial collector, a heap
	// that starts at 128 MiB), which lets several brokers share 2 CPUs
	// with the tests but pauses for longer. Benchmarks use ShippedJVM, so
	// their latency tails are those of a broker as operators run it.
	ShippedJVM bool
	// StartTimeout bounds formatting plus start-up until the broker answers
	// Metadata (default 90s), for Start and each Restart.
	StartTimeout time.Duration
	// LogLevel is the broker's root log4j level (default WARN); INFO helps
	// when debugging the broker itself.
	LogLevel string
}

var (
	userNameRE = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	badPassRE  = regexp.MustCompile(`["\\,\[\]\s=]`)
)

// withDefaults validates o and fills in defaults.
func (o Options) withDefaults() (Options, error) {
	if o.Name == "" {
		o.Name = "kafka"
	}
	if o.HeapMB <= 0 {
		o.HeapMB = defaultHeapMB
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = defaultTimeout
	}
	if o.LogLevel == "" {
		o.LogLevel = defaultLogLevel
	}
	if o.ACLs && !o.SASL {
		return o, fmt.Errorf("kafkatest: ACLs need SASL: without it every client is ANONYMOUS, a super user")
	}
	if o.SASL && len(o.Users) == 0 {
		o.Users = []User{DefaultUser}
	}
	if o.Brokers <= 0 {
		o.Brokers = 1
	}
	if o.Brokers > 1 && (o.SASL || o.TLS || o.RelayedAddr != "") {
		return o, fmt.Errorf("kafkatest: %d brokers: SASL, TLS and RelayedAddr are for single-broker clusters", o.Brokers)
	}
	if o.OAuthBearer && !o.SASL {
		return o, fmt.Errorf("kafkatest: OAuthBearer needs SASL (the mechanism lives on the SASL listeners)")
	}
	if o.MTLS && !o.TLS {
		return o, fmt.Errorf("kafkatest: MTLS needs TLS")
	}
	for _, u := range o.Users {
		if !userNameRE.MatchString(u.Name) {
			return o, fmt.Errorf("kafkatest: SASL user name %q: only [A-Za-z0-9._-] allowed", u.Name)
		}
		if u.Password == "" || badPassRE.MatchString(u.Password) {
			return o, fmt.Errorf("kafkatest: password of SASL user %q is empty or holds one of \"\\,[]= or a space", u.Name)
		}
	}
	o.Name = strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, o.Name)
	return o, nil
}

// listeners returns the client listeners these options enable, Plaintext first.
func (o Options) listeners() []Listener {
	ls := []Listener{Plaintext}
	if o.SASL {
		ls = append(ls, SASLPlaintext)
	}
	if o.TLS {
		ls = append(ls, SSL)
	}
	if o.SASL && o.TLS {
		ls = append(ls, SASLSSL)
	}
	if o.RelayedAddr != "" {
		ls = append(ls, Relayed)
	}
	return ls
}
