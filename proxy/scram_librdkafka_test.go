package proxy

import (
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"encoding/base64"
	"testing"

	"github.com/xdg-go/scram"
)

// librdkafkaClientFinal computes, independently of the proxy's code, the
// client-final message librdkafka sends: its nonce, then the server's.
func librdkafkaClientFinal(t *testing.T, password string, f *scramFirst, salt string, iters int) string {
	t.Helper()
	salted, err := pbkdf2.Key(sha256.New, password, []byte(salt), iters, sha256.Size)
	if err != nil {
		t.Fatal(err)
	}
	hm := func(key []byte, data string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(data))
		return m.Sum(nil)
	}
	clientKey := hm(salted, "Client Key")
	storedKey := sha256.Sum256(clientKey)
	withoutProof := "c=biws,r=" + f.clientNonce + f.serverNonce
	sig := hm(storedKey[:], f.clientFirstBare+","+f.serverFirst+","+withoutProof)
	for i := range sig {
		sig[i] ^= clientKey[i]
	}
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(sig)
}

func TestSCRAMLibrdkafkaFinal(t *testing.T) {
	creds, err := ParseCredentials([]byte("users:\n  app:\n    password: app-secret\n"))
	if err != nil {
		t.Fatal(err)
	}
	cred, _ := creds.scramLookup(MechScramSHA256)("app")
	srv, err := scram.SHA256.NewServer(creds.scramLookup(MechScramSHA256))
	if err != nil {
		t.Fatal(err)
	}
	conv := srv.NewConversation()
	clientFirst := "n,,n=app,r=]U|QYxxJ_d.nRa4a.C7xOtLaUph}Pezw" // librdkafka's nonce alphabet
	serverFirst, err := conv.Step(clientFirst)
	if err != nil {
		t.Fatal(err)
	}
	f := newScramFirst(clientFirst, serverFirst)
	if f.gs2Header != "n,," || f.clientFirstBare != "n=app,r=]U|QYxxJ_d.nRa4a.C7xOtLaUph}Pezw" || f.serverNonce[:len(f.clientNonce)] != f.clientNonce {
		t.Fatalf("first step parsed as %+v", f)
	}

	good := librdkafkaClientFinal(t, "app-secret", f, cred.Salt, cred.Iters)
	final, valid, handled := f.librdkafkaFinal(scram.SHA256, cred, good)
	if !handled || !valid {
		t.Fatalf("librdkafka's final message with the right password: valid %v, handled %v", valid, handled)
	}
	wantSig := hmac.New(sha256.New, cred.ServerKey)
	wantSig.Write([]byte(f.clientFirstBare + "," + f.serverFirst + "," + good[:len(good)-len(",p=")-44]))
	if final != "v="+base64.StdEncoding.EncodeToString(wantSig.Sum(nil)) {
		t.Errorf("server-final %q does not prove the server", final)
	}

	wrong := librdkafkaClientFinal(t, "wrong", f, cred.Salt, cred.Iters)
	if _, valid, handled := f.librdkafkaFinal(scram.SHA256, cred, wrong); !handled || valid {
		t.Errorf("wrong password: valid %v, handled %v", valid, handled)
	}
	tampered := "c=eSws" + good[len("c=biws"):] // another gs2 header than the first message's
	if _, valid, _ := f.librdkafkaFinal(scram.SHA256, cred, tampered); valid {
		t.Error("a final message whose channel binding differs from the first message's was accepted")
	}
	rfc := "c=biws,r=" + f.serverNonce + ",p=AAAA"
	if _, _, handled := f.librdkafkaFinal(scram.SHA256, cred, rfc); handled {
		t.Error("an RFC 5802 final message was not left to xdg-go/scram")
	}
}
