package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/kmigrate/kmigrate/proxy/upstreamauth"
	"github.com/twmb/franz-go/pkg/sasl"
)

// upstreamAuthFlags are the settings of the token- and cloud-based SASL
// mechanisms toward one cluster (OAUTHBEARER, AWS_MSK_IAM); PLAIN and SCRAM
// use --<cluster>-sasl-username/-password.
type upstreamAuthFlags struct {
	oauthTokenFile     string
	oauthTokenEndpoint string
	oauthClientID      string
	oauthClientSecret  string
	oauthScope         string
	oauthExtensions    string
	awsRegion          string
	awsProfile         string
}

func (a *upstreamAuthFlags) register(fs *flag.FlagSet, prefix, what string) {
	fs.StringVar(&a.oauthTokenFile, prefix+"oauth-token-file", "", "OAUTHBEARER: file holding the token for the "+what+" cluster, read again whenever it changes")
	fs.StringVar(&a.oauthTokenEndpoint, prefix+"oauth-token-endpoint", "", "OAUTHBEARER: OAuth 2.0 token endpoint URL (client-credentials grant) for the "+what+" cluster")
	fs.StringVar(&a.oauthClientID, prefix+"oauth-client-id", "", "OAUTHBEARER: client id at --"+prefix+"oauth-token-endpoint")
	fs.StringVar(&a.oauthClientSecret, prefix+"oauth-client-secret", "", "OAUTHBEARER: client secret at --"+prefix+"oauth-token-endpoint (prefer the environment variable "+envName(prefix+"oauth-client-secret")+")")
	fs.StringVar(&a.oauthScope, prefix+"oauth-scope", "", "OAUTHBEARER: scopes to request, separated by spaces or commas (optional)")
	fs.StringVar(&a.oauthExtensions, prefix+"oauth-extensions", "", "OAUTHBEARER: SASL extensions sent with the token, key=value,key=value (optional; e.g. logicalCluster=lkc-1)")
	fs.StringVar(&a.awsRegion, prefix+"aws-region", "", "AWS_MSK_IAM: region of the AWS credential chain (default $AWS_REGION); requests are signed for the region in the broker's host name")
	fs.StringVar(&a.awsProfile, prefix+"aws-profile", "", "AWS_MSK_IAM: shared config profile (default $AWS_PROFILE, then the environment, web identity and instance roles)")
}

// mechanism builds the OAUTHBEARER or AWS_MSK_IAM mechanism named by
// --<name>-sasl-mechanism, or (nil, nil) for any other: settings of a
// mechanism not chosen are refused, they are most likely a mistake.
func (a *upstreamAuthFlags) mechanism(name, mechanism string) (sasl.Mechanism, error) {
	oauthSet := a.oauthTokenFile != "" || a.oauthTokenEndpoint != "" || a.oauthClientID != "" || a.oauthClientSecret != "" || a.oauthScope != "" || a.oauthExtensions != ""
	awsSet := a.awsRegion != "" || a.awsProfile != ""
	switch strings.ToUpper(mechanism) {
	case "OAUTHBEARER":
		if awsSet {
			return nil, fmt.Errorf("--%s-aws-* settings are for AWS_MSK_IAM, not OAUTHBEARER", name)
		}
		return a.oauth(name)
	case "AWS_MSK_IAM":
		if oauthSet {
			return nil, fmt.Errorf("--%s-oauth-* settings are for OAUTHBEARER, not AWS_MSK_IAM", name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		creds, err := upstreamauth.DefaultAWSCredentials(ctx, a.awsRegion, a.awsProfile)
		if err != nil {
			return nil, fmt.Errorf("AWS_MSK_IAM for the %s cluster: %w", name, err)
		}
		return upstreamauth.MSKIAM(creds, "kmigrate"), nil
	default:
		if oauthSet || awsSet {
			return nil, fmt.Errorf("--%s-oauth-* and --%s-aws-* settings need --%s-sasl-mechanism OAUTHBEARER or AWS_MSK_IAM", name, name, name)
		}
		return nil, nil
	}
}

func (a *upstreamAuthFlags) oauth(name string) (sasl.Mechanism, error) {
	ext, err := parseExtensions(a.oauthExtensions)
	if err != nil {
		return nil, fmt.Errorf("--%s-oauth-extensions: %w", name, err)
	}
	switch {
	case a.oauthTokenFile != "" && a.oauthTokenEndpoint != "":
		return nil, fmt.Errorf("OAUTHBEARER for the %s cluster: give --%s-oauth-token-file or --%s-oauth-token-endpoint, not both", name, name, name)
	case a.oauthTokenFile != "":
		if a.oauthClientID != "" || a.oauthClientSecret != "" || a.oauthScope != "" {
			return nil, fmt.Errorf("OAUTHBEARER for the %s cluster: the client id, secret and scope are for --%s-oauth-token-endpoint", name, name)
		}
		return upstreamauth.TokenFile(a.oauthTokenFile, ext)
	case a.oauthTokenEndpoint != "":
		if a.oauthClientID == "" {
			return nil, fmt.Errorf("OAUTHBEARER for the %s cluster: --%s-oauth-client-id is required with a token endpoint", name, name)
		}
		scopes := strings.FieldsFunc(a.oauthScope, func(r rune) bool { return r == ',' || r == ' ' })
		return upstreamauth.ClientCredentials{
			TokenURL: a.oauthTokenEndpoint, ClientID: a.oauthClientID, ClientSecret: a.oauthClientSecret,
			Scopes: scopes, Extensions: ext,
		}.Mechanism()
	default:
		return nil, fmt.Errorf("OAUTHBEARER for the %s cluster needs --%s-oauth-token-file or --%s-oauth-token-endpoint", name, name, name)
	}
}

// parseExtensions reads "k=v,k2=v2".
func parseExtensions(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok || k == "" {
			return nil, errors.New("expected key=value pairs separated by commas")
		}
		if k == "auth" {
			return nil, errors.New(`"auth" is reserved for the token (RFC 7628)`)
		}
		out[k] = v
	}
	return out, nil
}
