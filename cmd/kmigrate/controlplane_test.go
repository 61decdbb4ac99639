package main

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestControlPlaneJoinSelf: the replica whose --join names its own admin
// address bootstraps instead of waiting to join itself, which is what lets
// every replica of deploy/kubernetes/control-plane.yaml share one --join.
func TestControlPlaneJoinSelf(t *testing.T) {
	const admin = "kmigrate-cp-0.kmigrate-cp:9644" // never dialled: the node is alone
	cp, err := openControlPlane(controlPlaneFlags{join: admin, raftAddr: "127.0.0.1:0", voter: true},
		t.TempDir(), admin, false, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer cp.store.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !cp.store.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the node did not become the leader of its own cluster")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
