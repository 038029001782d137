// Package feed holds the values that pass between the NATS side (package
// worker) and the WebSocket side (package hub): a notification on its way
// to sessions, the replay a resuming session receives, and the snapshot
// that lets the hub tell a session how far it is safely up to date.
//
// It imports only the standard library and does no I/O, so that both
// sides can use it without depending on each other.
package feed

import "time"

// Message is one notification on its way to sessions.
type Message struct {
	// Payload is what the producer published, unchanged.
	Payload []byte
	// Seq is the stream sequence of a durable message (from its
	// Nats-Sequence header); 0 for a core, ephemeral one.
	Seq uint64
	// Prev is the stream sequence of the previous durable message on the
	// same subject (Nats-Last-Sequence); 0 when there is none. A session
	// that has not been sent every durable message of that subject up to
	// Prev has missed one.
	Prev uint64
	// Arrived is when the worker took the message from its NATS
	// subscriptions' inbox; the hub observes the time from it to each
	// frame queued to a session in notify_delivery_delay_seconds. Zero:
	// not observed.
	Arrived time.Time
}

// Durable reports whether m came from the stream.
func (m Message) Durable() bool { return m.Seq > 0 }

// Reasons a resume is not recovered; they are sent to the client in the
// welcome's "reason" and label notify_resumes_not_recovered_total.
const (
	// ReasonReset: the client's cursor is ahead of the stream, which was
	// deleted and created again (or replaced).
	ReasonReset = "reset"
	// ReasonRetention: messages of this name or of the broadcast subject
	// after the cursor may have been removed by the stream's limits.
	ReasonRetention = "retention"
	// ReasonReplayMax: more messages were missed than the replay cap.
	ReasonReplayMax = "replay_max"
	// ReasonUnavailable: durable support is off, JetStream is absent, or
	// the stream is not one this worker can use.
	ReasonUnavailable = "unavailable"
)

// Causes the NATS side gives when it tells the WebSocket side that durable
// messages may have been lost on their way to this worker; they label
// notify_feed_losses_total and notify_feed_closes_total.
const (
	// CauseDisconnect: the NATS connection was lost; what was published
	// meanwhile did not reach this worker.
	CauseDisconnect = "disconnect"
	// CauseSlowConsumer: the worker's inbox was full and nats.go dropped
	// messages.
	CauseSlowConsumer = "slow_consumer"
	// CauseLeaderChange: the stream has a new leader; the old one may have
	// stored messages it never republished.
	CauseLeaderChange = "leader_change"
	// CauseStreamReset: the stream was deleted, replaced or created again,
	// so the sequences seen so far mean nothing in it.
	CauseStreamReset = "stream_reset"
)

// Replay is the answer to a resume.
type Replay struct {
	// Through is the last stream sequence the replay covers (the welcome's
	// "seq"): every durable message for the session with a sequence above
	// it arrives live.
	Through uint64
	// Recovered is false, with Reason, exactly when something for the
	// session after its cursor may be missing.
	Recovered bool
	Reason    string
	// Messages are the durable messages of the name and of the broadcast
	// subject with a sequence in (cursor, Through], in sequence order,
	// no more than the replay cap.
	Messages []Message
}

// Last is what a snapshot knows of one subject.
type Last struct {
	// Seq is the sequence of the newest message on the subject at or
	// below Through; 0 when the subject has none.
	Seq uint64
	// Through is the stream sequence the responding server had stored up
	// to when it answered; 0 when the snapshot could not be taken.
	Through uint64
}

// Snapshot tells, for the broadcast subject and for each name asked
// about, the newest durable message at or below a sequence the stream had
// reached. A session that has been sent every durable message of its
// subjects up to Last.Seq has been sent every one up to Last.Through.
type Snapshot struct {
	All   Last
	Users map[string]Last
}
