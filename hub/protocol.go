package hub

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/notify-worker/notify-worker/feed"
	"github.com/notify-worker/notify-worker/subjects"
)

// This file is the wire vocabulary of docs/protocol.md: what a client can
// see of the hub. Close codes, the reasons in error and close frames, the
// HTTP refusal bodies, the frames and the first-message parser live here,
// so the protocol document can be checked against one file.

// Close codes the hub sends. melody (gorilla) sends 1009 for an oversize
// frame by itself.
const (
	closeGoingAway       = websocket.CloseGoingAway       // 1001: worker shutting down (v1 sessions)
	closePolicyViolation = websocket.ClosePolicyViolation // 1008: bad first message or token, identify timeout, a limit
	closeServiceRestart  = websocket.CloseServiceRestart  // 1012: v2 only: reconnect now and resume from the cursor
	closeTryAgainLater   = websocket.CloseTryAgainLater   // 1013: the messaging side (join or resume) is unavailable
	closeTokenExpired    = 4001                           // the session's token expired: reconnect with a fresh one
	closeTooSlow         = 4002                           // the session's outbound queue overflowed
)

// Reasons sent to a client in an error frame and in the close frame that
// follows it (closeTooSlow, closeGoingAway and closeServiceRestart come
// without an error frame). They are short, since a close frame holds 123
// bytes, and never echo client input. The first-message parser's own
// reasons are the err* values below; an Authenticator's errors are sent as
// they are.
const (
	reasonBinaryFirst     = "first message must be a text frame"
	reasonTokenRequired   = "token required"
	reasonTokenSubject    = "token subject: " // followed by the name rule the subject breaks
	reasonNameMismatch    = "name does not match the token subject"
	reasonUnavailable     = "service unavailable, try again later"
	reasonIdentifyTimeout = "identify timeout: send the first message sooner"
	reasonTokenExpired    = "token expired"
	reasonUpstreamRate    = "upstream rate limit exceeded"
	reasonTooSlow         = "too slow: outbound queue full"
	reasonShuttingDown    = "server shutting down"
	// Reasons of closeServiceRestart, which comes without an error frame.
	reasonRestart  = "server restarting: reconnect and resume"
	reasonFeedLost = "messages may have been lost: reconnect and resume"
	// reasonNotForwarded comes in an error frame alone: the session stays.
	reasonNotForwarded = "message not forwarded: service unavailable"
)

// reasonTooManySessions is the reason for a session past the per-name cap.
func reasonTooManySessions(limit int) string {
	return "too many sessions for this name (limit " + strconv.Itoa(limit) + ")"
}

// Bodies of the HTTP refusals ServeHTTP answers before the upgrade.
const (
	bodyNotWebSocket = "this endpoint speaks WebSocket only"
	bodyOrigin       = "origin not allowed"
	bodyShuttingDown = "shutting down"
)

// bodyConnectionLimit is the body of the 503 past Config.MaxConnections.
func bodyConnectionLimit(limit int) string {
	return "connection limit reached (" + strconv.Itoa(limit) + " connections); try another worker"
}

// retryAfterSeconds is the Retry-After of the 503 past MaxConnections.
const retryAfterSeconds = "5"

// truncateReason keeps a close reason within the 123 bytes a close frame
// holds, without splitting a UTF-8 sequence.
func truncateReason(reason string) string {
	const max = 123
	if len(reason) <= max {
		return reason
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(reason[cut]) {
		cut--
	}
	return reason[:cut]
}

// identifyMessage is the content of a client's first message.
type identifyMessage struct {
	// name is the client's name, checked against subjects.ValidName;
	// empty when the message has only a token.
	name string
	// token is a JWT proving the name; empty when the message has none.
	token string
	// v is the protocol version the client speaks: 1 (also when the
	// message has no "v") or 2.
	v int
	// since is the client's cursor, nil when the message has none. Only
	// a v2 session uses it.
	since *uint64
}

// Reasons a first message is rejected. They are sent to the client in the
// error frame and the close frame, so they are short and never echo input.
var (
	errNotUTF8        = errors.New("first message is not valid UTF-8")
	errNotObject      = errors.New("first message must be a JSON object")
	errNameMissing    = errors.New("first message has no name field")
	errNameNotString  = errors.New("name must be a non-empty string")
	errNameDuplicate  = errors.New("first message has more than one name field")
	errTokenNotString = errors.New("token must be a non-empty string")
	errTokenDuplicate = errors.New("first message has more than one token field")
	errVersion        = errors.New("v must be 1 or 2")
	errVDuplicate     = errors.New("first message has more than one v field")
	errSince          = errors.New("since must be an integer from 0 to 2^63-1")
	errSinceDuplicate = errors.New("first message has more than one since field")
)

var utf8BOM = []byte("\xEF\xBB\xBF")

// parseIdentify parses a client's first message: a JSON object with a
// "name" string, a "token" string, or both, optionally preceded by a UTF-8
// byte order mark and white space, and optionally "v" (the JSON integer 1
// or 2) and "since" (a JSON integer from 0 to 2^63-1, written without
// sign, fraction or exponent). Other fields are ignored. A message with
// neither name nor token fails with errNameMissing. "since" is checked
// whatever the version, though only a v2 session uses it.
//
// It is stricter than encoding/json.Unmarshal, so that what the client meant
// and what the worker uses cannot differ: the message must be valid UTF-8
// (Unmarshal would turn bad bytes into U+FFFD), the keys must be exactly
// "name" and "token" (Unmarshal also matches "Name" and "NAME"), and each
// must appear at most once (Unmarshal lets the last one win), and numbers
// are taken as written (Unmarshal turns 1e3 and 1.0 into integers and
// 10^30 into a float). The decoded
// name, escapes resolved, must pass subjects.ValidName, so "\u002a" is
// rejected like "*".
func parseIdentify(msg []byte) (identifyMessage, error) {
	if !utf8.Valid(msg) {
		return identifyMessage{}, errNotUTF8
	}
	msg = bytes.TrimPrefix(msg, utf8BOM)

	dec := json.NewDecoder(bytes.NewReader(msg))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return identifyMessage{}, errNotObject
	}
	var (
		id                                    identifyMessage
		seenName, seenToken, seenV, seenSince bool
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return identifyMessage{}, errNotObject
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return identifyMessage{}, errNotObject
		}
		switch key {
		case "name":
			if seenName {
				return identifyMessage{}, errNameDuplicate
			}
			seenName = true
			if id.name, err = nonEmptyString(raw, errNameNotString); err != nil {
				return identifyMessage{}, err
			}
		case "token":
			if seenToken {
				return identifyMessage{}, errTokenDuplicate
			}
			seenToken = true
			if id.token, err = nonEmptyString(raw, errTokenNotString); err != nil {
				return identifyMessage{}, err
			}
		case "v":
			if seenV {
				return identifyMessage{}, errVDuplicate
			}
			seenV = true
			if id.v, err = version(raw); err != nil {
				return identifyMessage{}, err
			}
		case "since":
			if seenSince {
				return identifyMessage{}, errSinceDuplicate
			}
			seenSince = true
			since, err := cursorValue(raw)
			if err != nil {
				return identifyMessage{}, err
			}
			id.since = &since
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return identifyMessage{}, errNotObject
	}
	if _, err := dec.Token(); err != io.EOF {
		return identifyMessage{}, errNotObject
	}
	if !seenName && !seenToken {
		return identifyMessage{}, errNameMissing
	}
	if seenName {
		if err := subjects.ValidName(id.name); err != nil {
			return identifyMessage{}, err
		}
	}
	if !seenV {
		id.v = 1
	}
	return id, nil
}

// version decodes the value of "v": exactly the JSON integer 1 or 2.
func version(raw json.RawMessage) (int, error) {
	switch string(raw) {
	case "1":
		return 1, nil
	case "2":
		return 2, nil
	}
	return 0, errVersion
}

// maxCursor is the largest cursor a client may send: 2^63-1, the largest
// stream sequence JetStream uses.
const maxCursor = 1<<63 - 1

// cursorValue decodes the value of "since": decimal digits only (no sign,
// fraction, exponent or quotes), at most maxCursor. A leading zero ends
// the decoder's number ("01" is read as 0, then 1 fails the object).
func cursorValue(raw json.RawMessage) (uint64, error) {
	if len(raw) == 0 || len(raw) > len("9223372036854775807") {
		return 0, errSince
	}
	var n uint64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, errSince
		}
		// 19 digits fit in a uint64 (< 1.85e19) without overflow.
		n = n*10 + uint64(c-'0')
	}
	if n > maxCursor {
		return 0, errSince
	}
	return n, nil
}

// nonEmptyString decodes raw as a non-empty JSON string, or returns
// errNotString.
func nonEmptyString(raw json.RawMessage, errNotString error) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", errNotString
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", errNotObject
	}
	if s == "" {
		return "", errNotString
	}
	return s, nil
}

// welcomeFrame is the first frame an identified v1 client receives. name has
// passed subjects.ValidName, so it needs no JSON escaping.
func welcomeFrame(name string) []byte {
	return []byte(`{"type":"welcome","name":"` + name + `"}`)
}

// welcomeV2Frame is the first frame a v2 client receives, once its resume
// is answered: seq is the last stream sequence the replay covers, replayed
// the number of frames of its replay that follow, ping the app-ping
// interval in milliseconds, upstream_rate and upstream_burst the limit on
// what the client may send (so that a client can pace itself instead of
// being closed with 1008), and reason is there when recovered is false.
func welcomeV2Frame(name string, r feed.Replay, replayed int, ping time.Duration, up upstreamLimit) []byte {
	b := make([]byte, 0, 128)
	b = append(b, `{"type":"welcome","name":"`...)
	b = append(b, name...) // passed subjects.ValidName
	b = append(b, `","v":2,"seq":`...)
	b = strconv.AppendUint(b, r.Through, 10)
	b = append(b, `,"recovered":`...)
	b = strconv.AppendBool(b, r.Recovered)
	b = append(b, `,"replayed":`...)
	b = strconv.AppendInt(b, int64(replayed), 10)
	b = append(b, `,"ping":`...)
	b = strconv.AppendInt(b, ping.Milliseconds(), 10)
	b = append(b, `,"upstream_rate":`...)
	b = strconv.AppendFloat(b, up.rate, 'f', -1, 64)
	b = append(b, `,"upstream_burst":`...)
	b = strconv.AppendInt(b, int64(up.burst), 10)
	if !r.Recovered {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, r.Reason)
	}
	return append(b, '}')
}

// upstreamLimit is a session's limit on upstream messages: rate per
// second, with bursts of up to burst (both positive; Config.validate).
type upstreamLimit struct {
	rate  float64
	burst int
}

// envelopeFrame is the frame of one notification to a v2 client:
// {"type":"msg","seq":N,"data":<payload>} when the payload is valid UTF-8
// JSON, {"type":"msg","seq":N,"data_b64":"<base64>"} otherwise, and
// without "seq" for a core (ephemeral) message. It allocates once.
func envelopeFrame(m feed.Message) []byte {
	asJSON := utf8.Valid(m.Payload) && json.Valid(m.Payload)
	n := len(`{"type":"msg","seq":18446744073709551615,"data_b64":""}`)
	if asJSON {
		n += len(m.Payload)
	} else {
		n += base64.StdEncoding.EncodedLen(len(m.Payload))
	}
	b := make([]byte, 0, n)
	b = append(b, `{"type":"msg"`...)
	if m.Durable() {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, m.Seq, 10)
	}
	if asJSON {
		b = append(b, `,"data":`...)
		b = append(b, m.Payload...)
	} else {
		b = append(b, `,"data_b64":"`...)
		b = base64.StdEncoding.AppendEncode(b, m.Payload)
		b = append(b, '"')
	}
	return append(b, '}')
}

// pingFrame is the app ping of a v2 session, carrying its cursor: every
// durable message for it with a sequence up to seq has been sent before.
func pingFrame(seq uint64) []byte {
	b := make([]byte, 0, len(`{"type":"ping","seq":18446744073709551615}`))
	b = append(b, `{"type":"ping","seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, '}')
}

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// errorFrame is the frame sent before the close frame when a client is
// turned away.
func errorFrame(reason string) []byte {
	// A struct of two strings always marshals.
	b, _ := json.Marshal(struct {
		Type  string `json:"type"`
		Error string `json:"error"`
	}{"error", reason})
	return b
}
