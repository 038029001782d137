// Package subjects defines the NATS subject scheme of notify-worker and the
// rule a client name must pass before it becomes part of a subject.
//
// The rule is an allow-list, not a deny-list, because a NATS subject is a
// small language of its own: "." separates tokens, "*" and ">" are
// wildcards, and whitespace or control bytes end the protocol line. A name
// that passes [ValidName] is exactly one literal token, so the subject built
// from it can match no other user's subject and cannot make the server reject
// a SUB (which would close the subscriber's connection).
//
// The scheme, for a prefix P (default "notify") and a valid name N:
//
//	P.user.N     notifications for the sessions named N
//	P.all        notifications for every identified session
//	P.inbound.N  messages the sessions named N send after their welcome
//	P.presence   bulk presence requests, answered by every worker
//
// Requests to P.user.N with the header Notify-Presence: 1 are presence
// requests: each worker holding N answers with its session count and
// delivers nothing. Workers publish events under P.event.:
//
//	P.event.online.N   N's first session on a worker was welcomed
//	P.event.offline.N  N's last session on a worker ended
//	P.event.ack.N      a session named N acknowledged a durable message
//
// Durable notifications are published with JetStream under "durable.":
//
//	durable.P.user.N  stored, then delivered like P.user.N
//	durable.P.all     stored, then delivered like P.all
//
// The stream stores them under the subject without "durable." (its subject
// transform) and republishes each stored message to that subject, with its
// stream sequence in the Nats-Sequence header. The worker also stores a
// small barrier message under P.barrier (published to durable.P.barrier);
// it reaches no session.
//
// Producers in any language compute a subject as P + ".user." + N after
// checking N against the same rule: 1 to 128 bytes, each one of
// A-Z a-z 0-9 "_" "-".
//
// This package imports only the standard library and does no I/O.
package subjects

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultPrefix is the subject prefix used when none is configured.
const DefaultPrefix = "notify"

// MaxNameLen is the longest name, in bytes, that ValidName accepts.
const MaxNameLen = 128

// Errors returned by ValidName. Callers show them to clients, so they say
// what is wrong without echoing the input.
var (
	ErrNameEmpty   = errors.New("name is empty")
	ErrNameTooLong = fmt.Errorf("name is longer than %d bytes", MaxNameLen)
	ErrNameChars   = errors.New("name may contain only A-Z a-z 0-9 _ -")
)

// ValidName reports whether name may be used as a client name, and so as a
// subject token. It returns nil for a valid name and one of ErrNameEmpty,
// ErrNameTooLong or ErrNameChars otherwise.
func ValidName(name string) error {
	if name == "" {
		return ErrNameEmpty
	}
	if len(name) > MaxNameLen {
		return ErrNameTooLong
	}
	for i := 0; i < len(name); i++ {
		if !nameByte(name[i]) {
			return ErrNameChars
		}
	}
	return nil
}

func nameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// ValidPrefix reports whether prefix can head every subject of the scheme:
// one or more dot-separated tokens, each a valid name.
func ValidPrefix(prefix string) error {
	if prefix == "" {
		return errors.New("subject prefix is empty")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if err := ValidName(tok); err != nil {
			return fmt.Errorf("subject prefix %q: token %q: %w", prefix, tok, err)
		}
	}
	return nil
}

// Scheme builds and parses the subjects under one prefix. The zero value is
// not usable; build one with New.
type Scheme struct {
	prefix  string
	user    string // prefix + ".user."
	inbound string // prefix + ".inbound."
	all     string // prefix + ".all"
}

// PresenceHeader is the header that makes a request to User(name) a
// presence request; its only accepted value is "1".
const PresenceHeader = "Notify-Presence"

// MaxPresenceNames is the most names one bulk presence request may carry.
const MaxPresenceNames = 1000

// DurablePrefix is the first token of the subjects durable notifications
// are published to.
const DurablePrefix = "durable"

// New returns the Scheme for prefix, or an error if prefix is not valid.
func New(prefix string) (Scheme, error) {
	if err := ValidPrefix(prefix); err != nil {
		return Scheme{}, err
	}
	return Scheme{
		prefix:  prefix,
		user:    prefix + ".user.",
		inbound: prefix + ".inbound.",
		all:     prefix + ".all",
	}, nil
}

// Prefix returns the prefix the scheme was built with.
func (s Scheme) Prefix() string { return s.prefix }

// User returns the subject that carries notifications for name. It does not
// check name: call ValidName first on anything that came from outside.
func (s Scheme) User(name string) string { return s.user + name }

// All returns the subject whose messages go to every identified session.
func (s Scheme) All() string { return s.all }

// Inbound returns the subject on which the messages of the sessions named
// name are published.
func (s Scheme) Inbound(name string) string { return s.inbound + name }

// Durable returns the subject a producer publishes to, with JetStream, to
// store a notification for subject (User(name) or All()) before it is
// delivered.
func (s Scheme) Durable(subject string) string { return DurablePrefix + "." + subject }

// Presence returns the subject of bulk presence requests, which every
// worker answers.
func (s Scheme) Presence() string { return s.prefix + ".presence" }

// EventPrefix returns the common start of every event subject, with its
// trailing dot: subscribe to EventPrefix()+">" for all events.
func (s Scheme) EventPrefix() string { return s.prefix + ".event." }

// EventOnline returns the subject a worker publishes to when the first
// session named name on it is welcomed.
func (s Scheme) EventOnline(name string) string { return s.prefix + ".event.online." + name }

// EventOffline returns the subject a worker publishes to when the last
// session named name on it ends.
func (s Scheme) EventOffline(name string) string { return s.prefix + ".event.offline." + name }

// EventAck returns the subject a worker publishes a session's
// acknowledgement to.
func (s Scheme) EventAck(name string) string { return s.prefix + ".event.ack." + name }

// Barrier returns the stored subject of the worker's barrier messages.
func (s Scheme) Barrier() string { return s.prefix + ".barrier" }

// StreamSubjects returns the subjects the durable stream captures, and the
// subject their stored form matches.
func (s Scheme) StreamSubjects() (captured, stored string) {
	return DurablePrefix + "." + s.prefix + ".>", s.prefix + ".>"
}

// UserName returns the name in a subject built by User, and false if subject
// is not a user subject of this scheme or its name is not valid.
func (s Scheme) UserName(subject string) (string, bool) {
	name, ok := strings.CutPrefix(subject, s.user)
	if !ok || ValidName(name) != nil {
		return "", false
	}
	return name, true
}
