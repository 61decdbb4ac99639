package proxy

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/xdg-go/scram"
	"go.yaml.in/yaml/v3"
)

// SASL mechanisms the proxy can check clients with.
const (
	MechPlain       = "PLAIN"
	MechScramSHA256 = "SCRAM-SHA-256"
	MechScramSHA512 = "SCRAM-SHA-512"
)

// scramIterations is the PBKDF2 iteration count of the SCRAM credentials the
// proxy derives from plain passwords: Kafka's minimum and kafka-configs'
// default.
const scramIterations = 4096

var scramHashes = map[string]scram.HashGeneratorFcn{
	MechScramSHA256: scram.SHA256,
	MechScramSHA512: scram.SHA512,
}

// Credentials are the users clients may authenticate as. A user has a
// password (good for every mechanism) or pre-hashed SCRAM credentials (good
// for their SCRAM mechanism and for PLAIN, checked against them).
type Credentials struct {
	users map[string]*userCredentials
	// decoyKey makes the decoy SCRAM salts of unknown users stable per
	// process and unguessable, so that a probe cannot tell an unknown user
	// from a wrong password.
	decoyKey []byte
}

type userCredentials struct {
	password string                             // empty when only hashes were given
	scram    map[string]scram.StoredCredentials // by mechanism
}

// credentialsFile is the YAML an operator writes:
//
//	users:
//	  alice:
//	    password: alice-secret
//	  bob:
//	    scram-sha-512: "SCRAM-SHA-512$4096:<salt>$<StoredKey>:<ServerKey>"
//
// The pre-hashed form is RFC 5803's (PostgreSQL's), every part base64.
type credentialsFile struct {
	Users map[string]struct {
		Password    string `yaml:"password"`
		ScramSHA256 string `yaml:"scram-sha-256"`
		ScramSHA512 string `yaml:"scram-sha-512"`
	} `yaml:"users"`
}

// LoadCredentials reads a credentials file (see credentialsFile). The error
// never quotes the file's values: they are secrets.
func LoadCredentials(path string) (*Credentials, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("client credentials: %w", err)
	}
	c, err := ParseCredentials(data)
	if err != nil {
		return nil, fmt.Errorf("client credentials %s: %w", path, err)
	}
	return c, nil
}

// ParseCredentials parses the YAML of a credentials file.
func ParseCredentials(data []byte) (*Credentials, error) {
	var f credentialsFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		// yaml's messages quote keys and line numbers, not values.
		return nil, err
	}
	if len(f.Users) == 0 {
		return nil, errors.New("no users: expected a \"users:\" mapping of name to password or scram-sha-256/scram-sha-512")
	}
	c := &Credentials{users: make(map[string]*userCredentials, len(f.Users)), decoyKey: make([]byte, 32)}
	rand.Read(c.decoyKey)
	for name, u := range f.Users {
		if name == "" {
			return nil, errors.New("a user has an empty name")
		}
		uc := &userCredentials{password: u.Password, scram: map[string]scram.StoredCredentials{}}
		hashed := map[string]string{MechScramSHA256: u.ScramSHA256, MechScramSHA512: u.ScramSHA512}
		for mech, s := range hashed {
			if s == "" {
				continue
			}
			if u.Password != "" {
				return nil, fmt.Errorf("user %q: give a password or SCRAM hashes, not both", name)
			}
			cred, err := parseStoredCredentials(mech, s)
			if err != nil {
				return nil, fmt.Errorf("user %q: %s: %w", name, strings.ToLower(mech), err)
			}
			uc.scram[mech] = cred
		}
		if u.Password == "" && len(uc.scram) == 0 {
			return nil, fmt.Errorf("user %q has neither a password nor SCRAM credentials", name)
		}
		if u.Password != "" {
			// Derived once here: a SCRAM exchange then costs the server
			// no PBKDF2. Like Kafka, the password is used without SASLprep.
			for mech, hash := range scramHashes {
				cred, err := derive(hash, name, u.Password, randomSalt(), scramIterations)
				if err != nil {
					return nil, fmt.Errorf("user %q: %w", name, err)
				}
				uc.scram[mech] = cred
			}
		}
		c.users[name] = uc
	}
	return c, nil
}

func randomSalt() string {
	salt := make([]byte, 16)
	rand.Read(salt)
	return string(salt)
}

func derive(hash scram.HashGeneratorFcn, user, password, salt string, iters int) (scram.StoredCredentials, error) {
	cl, err := hash.NewClientUnprepped(user, password, "")
	if err != nil {
		return scram.StoredCredentials{}, err
	}
	return cl.GetStoredCredentialsWithError(scram.KeyFactors{Salt: salt, Iters: iters})
}

// parseStoredCredentials reads "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>".
func parseStoredCredentials(mech, s string) (scram.StoredCredentials, error) {
	const form = "expected " + "SCRAM-SHA-…$<iterations>:<salt>$<StoredKey>:<ServerKey> (base64)"
	var cred scram.StoredCredentials
	parts := strings.Split(s, "$")
	if len(parts) != 3 || !strings.EqualFold(parts[0], mech) {
		return cred, errors.New(form)
	}
	iters, salt, ok1 := strings.Cut(parts[1], ":")
	stored, server, ok2 := strings.Cut(parts[2], ":")
	if !ok1 || !ok2 {
		return cred, errors.New(form)
	}
	n, err := strconv.Atoi(iters)
	if err != nil || n < scramIterations {
		return cred, fmt.Errorf("iterations %q: want an integer ≥ %d", iters, scramIterations)
	}
	size := scramHashes[mech]().Size()
	var fields [3][]byte
	for i, b64 := range []string{salt, stored, server} {
		if fields[i], err = base64.StdEncoding.DecodeString(b64); err != nil {
			return cred, fmt.Errorf("%s: %w", form, err)
		}
	}
	if len(fields[0]) == 0 || len(fields[1]) != size || len(fields[2]) != size {
		return cred, fmt.Errorf("%s: the salt must not be empty and both keys must be %d bytes", form, size)
	}
	cred.Salt, cred.Iters, cred.StoredKey, cred.ServerKey = string(fields[0]), n, fields[1], fields[2]
	return cred, nil
}

// FormatStoredCredentials derives the pre-hashed SCRAM credentials of a
// password in the form a credentials file accepts.
func FormatStoredCredentials(mech, user, password string) (string, error) {
	hash, ok := scramHashes[mech]
	if !ok {
		return "", fmt.Errorf("%q is not a SCRAM mechanism (SCRAM-SHA-256 or SCRAM-SHA-512)", mech)
	}
	cred, err := derive(hash, user, password, randomSalt(), scramIterations)
	if err != nil {
		return "", err
	}
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf("%s$%d:%s$%s:%s", mech, cred.Iters, b64([]byte(cred.Salt)), b64(cred.StoredKey), b64(cred.ServerKey)), nil
}

// checkPlain reports whether password is user's. A user known only by SCRAM
// hashes is checked against them (one PBKDF2).
func (c *Credentials) checkPlain(user, password string) bool {
	u := c.users[user]
	if u == nil {
		return false
	}
	if u.password != "" {
		return subtle.ConstantTimeCompare([]byte(u.password), []byte(password)) == 1
	}
	for mech, cred := range u.scram {
		got, err := derive(scramHashes[mech], user, password, cred.Salt, cred.Iters)
		return err == nil && hmac.Equal(got.StoredKey, cred.StoredKey)
	}
	return false
}

// scramLookup finds a user's stored credentials for one mechanism. An
// unknown user gets a decoy that no proof matches: the exchange then fails
// at the proof, as for a wrong password, instead of revealing at the first
// message which names exist.
func (c *Credentials) scramLookup(mech string) scram.CredentialLookup {
	size := scramHashes[mech]().Size()
	return func(user string) (scram.StoredCredentials, error) {
		if u := c.users[user]; u != nil {
			if cred, ok := u.scram[mech]; ok {
				return cred, nil
			}
		}
		mac := hmac.New(sha256.New, c.decoyKey)
		mac.Write([]byte(mech + "\x00" + user))
		decoy := scram.StoredCredentials{KeyFactors: scram.KeyFactors{Salt: string(mac.Sum(nil)[:16]), Iters: scramIterations},
			StoredKey: make([]byte, size), ServerKey: make([]byte, size)}
		rand.Read(decoy.StoredKey)
		return decoy, nil
	}
}
