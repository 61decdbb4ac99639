package proxy

import (
	"context"
	"sort"

	"github.com/kmigrate/kmigrate/protocol"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleApiVersions answers locally with the versions the proxy can serve.
// A version the proxy does not know is answered in the v0 body format with
// UNSUPPORTED_VERSION (KIP-511): the client cannot parse anything newer and
// retries with the highest version listed.
func handleApiVersions(c *clientConn, r *protocol.Request) (finishFunc, error) {
	if r.APIVersion >= 3 {
		// KIP-511: which client library this is, for the few answers
		// clients disagree on (txn.go).
		req := kmsg.NewPtrApiVersionsRequest()
		req.Version = r.APIVersion
		if req.ReadFrom(r.Body) == nil {
			c.software.Store(&req.ClientSoftwareName)
		}
	}
	table := c.p.apiVersions()
	resp := kmsg.NewPtrApiVersionsResponse()
	keys := make([]int16, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	for _, k := range keys {
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, table[k][0], table[k][1]
		resp.ApiKeys = append(resp.ApiKeys, ak)
	}
	if !c.p.versionAllowed(apiVersionsKey, r.APIVersion) {
		resp.Version = 0
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		body := resp.AppendTo(nil)
		return func(context.Context) ([]byte, error) { return body, nil }, nil
	}
	resp.Version = r.APIVersion
	// Features (KIP-584) steer clients, e.g. transaction.version for
	// KIP-890: pass the upstream's through.
	up := c.p.source.features()
	if up != nil {
		resp.SupportedFeatures = up.SupportedFeatures
		resp.FinalizedFeaturesEpoch = up.FinalizedFeaturesEpoch
		resp.FinalizedFeatures = up.FinalizedFeatures
		if c.p.target != nil {
			capTransactionVersion(resp)
		}
	}
	return respond(resp), nil
}

// capTransactionVersion shows transaction.version 1 at most: with a target
// the proxy serves transactions V1 only (txn.go), and clients pick V2 from
// this feature alone (franz-go does not look at the API versions).
func capTransactionVersion(resp *kmsg.ApiVersionsResponse) {
	sup := make([]kmsg.ApiVersionsResponseSupportedFeature, len(resp.SupportedFeatures))
	copy(sup, resp.SupportedFeatures)
	for i := range sup {
		if sup[i].Name == "transaction.version" {
			sup[i].MaxVersion = min16(sup[i].MaxVersion, 1)
		}
	}
	fin := make([]kmsg.ApiVersionsResponseFinalizedFeature, len(resp.FinalizedFeatures))
	copy(fin, resp.FinalizedFeatures)
	for i := range fin {
		if fin[i].Name == "transaction.version" {
			fin[i].MaxVersionLevel = min16(fin[i].MaxVersionLevel, 1)
			fin[i].MinVersionLevel = min16(fin[i].MinVersionLevel, fin[i].MaxVersionLevel)
		}
	}
	resp.SupportedFeatures, resp.FinalizedFeatures = sup, fin
}
