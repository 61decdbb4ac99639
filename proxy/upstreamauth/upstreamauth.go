// Package upstreamauth builds the SASL mechanisms kmigrate presents to an
// upstream cluster beyond PLAIN and SCRAM: OAUTHBEARER with a token from a
// file or from an OAuth 2.0 client-credentials endpoint, and AWS_MSK_IAM
// with credentials from the default AWS chain. The wire side is franz-go's
// (sasl/oauth, sasl/aws); this package only supplies fresh credentials.
//
// A mechanism is asked for credentials at every new connection (and at
// every re-authentication of the mirror's franz-go clients), so each
// provider caches and refreshes on its own and is safe for concurrent use.
// Secrets never appear in the errors it returns.
package upstreamauth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/twmb/franz-go/pkg/sasl"
	kaws "github.com/twmb/franz-go/pkg/sasl/aws"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// TokenFile returns an OAUTHBEARER mechanism whose token is the content of
// path (surrounding white space trimmed). The file is read again when it
// changes (another file renamed over it, or a new modification time or
// size), which is checked at each new connection: whatever rotates the
// token (a Vault or cloud agent, a Kubernetes projected volume) needs no
// signal to kmigrate. It fails when the file cannot be read now.
func TokenFile(path string, extensions map[string]string) (sasl.Mechanism, error) {
	tf := &tokenFile{path: path}
	if _, err := tf.token(); err != nil {
		return nil, err
	}
	return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
		token, err := tf.token()
		return oauth.Auth{Token: token, Extensions: extensions}, err
	}), nil
}

type tokenFile struct {
	path string

	mu    sync.Mutex
	info  os.FileInfo // of the file last read
	value string
}

func (tf *tokenFile) token() (string, error) {
	tf.mu.Lock()
	defer tf.mu.Unlock()
	info, err := os.Stat(tf.path)
	if err != nil {
		return "", fmt.Errorf("OAuth token file: %w", err)
	}
	if tf.info != nil && os.SameFile(info, tf.info) && info.ModTime().Equal(tf.info.ModTime()) && info.Size() == tf.info.Size() {
		return tf.value, nil
	}
	b, err := os.ReadFile(tf.path)
	if err != nil {
		return "", fmt.Errorf("OAuth token file: %w", err)
	}
	value := strings.TrimSpace(string(b))
	if value == "" {
		// Refuse rather than send nothing: a writer may have truncated
		// the file and not yet written the new token; the next
		// connection reads it again.
		return "", fmt.Errorf("OAuth token file %s is empty", tf.path)
	}
	tf.info, tf.value = info, value
	return value, nil
}

// ClientCredentials configures the OAuth 2.0 client-credentials grant
// (RFC 6749 section 4.4) that yields OAUTHBEARER tokens.
type ClientCredentials struct {
	TokenURL     string
	ClientID     string
	ClientSecret string
	Scopes       []string
	// Extensions are SASL extensions sent with the token (KIP-342), e.g.
	// logicalCluster and identityPoolId for Confluent Cloud.
	Extensions map[string]string
	// RefreshBefore is how long before its expiry a cached token is
	// replaced (default one minute): a connection never starts with a
	// token about to expire, whose session the broker would end at once.
	RefreshBefore time.Duration
	// HTTPClient calls the token endpoint (default: 30 s timeout).
	HTTPClient *http.Client
}

// Mechanism returns the OAUTHBEARER mechanism. Tokens are fetched on first
// use and cached until RefreshBefore their expiry; concurrent connections
// share one fetch.
func (c ClientCredentials) Mechanism() (sasl.Mechanism, error) {
	if c.TokenURL == "" || c.ClientID == "" {
		return nil, errors.New("OAuth client credentials need a token endpoint and a client id")
	}
	if c.RefreshBefore <= 0 {
		c.RefreshBefore = time.Minute
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	cfg := &clientcredentials.Config{
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		TokenURL:     c.TokenURL,
		Scopes:       c.Scopes,
	}
	// cfg.Token fetches every time; ReuseTokenSourceWithExpiry adds the
	// cache with our margin (cfg.TokenSource's own margin is fixed at 10 s).
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, hc)
	src := oauth2.ReuseTokenSourceWithExpiry(nil, tokenSourceFunc(func() (*oauth2.Token, error) {
		return cfg.Token(ctx)
	}), c.RefreshBefore)
	return oauth.Oauth(func(context.Context) (oauth.Auth, error) {
		tok, err := src.Token()
		if err != nil {
			return oauth.Auth{}, fmt.Errorf("OAuth token from %s: %w", c.TokenURL, err)
		}
		return oauth.Auth{Token: tok.AccessToken, Extensions: c.Extensions}, nil
	}), nil
}

type tokenSourceFunc func() (*oauth2.Token, error)

func (f tokenSourceFunc) Token() (*oauth2.Token, error) { return f() }

// MSKIAM returns an AWS_MSK_IAM mechanism signing each connection's
// authentication with credentials from creds (which should cache them, as
// the providers from DefaultAWSCredentials do). franz-go signs with the
// region in the broker's host name, as AWS's Java library does, and falls
// back to $AWS_REGION for names without one.
func MSKIAM(creds awssdk.CredentialsProvider, userAgent string) sasl.Mechanism {
	return kaws.ManagedStreamingIAM(func(ctx context.Context) (kaws.Auth, error) {
		c, err := creds.Retrieve(ctx)
		if err != nil {
			return kaws.Auth{}, fmt.Errorf("AWS credentials: %w", err)
		}
		return kaws.Auth{AccessKey: c.AccessKeyID, SecretKey: c.SecretAccessKey, SessionToken: c.SessionToken, UserAgent: userAgent}, nil
	})
}

// DefaultAWSCredentials loads the standard AWS credential chain: the
// environment (AWS_ACCESS_KEY_ID…), the shared config and credentials files
// (profile, or $AWS_PROFILE when empty; SSO and assume-role profiles
// included), web identity (EKS IRSA, $AWS_WEB_IDENTITY_TOKEN_FILE), then
// the ECS and EC2 instance roles. region, when set, overrides $AWS_REGION
// for the services the chain calls (STS). It checks that credentials can
// be obtained now, so a missing role fails at start rather than at the
// first connection.
func DefaultAWSCredentials(ctx context.Context, region, profile string) (awssdk.CredentialsProvider, error) {
	var opts []func(*awsconfig.LoadOptions) error
	if region != "" {
		opts = append(opts, awsconfig.WithRegion(region))
	}
	if profile != "" {
		opts = append(opts, awsconfig.WithSharedConfigProfile(profile))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return nil, fmt.Errorf("AWS credentials from the default chain: %w", err)
	}
	return cfg.Credentials, nil
}
