package replicate

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// MirroredConfigs are the topic configs copied to a topic the mirror creates
// on the target: the ones that change what a consumer reads or what a
// producer may write.
var MirroredConfigs = []string{
	"cleanup.policy", "retention.ms", "retention.bytes", "max.message.bytes",
	"compression.type", "message.timestamp.type",
}

// Selection chooses the topics in scope.
type Selection struct {
	Include *regexp.Regexp // nil: every topic
	Exclude *regexp.Regexp // nil: none
}

// Matches reports whether topic is in the selection.
func (s Selection) Matches(topic string) bool { return s.matches(topic) }

func (s Selection) matches(topic string) bool {
	if s.Include != nil && !s.Include.MatchString(topic) {
		return false
	}
	return s.Exclude == nil || !s.Exclude.MatchString(topic)
}

// syncTopics makes every selected source topic exist on the target with at
// least the source's partitions, and returns the source partition counts.
// owned lists the topics the mirror created or already maps: partitions added
// to those on the source are added on the target; a foreign target topic with
// fewer partitions is refused, because records would land in other
// partitions and lose their order.
func syncTopics(ctx context.Context, src, dst *kadm.Client, sel Selection, owned func(topic string) bool) (map[string]int, error) {
	srcTopics, err := src.ListTopics(ctx)
	if err != nil {
		return nil, fmt.Errorf("list source topics: %w", err)
	}
	want := make(map[string]int)
	var names []string
	for _, t := range srcTopics.Sorted() {
		if t.IsInternal || t.Err != nil || !sel.matches(t.Topic) {
			continue
		}
		want[t.Topic] = len(t.Partitions)
		names = append(names, t.Topic)
	}
	if len(names) == 0 {
		return want, nil
	}
	dstTopics, err := dst.ListTopics(ctx, names...)
	if err != nil {
		return nil, fmt.Errorf("list target topics: %w", err)
	}
	var missing []string
	for _, name := range names {
		dt, ok := dstTopics[name]
		if !ok || dt.Err != nil {
			missing = append(missing, name)
			continue
		}
		have := len(dt.Partitions)
		switch {
		case have >= want[name]:
		case owned(name):
			resps, err := dst.UpdatePartitions(ctx, want[name], name)
			if err == nil {
				err = resps.Error()
			}
			if err != nil {
				return nil, fmt.Errorf("add partitions to target topic %s (%d → %d): %w", name, have, want[name], err)
			}
		default:
			return nil, fmt.Errorf("target topic %s has %d partitions, the source has %d: mirroring would move records between partitions and break their order; give the target topic at least %d partitions or exclude it", name, have, want[name], want[name])
		}
	}
	if len(missing) == 0 {
		return want, nil
	}
	sort.Strings(missing)
	configs, err := src.DescribeTopicConfigs(ctx, missing...)
	if err != nil {
		return nil, fmt.Errorf("describe source topic configs: %w", err)
	}
	for _, rc := range configs {
		if rc.Err != nil {
			return nil, fmt.Errorf("describe source topic %s configs: %w", rc.Name, rc.Err)
		}
		set := make(map[string]*string)
		for _, c := range rc.Configs {
			for _, key := range MirroredConfigs {
				if c.Key == key && c.Value != nil {
					set[key] = c.Value
				}
			}
		}
		// A topic created a moment ago may not be listed yet: "already
		// exists" is success.
		resp, err := dst.CreateTopic(ctx, int32(want[rc.Name]), -1, set, rc.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return nil, fmt.Errorf("create target topic %s: %w %s", rc.Name, err, resp.ErrMessage)
		}
	}
	return want, nil
}
