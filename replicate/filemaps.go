package replicate

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/kmigrate/kmigrate/offsetsync"
)

// FileMaps is a MapStore kept in one append-only file of JSON lines, fsynced
// on every Append, so that a proxy restarted after kill -9 resumes from what
// it had recorded. The raft store replaces it when nodes must share the map.
type FileMaps struct {
	mu   sync.Mutex
	mem  *MemoryMaps
	file *os.File
}

type fileEntry struct {
	Topic     string               `json:"topic"`
	Partition int32                `json:"partition"`
	Segments  []offsetsync.Segment `json:"segments"`
}

// OpenFileMaps loads dir/offset-maps.jsonl, creating it if needed. A torn
// last line (a crash mid-write) is dropped: its Append never returned, so
// the mirror did not rely on it.
func OpenFileMaps(dir string) (*FileMaps, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("offset map directory: %w", err)
	}
	path := filepath.Join(dir, "offset-maps.jsonl")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open offset map %s: %w", path, err)
	}
	mem := NewMemoryMaps()
	r := bufio.NewReader(f)
	var good int64
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			break // a line without newline is torn
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("read offset map %s: %w", path, err)
		}
		var e fileEntry
		if err := json.Unmarshal(line, &e); err != nil {
			f.Close()
			return nil, fmt.Errorf("offset map %s at byte %d: %w", path, good, err)
		}
		if err := mem.Append(context.Background(), Partition{e.Topic, e.Partition}, e.Segments); err != nil {
			f.Close()
			return nil, fmt.Errorf("offset map %s at byte %d: %w", path, good, err)
		}
		good += int64(len(line))
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("truncate torn offset map entry: %w", err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return &FileMaps{mem: mem, file: f}, nil
}

func (s *FileMaps) Map(tp Partition) offsetsync.OffsetMap { return s.mem.Map(tp) }

func (s *FileMaps) Append(ctx context.Context, tp Partition, segs []offsetsync.Segment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Validate against the in-memory map before making it durable.
	check := s.mem.Map(tp)
	for _, seg := range segs {
		if _, err := check.Append(seg); err != nil {
			return err
		}
	}
	line, err := json.Marshal(fileEntry{tp.Topic, tp.Partition, segs})
	if err != nil {
		return err
	}
	if _, err := s.file.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("write offset map: %w", err)
	}
	if err := s.file.Sync(); err != nil {
		return fmt.Errorf("sync offset map: %w", err)
	}
	return s.mem.Append(ctx, tp, segs)
}

func (s *FileMaps) Close() error { return s.file.Close() }
