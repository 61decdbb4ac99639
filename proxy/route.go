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
// upstream broker leading it, in the cluster that takes the topic's
// produces: the source, or the target once the topic's producers flipped.
func (c *clientConn) router() func(key string, partition int32) brokerKey {
	return func(key string, partition int32) brokerKey {
		name, ok := c.topicOfKey(key)
		if !ok {
			// Unknown id: any broker answers UNKNOWN_TOPIC_ID.
			return brokerKey{c.p.source, c.p.source.anyBroker()}
		}
		home := c.p.source
		if c.p.servedByTarget(name) {
			home = c.p.target
		}
		return brokerKey{home, home.leader(c.ctx, name, partition)}
	}
}

// sourceRouter routes to the source's leaders whatever the topic's primary.
func (c *clientConn) sourceRouter() func(key string, partition int32) brokerKey {
	return func(key string, partition int32) brokerKey {
		name, ok := c.topicOfKey(key)
		if !ok {
			return brokerKey{c.p.source, c.p.source.anyBroker()}
		}
		return brokerKey{c.p.source, c.p.source.leader(c.ctx, name, partition)}
	}
}

// topicOfKey resolves a topic key to its name (ids through the source's
// metadata: the ids clients know are the source's).
func (c *clientConn) topicOfKey(key string) (string, bool) {
	if len(key) == len(idPrefix)+16 && key[:len(idPrefix)] == idPrefix {
		var id [16]byte
		copy(id[:], key[len(idPrefix):])
		return c.p.source.topicName(c.ctx, id)
	}
	return key, true
}
