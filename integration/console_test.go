package integration

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// consoleNull is the console tools' null marker: the producer's null.marker
// turns it into a null key, value or header value, and the consumer's
// null.literal prints nulls as it. The data never contains it otherwise.
const consoleNull = "<NULL>"

// consoleRecords builds n records the console producer can express in its
// line format (headers TAB key TAB value, headers "k:v" joined by ","):
// header keys hold neither ":" nor ",", header values no ",", keys no TAB,
// nothing a newline. Within those limits they vary: null and empty keys,
// values and header values, repeated header keys, ":" inside header values,
// non-ASCII text, and values from empty to 8 KiB.
func consoleRecords(n int) []Record {
	const filler = "abc, def: ghi = jkl ✓ ünïcödé ☃ "
	out := make([]Record, n)
	for i := range out {
		r := Record{Partition: -1, Offset: -1}
		switch {
		case i%50 == 7:
			r.Key = nil
		case i%333 == 5:
			r.Key = []byte{}
		default:
			r.Key = []byte(fmt.Sprintf("key-%d", i%97))
		}
		switch {
		case i%400 == 3:
			r.Value = nil // tombstone
		case i%250 == 1:
			r.Value = []byte{}
		case i%1000 == 999:
			r.Value = []byte(fmt.Sprintf("value-%05d|%s", i, strings.Repeat(filler, 8192/len(filler))))
		default:
			payload := strings.Repeat(filler, 10)[:(i*37)%300]
			payload = strings.ToValidUTF8(payload, "") // the cut may split a rune
			r.Value = []byte(fmt.Sprintf("value-%05d|%s", i, payload))
		}
		r.Headers = []Header{
			{"seq", []byte(strconv.Itoa(i))},
			{"src", []byte("console producer")},
			{"dup", []byte("a")},
			{"dup", []byte("b")},
		}
		if i%3 == 0 {
			r.Headers = append(r.Headers, Header{"colon", []byte("x:y:z")})
		}
		if i%5 == 0 {
			r.Headers = append(r.Headers, Header{"empty", []byte{}})
		}
		if i%7 == 0 {
			r.Headers = append(r.Headers, Header{"null", nil})
		}
		if i%11 == 0 {
			r.Headers = append(r.Headers, Header{"ünï", []byte("π≈3.14")})
		}
		out[i] = r
	}
	return out
}

// consoleLines renders records in ConsoleProducer's line format with
// parse.headers, parse.key and null.marker=consoleNull.
func consoleLines(rs []Record) []byte {
	var b bytes.Buffer
	text := func(v []byte) string {
		if v == nil {
			return consoleNull
		}
		return string(v)
	}
	for _, r := range rs {
		for i, h := range r.Headers {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(h.Key)
			b.WriteByte(':')
			b.WriteString(text(h.Value))
		}
		b.WriteByte('\t')
		b.WriteString(text(r.Key))
		b.WriteByte('\t')
		b.WriteString(text(r.Value))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// parseConsoleOutput parses ConsoleConsumer lines printed with print.timestamp,
// print.partition, print.offset, print.headers, print.key (in that order,
// TAB-separated, value last) and null.literal=consoleNull.
func parseConsoleOutput(topic, out string) ([]Record, error) {
	var rs []Record
	bytesOf := func(s string) []byte {
		if s == consoleNull {
			return nil
		}
		return []byte(s)
	}
	for ln, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" && out == "" {
			break
		}
		f := strings.SplitN(line, "\t", 6)
		if len(f) != 6 {
			return nil, fmt.Errorf("line %d: %d TAB-separated fields, want 6: %q", ln+1, len(f), line)
		}
		ts, ok := strings.CutPrefix(f[0], "CreateTime:")
		if !ok {
			return nil, fmt.Errorf("line %d: timestamp field %q is not CreateTime:<ms>", ln+1, f[0])
		}
		ms, err := strconv.ParseInt(ts, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d: timestamp %q: %v", ln+1, f[0], err)
		}
		ps, ok1 := strings.CutPrefix(f[1], "Partition:")
		offs, ok2 := strings.CutPrefix(f[2], "Offset:")
		p, err1 := strconv.ParseInt(ps, 10, 32)
		o, err2 := strconv.ParseInt(offs, 10, 64)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			return nil, fmt.Errorf("line %d: bad partition/offset fields %q %q", ln+1, f[1], f[2])
		}
		r := Record{
			Topic:     topic,
			Partition: int32(p),
			Offset:    o,
			Timestamp: time.UnixMilli(ms),
			Key:       bytesOf(f[4]),
			Value:     bytesOf(f[5]),
		}
		if f[3] != "NO_HEADERS" {
			for _, pair := range strings.Split(f[3], ",") {
				k, v, ok := strings.Cut(pair, ":")
				if !ok {
					return nil, fmt.Errorf("line %d: header %q has no ':'", ln+1, pair)
				}
				r.Headers = append(r.Headers, Header{k, bytesOf(v)})
			}
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// TestConsoleProducerConsumer: Kafka's ConsoleProducer writes 10,000 keyed
// records with headers into a 3-partition topic through the bootstrap; an
// independent direct read proves every input line landed exactly once in
// input order per partition; then ConsoleConsumer, in a consumer group,
// once with the classic protocol and once with KIP-848's, consumes all of
// them through the bootstrap, byte-identical (key, value, headers with their
// order, nulls) with the same partition, offset and CreateTime, in order, and
// commits the end offsets.
// consoleProduce runs ConsoleProducer (the Java client) with acks=all and
// producerProps on input, failing t if it reports any send error.
func consoleProduce(t *testing.T, boot, topic string, input []Record, producerProps ...string) {
	t.Helper()
	args := []string{"--bootstrap-server", boot, "--topic", topic,
		"--property", "parse.key=true",
		"--property", "parse.headers=true",
		"--property", "null.marker=" + consoleNull,
		"--producer-property", "acks=all",
		// The tool's own defaults (1.5s request timeout, 3 retries) are far
		// below the Java producer's (30s, retry until delivery.timeout.ms)
		// and drop records on a loaded machine; use the producer's.
		"--request-timeout-ms", "30000",
		"--message-send-max-retries", "2147483647",
	}
	for _, prop := range producerProps {
		args = append(args, "--producer-property", prop)
	}
	ctx := testCtx(t, 2*time.Minute)
	_, stderr, err := kafkatest.ToolStdin(ctx, bytes.NewReader(consoleLines(input)), kafkatest.MainConsoleProducer, args...)
	if err != nil {
		t.Fatalf("ConsoleProducer: %v", err)
	}
	// Send failures do not change the exit code: the producer's callback
	// only logs them.
	if strings.Contains(stderr, "Error when sending message") {
		t.Fatalf("ConsoleProducer reported send errors:\n%s", stderr)
	}
}

func TestConsoleProducerConsumer(t *testing.T) {
	c := cluster(t)
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")
	createTopic(t, c, topic, 3)
	const n = 10000

	input := consoleRecords(n)
	began := time.Now()
	consoleProduce(t, boot, topic, input, "linger.ms=5")
	ended := time.Now()

	log := readTopic(t, c, topic)
	assertClean(t, "console producer input vs direct read of the topic", Compare(input, log))
	parts := partitionsUsed(log)
	if len(parts) != 3 {
		t.Errorf("records landed in partitions %v, want all 3 used", parts)
	}
	keyPart := map[string]int32{}
	for _, r := range log {
		if r.Timestamp.Before(began.Add(-time.Minute)) || r.Timestamp.After(ended.Add(time.Minute)) {
			t.Fatalf("record %s has timestamp %v, outside the produce window %v..%v", describe(&r), r.Timestamp, began, ended)
		}
		if r.Key == nil {
			continue
		}
		if p, ok := keyPart[string(r.Key)]; ok && p != r.Partition {
			t.Fatalf("key %q in partitions %d and %d: the default partitioner must map a key to one partition", r.Key, p, r.Partition)
		}
		keyPart[string(r.Key)] = r.Partition
	}

	for _, proto := range []string{"classic", "consumer"} {
		t.Run("group.protocol="+proto, func(t *testing.T) {
			group := uniqueName(t, "group")
			ctx := testCtx(t, 2*time.Minute)
			stdout, stderr, err := kafkatest.Tool(ctx, kafkatest.MainConsoleConsumer,
				"--bootstrap-server", boot, "--topic", topic,
				"--group", group, "--from-beginning",
				"--max-messages", strconv.Itoa(n),
				"--timeout-ms", "30000",
				"--consumer-property", "group.protocol="+proto,
				"--property", "print.timestamp=true",
				"--property", "print.partition=true",
				"--property", "print.offset=true",
				"--property", "print.headers=true",
				"--property", "print.key=true",
				"--property", "null.literal="+consoleNull,
			)
			if err != nil {
				t.Fatalf("ConsoleConsumer: %v", err)
			}
			if !strings.Contains(stderr, fmt.Sprintf("Processed a total of %d messages", n)) {
				t.Errorf("ConsoleConsumer did not report %d messages; stderr:\n%s", n, tail(stderr, 2000))
			}
			consumed, err := parseConsoleOutput(topic, stdout)
			if err != nil {
				t.Fatalf("ConsoleConsumer output: %v", err)
			}
			if len(consumed) != n {
				t.Errorf("ConsoleConsumer printed %d records, want %d", len(consumed), n)
			}
			assertClean(t, "direct read vs ConsoleConsumer ("+proto+")", Compare(log, consumed))
			assertCommittedAtEnd(t, c, group, topic)
		})
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
