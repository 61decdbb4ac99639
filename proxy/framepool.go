package proxy

import (
	"math/bits"
	"sync"
)

// Produce frames and fetch answers are the bulk of what the proxy reads,
// megabytes each at full speed. Allocated afresh, every frame is zeroed by
// the runtime before the socket overwrites it (21 % of the proxy's CPU on
// produces, 13 % on fetches fanned out over three brokers), and becomes
// garbage a few milliseconds later. Large ones are read into buffers of
// pooledFrames instead. A frame goes back to the pool only where it is
// known that nothing refers to it once a client's answer is written
// (pendingResponse.afterWrite): a produce frame when no mirror feed queued
// its batches, the upstream answers a fanned-out fetch was merged from.
// Any other pooled frame is left to the GC.

// pooledFrameMin is the smallest frame worth pooling; smaller ones are
// cheap to allocate.
const pooledFrameMin = 64 << 10

// pooledFrames holds the frames given back, for every connection.
var pooledFrames framePool

// framePool holds frames by power-of-two capacity class.
type framePool struct {
	classes [32]sync.Pool // index: bits.Len of (capacity-1)
}

// get returns a buffer of length n, from the pool when one of its class is
// there.
func (fp *framePool) get(n int) []byte {
	class := bits.Len(uint(n - 1))
	if b, ok := fp.classes[class].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 1<<class)
}

// put gives back a buffer get returned, once nothing refers to it.
func (fp *framePool) put(b []byte) {
	c := cap(b)
	if c < pooledFrameMin || c&(c-1) != 0 {
		return // not one of get's
	}
	class := bits.Len(uint(c - 1))
	b = b[:0]
	fp.classes[class].Put(&b)
}
