package integration

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// kcatFormat prints every field kcat knows, with the key and value lengths
// (-1 for null) ahead of their raw bytes so that the parse is exact whatever
// the bytes are.
const kcatFormat = `%t\t%p\t%o\t%T\t%K\t%S\t%k%s\t%h\n`

// kcatBatch is one kcat -P run: its -H headers apply to all its records.
type kcatBatch struct {
	headers []Header // nil Value: "-H name" (a null header value)
	nulls   bool     // -Z: empty keys and values are sent as null
	lines   []string // "key:value"
}

func (b kcatBatch) args() []string {
	var a []string
	for _, h := range b.headers {
		if h.Value == nil {
			a = append(a, "-H", h.Key)
		} else {
			a = append(a, "-H", h.Key+"="+string(h.Value))
		}
	}
	if b.nulls {
		a = append(a, "-Z")
	}
	return a
}

// kcatBatches builds n records in four kcat runs with different header sets:
// repeated header names, empty, null and non-ASCII header values, empty keys
// and values, and (-Z) null keys and values.
func kcatBatches(n int) ([]kcatBatch, []Record) {
	bs := []kcatBatch{
		{headers: []Header{{"batch", []byte("0")}, {"tool", []byte("kcat")}, {"dup", []byte("1")}, {"dup", []byte("2")}}},
		{headers: []Header{{"batch", []byte("1")}, {"empty", []byte{}}, {"ünï", []byte("☃ a=b")}}},
		{headers: []Header{{"batch", []byte("2")}, {"nullh", nil}}},
		{headers: []Header{{"batch", []byte("3")}}, nulls: true},
	}
	var want []Record
	for i := 0; i < n; i++ {
		b := &bs[i*len(bs)/n]
		key := fmt.Sprintf("key-%d", i%89)
		val := fmt.Sprintf("value-%04d: kcat, librdkafka = ✓ %s", i, strings.Repeat("x", (i*53)%400))
		switch i % 100 {
		case 17:
			key = ""
		case 42:
			val = ""
		}
		b.lines = append(b.lines, key+":"+val)
		r := Record{Partition: -1, Offset: -1, Key: []byte(key), Value: []byte(val), Headers: b.headers}
		if b.nulls {
			if key == "" {
				r.Key = nil
			}
			if val == "" {
				r.Value = nil
			}
		}
		want = append(want, r)
	}
	return bs, want
}

// parseKcat parses output printed with kcatFormat.
func parseKcat(out []byte) ([]Record, error) {
	var rs []Record
	for len(out) > 0 {
		var f [6]string
		for i := range f {
			j := bytes.IndexByte(out, '\t')
			if j < 0 {
				return nil, fmt.Errorf("record %d: truncated header fields: %q", len(rs), tail(string(out), 200))
			}
			f[i], out = string(out[:j]), out[j+1:]
		}
		p, err1 := strconv.ParseInt(f[1], 10, 32)
		o, err2 := strconv.ParseInt(f[2], 10, 64)
		ts, err3 := strconv.ParseInt(f[3], 10, 64)
		kl, err4 := strconv.Atoi(f[4])
		vl, err5 := strconv.Atoi(f[5])
		for _, err := range []error{err1, err2, err3, err4, err5} {
			if err != nil {
				return nil, fmt.Errorf("record %d: fields %q: %v", len(rs), f, err)
			}
		}
		r := Record{Topic: f[0], Partition: int32(p), Offset: o, Timestamp: time.UnixMilli(ts)}
		take := func(l int) ([]byte, error) {
			if l < 0 {
				return nil, nil
			}
			if len(out) < l {
				return nil, fmt.Errorf("record %d: %d bytes left, want %d", len(rs), len(out), l)
			}
			b := append([]byte{}, out[:l]...)
			out = out[l:]
			return b, nil
		}
		var err error
		if r.Key, err = take(kl); err != nil {
			return nil, err
		}
		if r.Value, err = take(vl); err != nil {
			return nil, err
		}
		if len(out) == 0 || out[0] != '\t' {
			return nil, fmt.Errorf("record %d: no TAB after the value", len(rs))
		}
		out = out[1:]
		j := bytes.IndexByte(out, '\n')
		if j < 0 {
			return nil, fmt.Errorf("record %d: unterminated headers", len(rs))
		}
		hs := string(out[:j])
		out = out[j+1:]
		if hs != "" {
			// kcat prints headers as name=value joined by ",", a null
			// value as NULL. The test data has no "," in headers, no "="
			// in names and no literal NULL values.
			for _, pair := range strings.Split(hs, ",") {
				k, v, ok := strings.Cut(pair, "=")
				if !ok {
					return nil, fmt.Errorf("record %d: header %q has no '='", len(rs), pair)
				}
				h := Header{Key: k, Value: []byte(v)}
				if v == "NULL" {
					h.Value = nil
				}
				r.Headers = append(r.Headers, h)
			}
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// runKcat runs kcat with args and stdin, failing t on a non-zero exit.
func runKcat(t *testing.T, ctx context.Context, kcat string, stdin []byte, args ...string) (stdout []byte, stderr string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, kcat, args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errb
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		t.Fatalf("kcat %s: %v (context: %v)\nstderr:\n%s", strings.Join(args, " "), err, ctx.Err(), tail(errb.String(), 3000))
	}
	return out.Bytes(), errb.String()
}

// TestKcat: librdkafka through kcat. Four idempotent kcat -P runs produce
// 1,000 keyed records with headers (including null keys, values and header
// values) into a 4-partition topic through the bootstrap; a direct read
// proves each landed exactly once, in input order per partition, and that
// librdkafka's partitioner kept each key on one partition. Then kcat
// consumes them all through the bootstrap twice, as a consumer group (-G,
// which must commit the end offsets) and with -C -o beginning -e, each time
// byte-identical with the same partition, offset and timestamp, in order.
func TestKcat(t *testing.T) {
	kcat, err := kafkatest.Kcat()
	if err != nil {
		t.Fatal(err)
	}
	c := cluster(t)
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")
	createTopic(t, c, topic, 4)
	const n = 1000

	batches, input := kcatBatches(n)
	ctx := testCtx(t, 2*time.Minute)
	for i, b := range batches {
		args := append([]string{"-b", boot, "-P", "-t", topic, "-K:",
			"-X", "enable.idempotence=true", "-X", "acks=all", "-X", "linger.ms=5"}, b.args()...)
		_, stderr := runKcat(t, ctx, kcat, []byte(strings.Join(b.lines, "\n")+"\n"), args...)
		// kcat exits 1 when a delivery report failed; it also says so.
		if strings.Contains(stderr, "Delivery failed") || strings.Contains(stderr, "% ERROR") {
			t.Errorf("kcat -P batch %d reported errors:\n%s", i, tail(stderr, 3000))
		}
	}

	log := readTopic(t, c, topic)
	assertClean(t, "kcat -P input vs direct read of the topic", Compare(input, log))
	if parts := partitionsUsed(log); len(parts) != 4 {
		t.Errorf("records landed in partitions %v, want all 4 used", parts)
	}
	keyPart := map[string]int32{}
	for _, r := range log {
		if len(r.Key) == 0 {
			continue // null and empty keys are spread at random
		}
		if p, ok := keyPart[string(r.Key)]; ok && p != r.Partition {
			t.Fatalf("key %q in partitions %d and %d", r.Key, p, r.Partition)
		}
		keyPart[string(r.Key)] = r.Partition
	}

	t.Run("group", func(t *testing.T) {
		group := uniqueName(t, "group")
		ctx := testCtx(t, 90*time.Second)
		out, _ := runKcat(t, ctx, kcat, nil, "-b", boot, "-G", group,
			"-X", "auto.offset.reset=earliest", "-c", strconv.Itoa(n), "-f", kcatFormat, topic)
		consumed, err := parseKcat(out)
		if err != nil {
			t.Fatalf("kcat -G output: %v", err)
		}
		if len(consumed) != n {
			t.Errorf("kcat -G printed %d records, want %d", len(consumed), n)
		}
		assertClean(t, "direct read vs kcat -G", Compare(log, consumed))
		assertCommittedAtEnd(t, c, group, topic)
	})

	t.Run("assign", func(t *testing.T) {
		ctx := testCtx(t, 90*time.Second)
		out, _ := runKcat(t, ctx, kcat, nil, "-b", boot, "-C", "-t", topic, "-o", "beginning", "-e", "-f", kcatFormat)
		consumed, err := parseKcat(out)
		if err != nil {
			t.Fatalf("kcat -C output: %v", err)
		}
		if len(consumed) != n {
			t.Errorf("kcat -C printed %d records, want %d", len(consumed), n)
		}
		assertClean(t, "direct read vs kcat -C -e", Compare(log, consumed))
	})
}
