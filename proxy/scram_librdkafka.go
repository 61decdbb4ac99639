package proxy

import (
	"crypto/hmac"
	"encoding/base64"
	"strings"

	"github.com/xdg-go/scram"
)

// librdkafka's SCRAM client-final message carries its own nonce followed by
// the server's whole nonce, which already starts with it (RFC 5802 wants the
// server's nonce alone). Kafka's broker accepts it because it only checks
// that the nonce ends with the server's; xdg-go/scram checks equality, as
// the RFC says, and refuses it. So this exact form, and only it, is verified
// here with RFC 5802's computation over the message as the client signed
// it; every other final message goes to xdg-go/scram.

// scramFirst is what the first step of an exchange leaves for the
// librdkafka form of the final message.
type scramFirst struct {
	gs2Header       string // "n,," (channel binding flag and authzid)
	clientFirstBare string // "n=user,r=clientnonce"
	clientNonce     string
	serverFirst     string // "r=clientnonce+servernonce,s=salt,i=iterations"
	serverNonce     string
}

func newScramFirst(clientFirst, serverFirst string) *scramFirst {
	f := &scramFirst{serverFirst: serverFirst}
	parts := strings.SplitN(clientFirst, ",", 3)
	if len(parts) != 3 {
		return f
	}
	f.gs2Header, f.clientFirstBare = parts[0]+","+parts[1]+",", parts[2]
	for _, attr := range strings.Split(f.clientFirstBare, ",") {
		if v, ok := strings.CutPrefix(attr, "r="); ok {
			f.clientNonce = v
		}
	}
	f.serverNonce, _ = strings.CutPrefix(strings.SplitN(serverFirst, ",", 2)[0], "r=")
	return f
}

// librdkafkaFinal checks a client-final message with librdkafka's nonce.
// handled is false when the message is not of that form (xdg-go/scram then
// checks it); otherwise valid says whether the proof holds and serverFinal
// is the answer proving the server to the client.
func (f *scramFirst) librdkafkaFinal(hash scram.HashGeneratorFcn, cred scram.StoredCredentials, msg string) (serverFinal string, valid, handled bool) {
	fields := strings.Split(msg, ",")
	if len(fields) != 3 || f.clientNonce == "" || f.serverNonce == "" || fields[1] != "r="+f.clientNonce+f.serverNonce {
		return "", false, false
	}
	if fields[0] != "c="+base64.StdEncoding.EncodeToString([]byte(f.gs2Header)) {
		return "", false, true
	}
	proofB64, ok := strings.CutPrefix(fields[2], "p=")
	proof, err := base64.StdEncoding.DecodeString(proofB64)
	if !ok || err != nil || len(proof) != len(cred.StoredKey) {
		return "", false, true
	}
	authMessage := []byte(f.clientFirstBare + "," + f.serverFirst + "," + fields[0] + "," + fields[1])
	mac := func(key []byte) []byte {
		m := hmac.New(hash, key)
		m.Write(authMessage)
		return m.Sum(nil)
	}
	// ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the proof
	// holds when H(ClientKey) is the StoredKey.
	clientKey := mac(cred.StoredKey)
	for i := range clientKey {
		clientKey[i] ^= proof[i]
	}
	h := hash()
	h.Write(clientKey)
	if !hmac.Equal(h.Sum(nil), cred.StoredKey) {
		return "", false, true
	}
	return "v=" + base64.StdEncoding.EncodeToString(mac(cred.ServerKey)), true, true
}
