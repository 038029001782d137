package hub

// Feed loss (docs/protocol.md, section 8, "Losses on the way"). When the messaging side may
// have lost live messages (a reconnect, a slow consumer, a stream leader
// change, an overflow), a v2 session must not be sent anything newer than
// what it missed: it is closed with 1012 and resumes from its cursor. Each
// v2 session records the feed generation it was registered under; FeedLost
// bumps it, so that sessions registered after the call, whose replay
// starts after the loss, stay.

// FeedLost closes every v2 session registered before the call with 1012
// (service restart), after what is already queued to it, before it
// returns; v1 sessions are not affected. cause labels
// notify_feed_closes_total: disconnect, slow_consumer, leader_change or
// overflow (any other value is counted as other). Safe on any goroutine;
// the worker calls it before handing over the first message after the
// loss.
func (h *Hub) FeedLost(cause string) {
	gen := h.gen.Add(1)
	counter := h.metrics.feedCause(cause)
	closed := 0
	for _, v := range h.v2.list() {
		if v.gen < gen && v.end(closeServiceRestart, reasonFeedLost, counter) {
			closed++
		}
	}
	if closed > 0 {
		h.log.Warn("feed may have lost messages: closed v2 sessions to resume", "cause", cause, "sessions", closed)
	}
}
