package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/notify-worker/notify-worker/subjects"
)

// PublishRequest is the body of POST /api/v1/publish.
type PublishRequest struct {
	// Name is the user to reach; All reaches every session instead.
	// Exactly one of them is given.
	Name *string `json:"name"`
	All  bool    `json:"all"`
	// Data is published as its JSON text; DataB64 (standard base64) as
	// the bytes it encodes. Exactly one of them is given.
	Data    json.RawMessage `json:"data"`
	DataB64 *string         `json:"data_b64"`
	// Durable stores the notification in the JetStream stream first.
	Durable bool `json:"durable"`
	// ID makes a durable publish idempotent (the stream's Nats-Msg-Id);
	// the Idempotency-Key header does the same.
	ID string `json:"id"`
	// Receipt waits for every worker's receipt (ephemeral only), for
	// TimeoutMS milliseconds (default 1000).
	Receipt   bool   `json:"receipt"`
	TimeoutMS *int64 `json:"timeout_ms"`
}

// durableTimeout bounds the wait for the stream's acknowledgement, as
// nats.go's JetStream default does.
const durableTimeout = 5 * time.Second

// maxIDLen bounds a message ID.
const maxIDLen = 256

// publishPlan is a checked PublishRequest.
type publishPlan struct {
	subject string
	payload []byte
	id      string
}

// check validates req (the Idempotency-Key header is idemKey) and returns
// what to publish, or the 400 answer's message.
func (s *Server) check(req *PublishRequest, idemKey string) (publishPlan, error) {
	var p publishPlan
	switch {
	case req.Name != nil && req.All:
		return p, errors.New(`give "name" or "all":true, not both`)
	case req.Name == nil && !req.All:
		return p, errors.New(`give "name" or "all":true`)
	case req.Name != nil:
		if err := subjects.ValidName(*req.Name); err != nil {
			return p, fmt.Errorf("name: %w", err)
		}
		p.subject = s.cfg.Scheme.User(*req.Name)
	default:
		p.subject = s.cfg.Scheme.All()
	}
	switch {
	case req.Data != nil && req.DataB64 != nil:
		return p, errors.New(`give "data" or "data_b64", not both`)
	case req.Data != nil:
		p.payload = req.Data
	case req.DataB64 != nil:
		b, err := base64.StdEncoding.DecodeString(*req.DataB64)
		if err != nil {
			return p, fmt.Errorf("data_b64 is not standard base64: %w", err)
		}
		p.payload = b
	default:
		return p, errors.New(`give "data" (JSON) or "data_b64" (bytes)`)
	}
	switch {
	case req.ID != "" && idemKey != "" && req.ID != idemKey:
		return p, errors.New(`"id" and the Idempotency-Key header differ`)
	case req.ID != "":
		p.id = req.ID
	default:
		p.id = idemKey
	}
	if p.id != "" && !req.Durable {
		return p, errors.New(`"id" (or Idempotency-Key) applies to durable publishes only`)
	}
	if err := checkID(p.id); err != nil {
		return p, err
	}
	if req.Receipt && req.Durable {
		return p, errors.New(`"receipt" applies to ephemeral publishes; a durable one answers with its seq`)
	}
	if req.TimeoutMS != nil && !req.Receipt {
		return p, errors.New(`"timeout_ms" applies only with "receipt":true`)
	}
	return p, nil
}

// checkID accepts 1 to maxIDLen printable ASCII bytes, or "".
func checkID(id string) error {
	if len(id) > maxIDLen {
		return fmt.Errorf("id is %d bytes; at most %d", len(id), maxIDLen)
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return errors.New("id must be printable ASCII without spaces")
		}
	}
	return nil
}

// DurableAnswer is a durable publish's answer.
type DurableAnswer struct {
	Seq       uint64 `json:"seq"`
	Stream    string `json:"stream"`
	Duplicate bool   `json:"duplicate"`
}

// ReceiptAnswer is an ephemeral publish's answer with "receipt":true.
type ReceiptAnswer struct {
	Online    bool      `json:"online"`
	Receipts  []Receipt `json:"receipts,omitempty"`
	Delivered int       `json:"delivered"`
}

// Receipt is one worker's reply to a request (docs/protocol.md section 6).
type Receipt struct {
	Worker    string `json:"worker"`
	Delivered int    `json:"delivered"`
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request) {
	var req PublishRequest
	if err := decodeBody(r, &req); err != nil {
		s.bodyError(w, err)
		return
	}
	p, err := s.check(&req, r.Header.Get("Idempotency-Key"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	timeout := DefaultTimeout
	switch {
	case req.Receipt:
		if timeout, err = s.timeout(req.TimeoutMS, DefaultTimeout); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	case req.Durable:
		// A stream with replicas acknowledges after a quorum has it.
		timeout = min(durableTimeout, s.cfg.MaxTimeout)
	}
	extendWriteDeadline(w, timeout)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	switch {
	case req.Durable:
		s.publishDurable(ctx, w, p)
	case req.Receipt:
		s.publishReceipt(ctx, w, p)
	default:
		if err := s.cfg.Conn.Publish(p.subject, p.payload); err != nil {
			s.natsError(w, "publish", err)
			return
		}
		if err := s.cfg.Conn.FlushWithContext(ctx); err != nil {
			s.natsError(w, "publish", err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]bool{"published": true})
	}
}

func (s *Server) publishDurable(ctx context.Context, w http.ResponseWriter, p publishPlan) {
	if s.cfg.JetStream == nil {
		writeError(w, http.StatusServiceUnavailable, "durable notifications are turned off on this worker")
		return
	}
	var opts []jetstream.PublishOpt
	if p.id != "" {
		opts = append(opts, jetstream.WithMsgID(p.id))
	}
	subject := subjects.DurablePrefix + "." + p.subject
	ack, err := s.cfg.JetStream.Publish(ctx, subject, p.payload, opts...)
	if err != nil {
		switch {
		case errors.Is(err, nats.ErrMaxPayload):
			writeError(w, http.StatusRequestEntityTooLarge, "payload over the NATS server's limit")
		case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
			writeError(w, http.StatusServiceUnavailable, "jetstream unavailable: no stream stored "+subject+"; not stored, retry with the same id")
		default:
			s.log.Warn("api: durable publish failed", "subject", subject, "err", err)
			writeError(w, http.StatusServiceUnavailable, "jetstream unavailable: "+err.Error()+"; not stored, retry with the same id")
		}
		return
	}
	writeJSON(w, http.StatusOK, DurableAnswer{Seq: ack.Sequence, Stream: ack.Stream, Duplicate: ack.Duplicate})
}

func (s *Server) publishReceipt(ctx context.Context, w http.ResponseWriter, p publishPlan) {
	replies, err := gather(ctx, s.cfg.Conn, &nats.Msg{Subject: p.subject, Data: p.payload}, 0)
	if errors.Is(err, errNoResponders) {
		writeJSON(w, http.StatusOK, ReceiptAnswer{Online: false})
		return
	}
	if err != nil {
		s.natsError(w, "request", err)
		return
	}
	ans := ReceiptAnswer{Online: len(replies) > 0, Receipts: []Receipt{}}
	for _, m := range replies {
		var rc Receipt
		if err := json.Unmarshal(m.Data, &rc); err != nil {
			s.log.Warn("api: a receipt is not JSON", "subject", p.subject, "reply", string(m.Data))
			continue
		}
		ans.Receipts = append(ans.Receipts, rc)
		ans.Delivered += rc.Delivered
	}
	writeJSON(w, http.StatusOK, ans)
}

// natsError answers a failed core operation: 413 for a payload over the
// server's limit, 503 otherwise.
func (s *Server) natsError(w http.ResponseWriter, op string, err error) {
	if errors.Is(err, nats.ErrMaxPayload) {
		writeError(w, http.StatusRequestEntityTooLarge, "payload over the NATS server's limit")
		return
	}
	s.log.Warn("api: nats "+op+" failed", "err", err)
	writeError(w, http.StatusServiceUnavailable, "nats unavailable: "+err.Error())
}
