package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// An ack frame is what a v2 client sends to say that the app has shown a
// durable message: {"type":"ack","seq":N}, N a JSON integer from 1 to
// 2^63-1 written without sign, fraction or exponent. Other fields are
// ignored. A v2 upstream message is an ack exactly when it is a JSON object
// whose "type" is the string "ack", written as those three letters (an
// escaped spelling is not recognised); anything else is an ordinary upstream
// message, as it is from a v1 client.

// errAckSeq is the reason of the error frame answering a malformed ack (a
// missing, duplicate or out-of-range seq, or a second "type"); the session
// stays open.
var errAckSeq = errors.New("ack needs one seq, an integer from 1 to 2^63-1")

// ackMarker is a substring every ack frame contains: the value of its
// "type". A message without it is not decoded at all.
var ackMarker = []byte(`"ack"`)

// parseAck tells whether msg is an ack frame, and if so its seq or
// errAckSeq (a missing, duplicate or out-of-range seq, a duplicate type).
func parseAck(msg []byte) (seq uint64, isAck bool, err error) {
	if !bytes.Contains(msg, ackMarker) {
		return 0, false, nil
	}
	msg = bytes.TrimPrefix(msg, utf8BOM)
	dec := json.NewDecoder(bytes.NewReader(msg))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return 0, false, nil
	}
	var (
		rawSeq      json.RawMessage
		types, seqs int
		ackType     bool
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return 0, false, nil
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return 0, false, nil
		}
		switch key {
		case "type":
			types++
			ackType = ackType || string(raw) == `"ack"`
		case "seq":
			seqs++
			rawSeq = raw
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return 0, false, nil
	}
	if _, err := dec.Token(); err != io.EOF {
		return 0, false, nil
	}
	if !ackType {
		return 0, false, nil
	}
	if types == 1 && seqs == 1 {
		if n, err := cursorValue(rawSeq); err == nil && n > 0 {
			return n, true, nil
		}
	}
	return 0, true, errAckSeq
}

// reasonAcksOff answers an ack on a hub without Events; the session stays.
const reasonAcksOff = "acks are not accepted by this worker"

// ack handles an ack frame of a v2 session, on its read goroutine, after
// the upstream limiter let it through: a valid one goes to Events, a
// malformed one (err) gets an error frame. Neither closes the session.
func (h *Hub) ack(s sessionWriter, st *sessionState, seq uint64, err error) {
	switch {
	case err != nil:
		h.metrics.acks.invalid.Inc()
		st.queue(s, errorFrame(err.Error()))
	case h.cfg.Events == nil:
		h.metrics.acks.refused.Inc()
		st.queue(s, errorFrame(reasonAcksOff))
	default:
		h.metrics.acks.accepted.Inc()
		h.cfg.Events.Ack(st.name, seq)
	}
}

// sessionWriter is the part of a session ack writes to.
type sessionWriter interface{ Write(msg []byte) error }
