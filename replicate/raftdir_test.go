package replicate

import (
	"path/filepath"
	"testing"

	"github.com/kmigrate/kmigrate/raftstore"
)

// raftDirMaps reads the offset maps a stopped `kmigrate proxy` left in its
// --data-dir (raft log and snapshots).
func raftDirMaps(t *testing.T, dataDir string) *MemoryMaps {
	t.Helper()
	d, err := raftstore.ReadDir(filepath.Join(dataDir, "raft"))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMemoryMaps()
	for _, pm := range d.Maps {
		m.maps[Partition{pm.Topic, pm.Partition}] = pm.Segments
	}
	return m
}
