package hub

import "github.com/notify-worker/notify-worker/feed"

// subject is the stream subject a durable message was stored on, as far as
// a session is concerned: its name's, or the broadcast one. A v2 session
// checks the sequences of each separately (Message.Prev is per subject).
type subject int

const (
	onUser subject = iota // DeliverUser
	onAll                 // DeliverAll
	subjectCount
)

// delivery is one message on its way to the sessions of one DeliverUser or
// DeliverAll call. The index hands the same delivery to each session in
// turn, on the calling goroutine, so the v2 envelope is built once, by
// the first v2 session reached, and shared by the others (their queues
// hold the same bytes); a delivery that reaches only v1 sessions builds
// nothing and allocates nothing.
type delivery struct {
	msg   feed.Message
	on    subject
	text  bool   // the payload is valid UTF-8: v1 sessions get a text frame
	frame []byte // the v2 envelope, nil until a v2 session needs it
	// direct says a session with nothing in flight may be sent the
	// message directly (direct.go).
	direct bool
}

func (d *delivery) envelope() []byte {
	if d.frame == nil {
		d.frame = envelopeFrame(d.msg)
	}
	return d.frame
}
