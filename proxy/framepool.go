package proxy

import (
	"math/bits"
	"sync"
)

// Produce frames are the bulk of what clients send, megabytes each at full
// speed. Allocated afresh, every one is zeroed by the runtime before the
// socket overwrites it, and becomes garbage a few milliseconds later. When
// nothing can keep a produce frame past its answer (no mirror feed, which
// queues the batches it is given), the frame goes back to a pool once the
// answer is written and the next produce reads into it.

// pooledFrameMin is the smallest frame worth pooling; smaller ones are
// cheap to allocate.
const pooledFrameMin = 64 << 10

// framePool holds produce frames by power-of-two capacity class.
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
