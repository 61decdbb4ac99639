package proxy

import (
	"log/slog"
	"sync"
	"time"
)

// throttledLog drops repeats of the same message within a second: while a
// broker is down every request would otherwise log the same warning.
type throttledLog struct {
	mu   sync.Mutex
	last map[string]time.Time
}

var warnOnce = throttledLog{last: make(map[string]time.Time)}

func (t *throttledLog) warn(log *slog.Logger, msg string, args ...any) {
	t.mu.Lock()
	now := time.Now()
	if now.Sub(t.last[msg]) < time.Second {
		t.mu.Unlock()
		return
	}
	t.last[msg] = now
	t.mu.Unlock()
	log.Warn(msg, args...)
}
