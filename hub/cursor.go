package hub

import "github.com/notify-worker/notify-worker/feed"

// cursor is what the hub knows of how far one v2 session has been sent the
// durable messages of its two subjects (its name's and the broadcast one),
// and the cursor its app pings carry. docs/protocol.md, section 8, "Why
// the guarantee holds", gives the rule; this file is that rule alone, so
// that it can be tested as a table.
//
// Invariant, for a session with a baseline (trusted): every durable
// message of subject s with a sequence in (since, last[s]] has been queued
// to the session. The replay makes it true with last[s] = Through; admit
// keeps it true, since it lets a message through only when the previous
// message of its subject (Prev) is at most last[s].
type cursor struct {
	// through is the replay's Replay.Through, the welcome's seq.
	through uint64
	// last is, per subject, max(through, the newest sequence sent live).
	last [subjectCount]uint64
	// trusted says the replay gave a baseline (Through > 0). A session
	// welcomed unavailable with seq 0 has none: the first durable message
	// of each subject is let through unchecked (seen), and its cursor
	// stays 0, since nothing is known of what came before.
	trusted bool
	seen    [subjectCount]bool
	// c is the cursor last computed: never lower than before.
	c uint64
	// missing is, per subject, the Last.Seq of the previous snapshot when
	// it was above last[s] (a message not sent yet); 0 when none.
	missing [subjectCount]uint64
}

func newCursor(through uint64) cursor {
	return cursor{
		through: through,
		last:    [subjectCount]uint64{through, through},
		trusted: through > 0,
		c:       through,
	}
}

// verdict is what admit decides for a durable message.
type verdict int

const (
	admitSend      verdict = iota // send it; last[s] moved to it
	admitDuplicate                // the session has it: skip it
	admitGap                      // the session missed Prev: close it, send nothing more
)

// admit applies the live checks (docs/protocol.md, section 8) to m, a message of subject on, and
// records it as sent when it says so. Core messages are always sent.
func (c *cursor) admit(on subject, m feed.Message) verdict {
	if !m.Durable() {
		return admitSend
	}
	last := c.last[on]
	switch {
	case m.Seq <= last:
		return admitDuplicate
	case m.Prev > last && (c.trusted || c.seen[on]):
		return admitGap
	}
	c.last[on] = m.Seq
	c.seen[on] = true
	return admitSend
}

// observe applies a snapshot of the session's two subjects (indexed by
// subject) to the cursor and reports whether a message is stuck: above
// last[s] in this snapshot and in the previous one, with the same Last.Seq,
// so not on its way but lost.
//
// Subject s is clear up to V = Last.Through when Last.Seq <= last[s];
// otherwise it is clear up to last[s] (the invariant above), which is safe. C = max(C, through, min over s of clear_s). A
// Last with Through 0 (not taken) teaches nothing about its subject.
func (c *cursor) observe(snap [subjectCount]feed.Last) (stuck bool) {
	if !c.trusted {
		return false
	}
	clear := c.last
	for s, l := range snap {
		switch {
		case l.Through == 0:
		case l.Seq <= c.last[s]:
			clear[s] = max(c.last[s], l.Through)
			c.missing[s] = 0
		case l.Seq == c.missing[s]:
			stuck = true
		default:
			c.missing[s] = l.Seq
		}
	}
	c.c = max(c.c, c.through, min(clear[onUser], clear[onAll]))
	return stuck
}
