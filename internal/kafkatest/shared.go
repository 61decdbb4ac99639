package kafkatest

import (
	"context"
	"sync"
	"testing"
)

// live holds every cluster started in this process and not yet closed, so
// StopAll can reach the ones no test cleanup owns (shared clusters).
var live = struct {
	sync.Mutex
	m map[*Cluster]struct{}
}{m: map[*Cluster]struct{}{}}

func register(c *Cluster) {
	live.Lock()
	live.m[c] = struct{}{}
	live.Unlock()
}

func unregister(c *Cluster) {
	live.Lock()
	delete(live.m, c)
	live.Unlock()
}

// StopAll closes every cluster this process started and has not closed yet,
// concurrently.
func StopAll() {
	live.Lock()
	cs := make([]*Cluster, 0, len(live.m))
	for c := range live.m {
		cs = append(cs, c)
	}
	live.Unlock()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(c.Close)
	}
	wg.Wait()
}

// RunMain runs the tests and then closes every cluster they left running
// (shared ones in particular). Use it as
//
//	func TestMain(m *testing.M) { os.Exit(kafkatest.RunMain(m)) }
func RunMain(m *testing.M) int {
	code := m.Run()
	StopAll()
	return code
}

// Shared is a cluster started on first use and shared by the tests of a
// package; see the package documentation for the TestMain pattern. Tests
// using it must not Stop, Kill or Close it; Restart is tolerated (the other
// tests see a short outage), and a broker found dead is restarted by Get.
type Shared struct {
	opts Options

	mu  sync.Mutex
	c   *Cluster
	err error // a failed start is not retried: every later Get fails fast
}

// NewShared describes a shared cluster; nothing starts until Get.
func NewShared(opts Options) *Shared { return &Shared{opts: opts} }

// Cluster returns the shared cluster, starting it on the first call.
func (s *Shared) Cluster(ctx context.Context) (*Cluster, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	if s.c == nil {
		s.c, s.err = Start(ctx, s.opts)
		return s.c, s.err
	}
	if !s.c.Running() {
		if err := s.c.Restart(ctx); err != nil {
			return nil, err
		}
	}
	return s.c, nil
}

// Get is Cluster for tests: it fails t (never skips) when the cluster
// cannot be started.
func (s *Shared) Get(t testing.TB) *Cluster {
	t.Helper()
	c, err := s.Cluster(context.Background())
	if err != nil {
		t.Fatalf("kafkatest: shared cluster: %v", err)
	}
	return c
}

// Close closes the shared cluster if it was started. RunMain does this for
// every cluster, so calling Close is needed only without RunMain.
func (s *Shared) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.c != nil {
		s.c.Close()
	}
}
