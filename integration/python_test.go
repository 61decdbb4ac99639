package integration

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kmigrate/kmigrate/internal/kafkatest"
)

// confluentScript produces the records given on stdin (one JSON object per
// line) with an idempotent confluent-kafka Producer, printing a delivery
// report per record, then consumes n records in a consumer group, commits
// synchronously and prints each record. Bytes travel base64-encoded, null as
// JSON null, so that binary keys, values and headers survive exactly.
const confluentScript = `
import base64, json, sys, time
from confluent_kafka import Consumer, Producer, TIMESTAMP_CREATE_TIME

boot, topic, group, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def b64(b):
    return None if b is None else base64.b64encode(b).decode()

def unb64(s):
    return None if s is None else base64.b64decode(s)

def out(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")

p = Producer({"bootstrap.servers": boot, "enable.idempotence": True, "acks": "all",
              "linger.ms": 5, "client.id": "interop-python-producer"})

def report(i):
    def cb(err, msg):
        if err is not None:
            out(kind="failed", i=i, err=str(err))
        else:
            out(kind="delivered", i=i, partition=msg.partition(), offset=msg.offset(),
                ts=msg.timestamp()[1], tstype=msg.timestamp()[0])
    return cb

for i, line in enumerate(sys.stdin):
    r = json.loads(line)
    headers = [(k, unb64(v)) for k, v in r["headers"]]
    while True:
        try:
            p.produce(topic, key=unb64(r["key"]), value=unb64(r["value"]), headers=headers, on_delivery=report(i))
            break
        except BufferError:
            p.poll(0.1)
    p.poll(0)
left = p.flush(60)
if left:
    out(kind="error", err="%d records not delivered after flush" % left)
    sys.exit(1)

c = Consumer({"bootstrap.servers": boot, "group.id": group, "auto.offset.reset": "earliest",
              "enable.auto.commit": False, "client.id": "interop-python-consumer"})
c.subscribe([topic])
got, deadline = 0, time.time() + 60
while got < n and time.time() < deadline:
    for m in c.consume(num_messages=500, timeout=1.0):
        if m.error() is not None:
            out(kind="error", err=str(m.error()))
            sys.exit(1)
        hs = m.headers() or []
        out(kind="consumed", topic=m.topic(), partition=m.partition(), offset=m.offset(),
            ts=m.timestamp()[1], tstype=m.timestamp()[0], key=b64(m.key()), value=b64(m.value()),
            headers=[[k, b64(v)] for k, v in hs])
        got += 1
# A little longer, to see any record delivered twice.
for m in c.consume(num_messages=500, timeout=0.5):
    if m.error() is None:
        out(kind="consumed", topic=m.topic(), partition=m.partition(), offset=m.offset(),
            ts=m.timestamp()[1], tstype=m.timestamp()[0], key=b64(m.key()), value=b64(m.value()),
            headers=[[k, b64(v)] for k, v in (m.headers() or [])])
c.commit(asynchronous=False)
c.close()
`

// pyRecord is one record as the script exchanges it.
type pyRecord struct {
	Kind      string       `json:"kind"`
	I         int          `json:"i"`
	Err       string       `json:"err"`
	Topic     string       `json:"topic"`
	Partition int32        `json:"partition"`
	Offset    int64        `json:"offset"`
	TS        int64        `json:"ts"`
	TSType    int          `json:"tstype"`
	Key       *string      `json:"key"`
	Value     *string      `json:"value"`
	Headers   [][2]*string `json:"headers"`
}

func b64(b []byte) *string {
	if b == nil {
		return nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return &s
}

func unb64(s *string) ([]byte, error) {
	if s == nil {
		return nil, nil
	}
	return base64.StdEncoding.DecodeString(*s)
}

// binaryRecords builds n records with arbitrary bytes: every byte value
// including NUL, TAB and newline, invalid UTF-8, null and empty keys, values
// and header values, repeated header keys.
func binaryRecords(n int) []Record {
	out := make([]Record, n)
	for i := range out {
		v := []byte(fmt.Sprintf("py-%05d|", i))
		for j := 0; j < (i*31)%700; j++ {
			v = append(v, byte(i+j*7))
		}
		r := Record{
			Partition: -1, Offset: -1,
			Key:   []byte{byte(i % 13), 0, '\n', byte(i % 7), 0xff},
			Value: v,
			Headers: []Header{
				{"seq", []byte(strconv.Itoa(i))},
				{"bin", []byte{0, 1, 2, '\t', '\n', 0xfe, byte(i)}},
				{"dup", []byte("1")},
				{"dup", []byte("2")},
			},
		}
		switch i % 40 {
		case 3:
			r.Key = nil
		case 4:
			r.Key = []byte{}
		case 5:
			r.Value = nil
		case 6:
			r.Value = []byte{}
		case 7:
			r.Headers = append(r.Headers, Header{"null", nil}, Header{"empty", []byte{}})
		case 8:
			r.Headers = nil
		}
		out[i] = r
	}
	return out
}

// TestConfluentKafkaPython: librdkafka's Python binding. An idempotent
// Producer sends 2,000 records of arbitrary bytes (NUL, newlines, invalid
// UTF-8, null versus empty everywhere) into a 5-partition topic through the
// bootstrap; every delivery report must succeed, and its partition and
// offset must be where a direct read finds the record. Then a Consumer in a
// group (manual synchronous commit) consumes them all through the
// bootstrap: byte-identical, same partition, offset and CreateTime, in order,
// none twice, and the commit lands at the end offsets.
func TestConfluentKafkaPython(t *testing.T) {
	python, err := kafkatest.Python()
	if err != nil {
		t.Fatal(err)
	}
	c := cluster(t)
	boot := bootstrap(t, c)
	topic := uniqueName(t, "topic")
	group := uniqueName(t, "group")
	createTopic(t, c, topic, 5)
	const n = 2000

	input := binaryRecords(n)
	var stdin bytes.Buffer
	for _, r := range input {
		hs := [][2]*string{}
		for _, h := range r.Headers {
			k := h.Key
			hs = append(hs, [2]*string{&k, b64(h.Value)})
		}
		line, err := json.Marshal(map[string]any{"key": b64(r.Key), "value": b64(r.Value), "headers": hs})
		if err != nil {
			t.Fatal(err)
		}
		stdin.Write(line)
		stdin.WriteByte('\n')
	}
	script := filepath.Join(t.TempDir(), "interop.py")
	if err := os.WriteFile(script, []byte(confluentScript), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t, 3*time.Minute)
	cmd := exec.CommandContext(ctx, python, script, boot, topic, group, strconv.Itoa(n))
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = &stdin, &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()

	produced := make([]Record, n)
	copy(produced, input)
	reported := make([]bool, n)
	var consumed []Record
	sc := bufio.NewScanner(&stdout)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var m pyRecord
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("script output %q: %v", sc.Text(), err)
		}
		switch m.Kind {
		case "delivered":
			if m.I < 0 || m.I >= n || reported[m.I] {
				t.Fatalf("delivery report for record %d: out of range or repeated", m.I)
			}
			reported[m.I] = true
			if m.TSType != 1 {
				t.Errorf("delivery report %d: timestamp type %d, want CreateTime (1)", m.I, m.TSType)
			}
			produced[m.I].Topic, produced[m.I].Partition, produced[m.I].Offset = topic, m.Partition, m.Offset
			produced[m.I].Timestamp = time.UnixMilli(m.TS)
		case "failed":
			t.Errorf("delivery of record %d failed: %s", m.I, m.Err)
		case "error":
			t.Errorf("script error: %s", m.Err)
		case "consumed":
			r := Record{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Timestamp: time.UnixMilli(m.TS)}
			if m.TSType != 1 {
				t.Errorf("consumed %s[%d]@%d: timestamp type %d, want CreateTime (1)", m.Topic, m.Partition, m.Offset, m.TSType)
			}
			var err error
			if r.Key, err = unb64(m.Key); err == nil {
				r.Value, err = unb64(m.Value)
			}
			for _, h := range m.Headers {
				if err != nil {
					break
				}
				var v []byte
				v, err = unb64(h[1])
				r.Headers = append(r.Headers, Header{*h[0], v})
			}
			if err != nil {
				t.Fatalf("consumed record: %v", err)
			}
			consumed = append(consumed, r)
		default:
			t.Fatalf("script output of unknown kind: %s", sc.Text())
		}
	}
	if runErr != nil {
		t.Fatalf("python script: %v (context: %v)\nstderr:\n%s", runErr, ctx.Err(), tail(stderr.String(), 3000))
	}
	for i, ok := range reported {
		if !ok {
			t.Errorf("record %d: no delivery report", i)
			break
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Delivery reports must say exactly where each record is; the
	// producer's timestamp is in the report only for CreateTime topics,
	// which this is.
	log := readTopic(t, c, topic)
	assertClean(t, "delivery reports vs direct read of the topic", Compare(produced, log))
	if parts := partitionsUsed(log); len(parts) != 5 {
		t.Errorf("records landed in partitions %v, want all 5 used", parts)
	}
	if len(consumed) != n {
		t.Errorf("consumer printed %d records, want %d", len(consumed), n)
	}
	assertClean(t, "direct read vs confluent-kafka Consumer", Compare(log, consumed))
	assertCommittedAtEnd(t, c, group, topic)
}
