package proxy

// topicKey names a topic for splitting and merging: by name, or by id in
// the request versions that carry only ids (Fetch v13+, Produce v13+).
func topicKey(name string, id [16]byte) string {
	if name != "" {
		return name
	}
	return idPrefix + string(id[:])
}

const idPrefix = "\x00id:"

// router returns the function that maps a topic key and partition to the
// upstream broker leading it.
func (c *clientConn) router() func(key string, partition int32) int32 {
	return func(key string, partition int32) int32 {
		name := key
		if len(key) == len(idPrefix)+16 && key[:len(idPrefix)] == idPrefix {
			var id [16]byte
			copy(id[:], key[len(idPrefix):])
			var ok bool
			if name, ok = c.p.source.topicName(c.ctx, id); !ok {
				// Unknown id: any broker answers UNKNOWN_TOPIC_ID.
				return c.p.source.anyBroker()
			}
		}
		return c.p.source.leader(c.ctx, name, partition)
	}
}
