package preflight

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/kmigrate/kmigrate/replicate"
)

// checkTimeout bounds each request of the checks; a broker that does not
// answer in that time is reported, not waited for.
const checkTimeout = 20 * time.Second

// clusterInfo is a cluster that answered, with what it said about itself.
type clusterInfo struct {
	Cluster
	adm      *kadm.Client
	versions *kversion.Versions
}

// connect proves the proxy's principal can reach and authenticate to c.
// Authentication happens on the first request, so a wrong password or an
// unknown mechanism shows up here, named with the cluster and mechanism.
func (r *run) connect(ctx context.Context, c Cluster) *clusterInfo {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	av := kmsg.NewPtrApiVersionsRequest()
	av.ClientSoftwareName = "kmigrate-preflight"
	av.ClientSoftwareVersion = "1"
	avResp, err := av.RequestWith(ctx, c.Client)
	if err == nil {
		err = kerr.ErrorForCode(avResp.ErrorCode)
	}
	if err != nil {
		r.add(Fail, c.Name, "connect", c.Auth, "cannot connect or authenticate: %v", err)
		return nil
	}
	md := kmsg.NewPtrMetadataRequest()
	md.Topics = []kmsg.MetadataRequestTopic{} // brokers only
	mdResp, err := md.RequestWith(ctx, c.Client)
	if err != nil {
		r.add(Fail, c.Name, "connect", c.Auth, "metadata: %v", err)
		return nil
	}
	vs := kversion.FromApiVersionsResponse(avResp)
	id := ""
	if mdResp.ClusterID != nil {
		id = " " + *mdResp.ClusterID
	}
	r.add(OK, c.Name, "connect", c.Auth, "cluster%s: %d %s, Kafka %s", id, len(mdResp.Brokers), plural(len(mdResp.Brokers), "broker"), vs.VersionGuess())
	return &clusterInfo{Cluster: c, adm: kadm.NewClient(c.Client), versions: vs}
}

// neededAPI is a request the proxy or the mirror sends, and the oldest
// version of it kmigrate can use.
type neededAPI struct {
	key, min int16
	why      string
	// targetOnly: only the target must serve it (the mirror creates
	// topics there); optional: a missing API disables one feature.
	targetOnly, optional bool
}

var neededAPIs = []neededAPI{
	{key: 0, min: 3, why: "record batches v2 (Kafka 0.11+)"},
	{key: 1, min: 4, why: "record batches v2 (Kafka 0.11+)"},
	{key: 2, min: 1, why: "offset translation by timestamp and position"},
	{key: 3, min: 1, why: "routing"},
	{key: 8, min: 2, why: "moving committed offsets"},
	{key: 9, min: 1, why: "moving committed offsets"},
	{key: 10, min: 1, why: "group and transaction coordinators"},
	{key: 22, min: 0, why: "idempotent producers across a topic cutover"},
	{key: 32, min: 0, why: "copying topic configs"},
	{key: 19, min: 0, why: "creating missing topics", targetOnly: true},
	{key: 37, min: 0, why: "adding partitions the source gained", targetOnly: true},
	{key: 24, min: 0, why: "transactional producers", optional: true},
	{key: 26, min: 0, why: "transactional producers", optional: true},
	{key: 28, min: 0, why: "exactly-once consumers (TxnOffsetCommit)", optional: true},
}

// consumerGroupHeartbeat is KIP-848's key; a broker offering it accepts
// groups kmigrate cannot move.
const consumerGroupHeartbeat = 68

func (r *run) apiVersions(c *clusterInfo, isTarget bool) {
	var missing, weak []string
	for _, api := range neededAPIs {
		if api.targetOnly && !isTarget {
			continue
		}
		max, ok := c.versions.LookupMaxKeyVersion(api.key)
		if ok && max >= api.min {
			continue
		}
		name := kmsg.NameForKey(api.key)
		got := "absent"
		if ok {
			got = fmt.Sprintf("only up to v%d", max)
		}
		line := fmt.Sprintf("%s v%d+ (%s): %s", name, api.min, api.why, got)
		if api.optional {
			weak = append(weak, line)
		} else {
			missing = append(missing, line)
		}
	}
	switch {
	case len(missing) > 0:
		r.add(Fail, c.Name, "api", "versions", "the brokers lack %s", strings.Join(missing, "; "))
	case len(weak) > 0:
		r.add(Warn, c.Name, "api", "versions", "the brokers lack %s", strings.Join(weak, "; "))
	default:
		r.add(OK, c.Name, "api", "versions", "every request kmigrate sends is served")
	}
	if c.versions.HasKey(consumerGroupHeartbeat) && !isTarget {
		r.add(OK, c.Name, "api", "KIP-848", "the brokers offer the consumer group protocol: groups using it (group.protocol=consumer) cannot be moved until their members use group.protocol=classic")
	}
}

// topicOps are the operations the proxy's principal needs on a topic in
// scope, with why: the proxy forwards every client under its own identity.
var sourceTopicOps = []opNeed{
	{kmsg.ACLOperationDescribe, "to see it at all"},
	{kmsg.ACLOperationRead, "the mirror and the proxied consumers read it"},
	{kmsg.ACLOperationWrite, "the proxied producers write it, and after a topic cutover the reverse mirror copies the target's records back"},
	{kmsg.ACLOperationDescribeConfigs, "the mirror copies its configs when it creates the target topic"},
}

var targetTopicOps = []opNeed{
	{kmsg.ACLOperationDescribe, "to see it at all"},
	{kmsg.ACLOperationRead, "moved consumers read it and the reverse mirror copies it back"},
	{kmsg.ACLOperationWrite, "the mirror writes it, and producers after a topic cutover"},
	{kmsg.ACLOperationAlter, "the mirror adds the partitions the source gains"},
	{kmsg.ACLOperationDescribeConfigs, "preflight compares its configs with the source's"},
}

var groupOps = []opNeed{
	{kmsg.ACLOperationDescribe, "to find its coordinator and describe it"},
	{kmsg.ACLOperationRead, "the proxied members join it and commit, and the cutover reads and writes its offsets"},
}

type opNeed struct {
	op  kmsg.ACLOperation
	why string
}

// missingOps returns the needs not granted, or ok=false when the broker
// did not report authorized operations (kadm decodes
// AUTHORIZED_OPERATIONS_OMITTED as none; a principal that sees a topic or
// group holds at least DESCRIBE, so none means omitted).
func missingOps(granted []kadm.ACLOperation, needs []opNeed) (missing []opNeed, ok bool) {
	if len(granted) == 0 {
		return nil, false
	}
	for _, n := range needs {
		if !slices.Contains(granted, n.op) && !slices.Contains(granted, kmsg.ACLOperationAll) {
			missing = append(missing, n)
		}
	}
	return missing, true
}

func describeMissing(missing []opNeed) string {
	var ops, whys []string
	for _, m := range missing {
		ops = append(ops, aclCLIName(m.op.String()))
		whys = append(whys, aclCLIName(m.op.String())+": "+m.why)
	}
	return fmt.Sprintf("the principal lacks %s (%s)", strings.Join(ops, ", "), strings.Join(whys, "; "))
}

// topicMetadata asks c for topics (nil: all) with the principal's
// authorized operations on each.
func topicMetadata(ctx context.Context, c *clusterInfo, topics []string) (*kmsg.MetadataResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	req := kmsg.NewPtrMetadataRequest()
	req.IncludeTopicAuthorizedOperations = true
	if topics != nil {
		req.Topics = []kmsg.MetadataRequestTopic{}
		for _, t := range topics {
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(t)
			req.Topics = append(req.Topics, rt)
		}
	}
	return req.RequestWith(ctx, c.Client)
}

// topics checks the topics in scope on the source and what the target holds
// under the same names.
func (r *run) topics(ctx context.Context, src, dst *clusterInfo) {
	all, err := topicMetadata(ctx, src, nil)
	if err != nil {
		r.add(Fail, src.Name, "topic", "listing", "metadata: %v", err)
		return
	}
	partitions := make(map[string]int)
	srcOps := make(map[string]int32)
	for _, t := range all.Topics {
		if t.Topic == nil || t.IsInternal || t.ErrorCode != 0 || !r.cfg.Topics(*t.Topic) {
			continue
		}
		partitions[*t.Topic] = len(t.Partitions)
		srcOps[*t.Topic] = t.AuthorizedOperations
	}
	// A topic without DESCRIBE is left out of a listing without a word;
	// the names the selection spells out are asked for one by one.
	var unseen []string
	for _, name := range r.cfg.NamedTopics {
		if _, ok := partitions[name]; !ok {
			unseen = append(unseen, name)
		}
	}
	if len(unseen) > 0 {
		named, err := topicMetadata(ctx, src, unseen)
		if err != nil {
			r.add(Fail, src.Name, "topic", "listing", "metadata of %v: %v", unseen, err)
			return
		}
		for _, t := range named.Topics {
			name := *t.Topic
			switch err := kerr.ErrorForCode(t.ErrorCode); {
			case errors.Is(err, kerr.TopicAuthorizationFailed):
				r.add(Fail, src.Name, "acl", "topic "+name, "the principal lacks Describe: the topic is invisible to the proxy and its clients")
			case errors.Is(err, kerr.UnknownTopicOrPartition):
				r.add(Warn, src.Name, "topic", "topic "+name, "named by --topics but does not exist on the source")
			case err != nil:
				r.add(Fail, src.Name, "topic", "topic "+name, "metadata: %v", err)
			}
		}
	}
	names := make([]string, 0, len(partitions))
	for name := range partitions {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(names) == 0 {
		r.add(Warn, src.Name, "topic", "selection", "no topic on the source matches --topics/--exclude-topics (or the principal may describe none)")
		return
	}

	granted, unknown := 0, 0
	for _, name := range names {
		missing, ok := missingOps(kadm.DecodeACLOperations(srcOps[name]), sourceTopicOps)
		switch {
		case !ok:
			unknown++
		case len(missing) > 0:
			r.add(Fail, src.Name, "acl", "topic "+name, "%s", describeMissing(missing))
		default:
			granted++
		}
	}
	if granted > 0 {
		r.add(OK, src.Name, "acl", fmt.Sprintf("%d %s", granted, plural(granted, "topic")), "Describe, Read, Write, DescribeConfigs granted")
	}
	if unknown > 0 {
		r.add(Warn, src.Name, "acl", fmt.Sprintf("%d %s", unknown, plural(unknown, "topic")), "the brokers did not report the principal's operations (Metadata v8+ needed): ACLs unchecked")
	}
	if dst != nil {
		r.targetTopics(ctx, src, dst, names, partitions)
	}
}

func (r *run) targetTopics(ctx context.Context, src, dst *clusterInfo, names []string, partitions map[string]int) {
	md, err := topicMetadata(ctx, dst, names)
	if err != nil {
		r.add(Fail, dst.Name, "topic", "listing", "metadata: %v", err)
		return
	}
	var missingTopics, existing []string
	granted := 0
	for _, t := range md.Topics {
		name := *t.Topic
		subject := "topic " + name
		switch err := kerr.ErrorForCode(t.ErrorCode); {
		case errors.Is(err, kerr.UnknownTopicOrPartition):
			missingTopics = append(missingTopics, name)
			continue
		case errors.Is(err, kerr.TopicAuthorizationFailed):
			// Kafka does not say whether a topic the principal may not
			// describe exists; a validated creation tells.
			r.undescribable(ctx, dst, name, partitions[name])
			continue
		case err != nil:
			r.add(Fail, dst.Name, "topic", subject, "metadata: %v", err)
			continue
		}
		existing = append(existing, name)
		if missing, ok := missingOps(kadm.DecodeACLOperations(t.AuthorizedOperations), targetTopicOps); ok && len(missing) > 0 {
			r.add(Fail, dst.Name, "acl", subject, "%s", describeMissing(missing))
		} else if ok {
			granted++
		}
		have, want := len(t.Partitions), partitions[name]
		switch {
		case have < want:
			r.add(Fail, dst.Name, "topic", subject, "%d partitions, the source has %d: mirroring would move records between partitions and break their order; give it at least %d partitions or exclude it", have, want, want)
		case have > want:
			r.add(Warn, dst.Name, "topic", subject, "%d partitions, the source has %d: after a topic cutover, keyed records hash over %d partitions and a key's new records land in another partition than its old ones", have, want, have)
		}
	}
	if granted > 0 {
		r.add(OK, dst.Name, "acl", fmt.Sprintf("%d existing %s", granted, plural(granted, "topic")), "Describe, Read, Write, Alter, DescribeConfigs granted")
	}
	r.compareConfigs(ctx, src, dst, existing)
	r.nonEmpty(ctx, dst, existing)
	r.creatable(ctx, dst, missingTopics, partitions)
}

// compareConfigs reports the mirrored configs whose values differ.
func (r *run) compareConfigs(ctx context.Context, src, dst *clusterInfo, topics []string) {
	if len(topics) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	read := func(c *clusterInfo) (map[string]map[string]string, error) {
		rcs, err := c.adm.DescribeTopicConfigs(ctx, topics...)
		if err != nil {
			return nil, err
		}
		out := make(map[string]map[string]string)
		for _, rc := range rcs {
			if rc.Err != nil {
				r.add(Warn, c.Name, "topic", "topic "+rc.Name, "configs not compared: %v", rc.Err)
				continue
			}
			vals := make(map[string]string)
			for _, cfg := range rc.Configs {
				if cfg.Value != nil {
					vals[cfg.Key] = *cfg.Value
				}
			}
			out[rc.Name] = vals
		}
		return out, nil
	}
	srcCfg, err := read(src)
	if err != nil {
		r.add(Warn, src.Name, "topic", "configs", "not compared: %v", err)
		return
	}
	dstCfg, err := read(dst)
	if err != nil {
		r.add(Warn, dst.Name, "topic", "configs", "not compared: %v", err)
		return
	}
	for _, name := range topics {
		s, d := srcCfg[name], dstCfg[name]
		if s == nil || d == nil {
			continue
		}
		var diffs []string
		for _, key := range replicate.MirroredConfigs {
			if s[key] == d[key] {
				continue
			}
			if key == "max.message.bytes" {
				sv, _ := strconv.Atoi(s[key])
				dv, _ := strconv.Atoi(d[key])
				if dv < sv {
					r.add(Fail, dst.Name, "topic", "topic "+name, "max.message.bytes %d is below the source's %d: a batch the source took can be refused here and stop the mirror", dv, sv)
					continue
				}
			}
			diffs = append(diffs, fmt.Sprintf("%s source=%s target=%s", key, s[key], d[key]))
		}
		if len(diffs) > 0 {
			r.add(Warn, dst.Name, "topic", "topic "+name, "configs differ (the mirror keeps the target's): %s", strings.Join(diffs, ", "))
		}
	}
}

// nonEmpty reports target topics that already hold records: the mirror
// starts a partition only when the target's is empty (replicate's resume),
// so before mirroring this blocks the topic.
func (r *run) nonEmpty(ctx context.Context, dst *clusterInfo, topics []string) {
	if len(topics) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	starts, err := dst.adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		r.add(Warn, dst.Name, "topic", "offsets", "not read: %v", err)
		return
	}
	ends, err := dst.adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		r.add(Warn, dst.Name, "topic", "offsets", "not read: %v", err)
		return
	}
	for _, name := range topics {
		var held int64
		ends.Each(func(o kadm.ListedOffset) {
			if o.Topic != name || o.Err != nil {
				return
			}
			if s, ok := starts.Lookup(name, o.Partition); ok && s.Err == nil {
				held += o.Offset - s.Offset
			}
		})
		if held > 0 {
			r.add(Fail, dst.Name, "topic", "topic "+name, "already holds %d records: the mirror refuses a partition holding records it did not write, since copying into it would duplicate them; empty it or exclude the topic (ignore this once kmigrate's own mirror writes it)", held)
		}
	}
}

// undescribable reports a target topic the principal may not describe.
func (r *run) undescribable(ctx context.Context, dst *clusterInfo, topic string, partitions int) {
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	resp, err := dst.adm.ValidateCreateTopics(ctx, int32(partitions), -1, nil, topic)
	if err == nil {
		err = resp[topic].Err
	}
	lacks := "the principal lacks Describe, Read, Write, Alter and DescribeConfigs on it (the mirror writes it, moved clients use it)"
	switch {
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		r.add(Fail, dst.Name, "acl", "topic "+topic, "the principal lacks Describe and Create: the mirror can neither see nor create it")
	case errors.Is(err, kerr.TopicAlreadyExists):
		r.add(Fail, dst.Name, "acl", "topic "+topic, "exists, but %s", lacks)
	case err != nil:
		r.add(Fail, dst.Name, "topic", "topic "+topic, "the principal lacks Describe, and a validated creation fails: %v", err)
	default:
		r.add(Fail, dst.Name, "acl", "topic "+topic, "missing; the mirror may create it, but %s", lacks)
	}
}

// creatable asks the target to validate, without creating, the topics the
// mirror will create: the broker checks CREATE and the settings.
func (r *run) creatable(ctx context.Context, dst *clusterInfo, topics []string, partitions map[string]int) {
	if len(topics) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	ok := 0
	for _, name := range topics {
		resp, err := dst.adm.ValidateCreateTopics(ctx, int32(partitions[name]), -1, nil, name)
		if err == nil {
			err = resp[name].Err
		}
		switch {
		case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
			r.add(Fail, dst.Name, "acl", "topic "+name, "missing here and the principal lacks Create (on the cluster or the topic): the mirror creates missing topics")
		case errors.Is(err, kerr.TopicAlreadyExists):
			ok++
		case err != nil:
			r.add(Fail, dst.Name, "topic", "topic "+name, "missing here and cannot be created: %v", err)
		default:
			ok++
		}
	}
	if ok > 0 {
		r.add(OK, dst.Name, "topic", fmt.Sprintf("%d missing %s", ok, plural(ok, "topic")), "Create granted: the mirror will create them with the source's partitions and configs")
	}
}

// groups checks the consumer groups that will be moved on both clusters.
func (r *run) groups(ctx context.Context, src, dst *clusterInfo) {
	ctx, cancel := context.WithTimeout(ctx, 2*checkTimeout)
	defer cancel()
	names := r.cfg.Groups
	if len(names) == 0 {
		listed, err := src.adm.ListGroups(ctx)
		if err != nil {
			r.add(Warn, src.Name, "group", "listing", "cannot list groups (%v): name the groups to move with --groups", err)
			return
		}
		for _, g := range listed.Sorted() {
			if g.ProtocolType == "consumer" || g.ProtocolType == "" {
				names = append(names, g.Group)
			}
		}
		if len(names) == 0 {
			r.add(OK, src.Name, "group", "listing", "no consumer group the principal can describe: name the groups to move with --groups to check them")
			return
		}
		if len(names) > MaxListedGroups {
			r.add(Warn, src.Name, "group", "listing", "%d groups listed, the first %d checked: name the groups to move with --groups", len(names), MaxListedGroups)
			names = names[:MaxListedGroups]
		}
	}
	for _, c := range []*clusterInfo{src, dst} {
		if c == nil {
			continue
		}
		// Without DESCRIBE the coordinator lookup already fails, and the
		// group is missing from the answer with the error in err.
		described, err := c.adm.DescribeGroups(ctx, names...)
		granted := 0
		for _, name := range names {
			g, ok := described[name]
			if !ok {
				g.Err = err
				if g.Err == nil {
					g.Err = errors.New("missing from the answer")
				}
			}
			switch {
			case errors.Is(g.Err, kerr.GroupAuthorizationFailed):
				r.add(Fail, c.Name, "acl", "group "+name, "the principal lacks Describe and Read (the proxied members join it and commit; the cutover reads and writes its offsets)")
			case errors.Is(g.Err, kerr.GroupIDNotFound):
				// The coordinator lookup passed, so DESCRIBE is
				// granted; READ shows only on a group that exists.
				r.add(OK, c.Name, "acl", "group "+name, "not on this cluster yet: Describe granted, Read is checked once the group exists")
			case g.Err != nil:
				r.add(Fail, c.Name, "group", "group "+name, "describe: %v", g.Err)
			default:
				if missing, ok := missingOps(g.AuthorizedOperations, groupOps); ok && len(missing) > 0 {
					r.add(Fail, c.Name, "acl", "group "+name, "%s", describeMissing(missing))
				} else {
					granted++
				}
			}
		}
		if granted > 0 {
			r.add(OK, c.Name, "acl", fmt.Sprintf("%d %s", granted, plural(granted, "group")), "Describe, Read granted")
		}
	}
}

// transactionalIDs checks that the principal may describe each
// transactional id on both clusters. WRITE cannot be checked without
// InitProducerId, which would fence the live producer, so it is only named.
func (r *run) transactionalIDs(ctx context.Context, src, dst *clusterInfo) {
	if len(r.cfg.TransactionalIDs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	for _, c := range []*clusterInfo{src, dst} {
		if c == nil {
			continue
		}
		granted := 0
		for _, resp := range c.adm.FindTxnCoordinators(ctx, r.cfg.TransactionalIDs...) {
			switch {
			case errors.Is(resp.Err, kerr.TransactionalIDAuthorizationFailed):
				r.add(Fail, c.Name, "acl", "transactional-id "+resp.Name, "the principal lacks Describe and Write: transactional producers behind the proxy run under its identity")
			case resp.Err != nil:
				r.add(Fail, c.Name, "transaction", "transactional-id "+resp.Name, "find coordinator: %v", resp.Err)
			default:
				granted++
			}
		}
		if granted > 0 {
			r.add(OK, c.Name, "acl", fmt.Sprintf("%d transactional %s", granted, plural(granted, "id")), "Describe granted (Write is needed too; it cannot be checked without fencing the producer)")
		}
	}
}
