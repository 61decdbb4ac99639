package kafkatest

import (
	"encoding/base64"
	"encoding/json"
	"time"
)

// UnsecuredJWT returns an unsigned JWT ({"alg":"none"}, empty signature)
// for principal sub, valid until exp: what the OAUTHBEARER listeners of a
// cluster with Options.OAuthBearer accept. An exp in the past makes a token
// the broker refuses.
func UnsecuredJWT(sub string, exp time.Time) string {
	enc := func(v any) string {
		b, _ := json.Marshal(v) // maps of strings and numbers always marshal
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now()
	header := enc(map[string]string{"alg": "none"})
	claims := enc(map[string]any{"sub": sub, "iat": now.Unix(), "exp": exp.Unix()})
	return header + "." + claims + "."
}
