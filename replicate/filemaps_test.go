package replicate

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/kmigrate/kmigrate/offsetsync"
)

func TestFileMapsSurvivesReopenAndTornWrite(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenFileMaps(dir)
	if err != nil {
		t.Fatal(err)
	}
	tp := Partition{"t", 3}
	ctx := context.Background()
	for i := int64(0); i < 4; i++ {
		if err := s.Append(ctx, tp, []offsetsync.Segment{{Virtual: 2 * i, Source: 2 * i, Target: i, Length: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	// A crash mid-write leaves half a line.
	f, _ := os.OpenFile(filepath.Join(dir, "offset-maps.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"topic":"t","partition":3,"segm`)
	f.Close()

	s, err = OpenFileMaps(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := s.Map(tp)
	if len(m) != 4 || m[3] != (offsetsync.Segment{Virtual: 6, Source: 6, Target: 3, Length: 1}) {
		t.Fatalf("reopened map = %+v", m)
	}
	if err := s.Append(ctx, tp, []offsetsync.Segment{{Virtual: 7, Source: 7, Target: 4, Length: 1}}); err != nil {
		t.Fatalf("append after reopen: %v", err)
	}
	if err := s.Append(ctx, tp, []offsetsync.Segment{{Virtual: 1, Source: 1, Target: 1, Length: 1}}); err == nil {
		t.Fatal("a backwards segment was made durable")
	}
}
