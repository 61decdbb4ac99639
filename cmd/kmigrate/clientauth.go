package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/kmigrate/kmigrate/proxy"
)

// clientAuth builds the client listener's TLS and the client SASL settings
// from the --client-* flags.
func (o *proxyOptions) clientAuth(log *slog.Logger) (*tls.Config, *proxy.ClientSASL, error) {
	var tlsCfg *tls.Config
	if o.clientTLSCert != "" || o.clientTLSKey != "" {
		cert, err := tls.LoadX509KeyPair(o.clientTLSCert, o.clientTLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--client-tls-cert/--client-tls-key: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if o.clientTLSCA != "" {
		if tlsCfg == nil {
			return nil, nil, errors.New("--client-tls-ca needs --client-tls-cert and --client-tls-key: client certificates are checked in the TLS handshake")
		}
		pem, err := os.ReadFile(o.clientTLSCA)
		if err != nil {
			return nil, nil, fmt.Errorf("--client-tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("--client-tls-ca: %s holds no PEM certificate", o.clientTLSCA)
		}
		tlsCfg.ClientCAs, tlsCfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}

	var mechs []string
	for _, m := range strings.Split(o.clientSASLMechanisms, ",") {
		switch m = strings.ToUpper(strings.TrimSpace(m)); m {
		case "":
		case proxy.MechPlain, proxy.MechScramSHA256, proxy.MechScramSHA512:
			mechs = append(mechs, m)
		default:
			return nil, nil, fmt.Errorf("--client-sasl-mechanisms: %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", m)
		}
	}
	// Pass-through checks PLAIN clients at the source: a file is needed
	// only for the SCRAM mechanisms then.
	onlyPassedThrough := o.clientSASLPassThrough && len(mechs) == 1 && mechs[0] == proxy.MechPlain
	switch {
	case len(mechs) == 0 && o.clientSASLCredentials == "" && !o.clientSASLPassThrough:
		return tlsCfg, nil, nil
	case len(mechs) == 0:
		return nil, nil, errors.New("--client-sasl-credentials and --client-sasl-passthrough need --client-sasl-mechanisms (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
	case o.clientSASLPassThrough && !slices.Contains(mechs, proxy.MechPlain):
		return nil, nil, errors.New("--client-sasl-passthrough needs PLAIN in --client-sasl-mechanisms: only PLAIN shows the proxy the password to log in with")
	case o.clientSASLCredentials == "" && !onlyPassedThrough:
		return nil, nil, errors.New("--client-sasl-mechanisms needs --client-sasl-credentials: the file of users clients authenticate as")
	}
	var creds *proxy.Credentials
	if o.clientSASLCredentials != "" {
		var err error
		if creds, err = proxy.LoadCredentials(o.clientSASLCredentials); err != nil {
			return nil, nil, fmt.Errorf("--client-sasl-credentials: %w", err)
		}
		if st, err := os.Stat(o.clientSASLCredentials); err == nil && st.Mode().Perm()&0o077 != 0 {
			log.Warn("the client credentials file is readable by other users; chmod 600 it", "path", o.clientSASLCredentials, "mode", st.Mode().Perm().String())
		}
	}
	if tlsCfg == nil && strings.Contains(","+strings.Join(mechs, ",")+",", ",PLAIN,") {
		log.Warn("client SASL PLAIN without --client-tls-cert: passwords cross the network in clear")
	}
	sasl := &proxy.ClientSASL{Mechanisms: mechs, Credentials: creds, PassThrough: o.clientSASLPassThrough}
	log.Info("clients authenticate with SASL", "mechanisms", mechs, "credentials", o.clientSASLCredentials,
		"plain_passed_through", o.clientSASLPassThrough, "client_certificates", o.clientTLSCA != "")
	return tlsCfg, sasl, nil
}

// runSCRAMCredential prints the pre-hashed SCRAM credentials of a password
// read from stdin, for the client credentials file: the file then holds no
// password.
func runSCRAMCredential(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("kmigrate scram-credential", flag.ContinueOnError)
	mech := fs.String("mechanism", proxy.MechScramSHA512, "SCRAM-SHA-256 or SCRAM-SHA-512")
	user := fs.String("user", "", "user name (informational: SCRAM hashes do not depend on it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read the password from stdin: %w", err)
	}
	password := strings.TrimRight(line, "\r\n")
	if password == "" {
		return errors.New("no password on stdin (e.g. read -rs PW && printf '%s\\n' \"$PW\" | kmigrate scram-credential)")
	}
	cred, err := proxy.FormatStoredCredentials(strings.ToUpper(*mech), *user, password)
	if err != nil {
		return err
	}
	key := strings.ToLower(*mech)
	name := *user
	if name == "" {
		name = "USER"
	}
	_, err = fmt.Fprintf(stdout, "users:\n  %s:\n    %s: %q\n", name, key, cred)
	return err
}
