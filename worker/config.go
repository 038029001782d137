package worker

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/notify-worker/notify-worker/subjects"
)

// Config tunes the worker.
type Config struct {
	Conn ConnConfig
	// Scheme builds the subjects.
	Scheme subjects.Scheme
	// ID names this worker in request replies.
	ID string
	// Lanes is the number of dispatch goroutines for user subjects; 0:
	// none, the router hands core user messages to the hub itself, which
	// costs one goroutine hand-off less per message (DeliverUser never
	// blocks). Broadcasts have a lane of their own either way.
	Lanes int
	// LaneBuffer is how many messages each lane holds. Every subscription
	// delivers into one inbox of LaneBuffer × (Lanes + 1) messages, read in
	// connection order by the router, which waits for a full lane; past
	// that, nats.go drops messages and reports a slow consumer, which is
	// counted.
	LaneBuffer int

	// Stream is the JetStream stream that stores durable notifications.
	Stream StreamConfig
	// ReplayMax caps the messages one Resume returns; a resume that missed
	// more gets the newest ReplayMax and is not recovered (replay_max).
	// Used only when Stream.Name is set.
	ReplayMax int
	// ReplayConcurrency is how many resumes may run their JetStream
	// requests at once; the others wait, counting against their context.
	// Used only when Stream.Name is set.
	ReplayConcurrency int

	// Events turns on the online and offline events (events.go); acks are
	// published either way.
	Events bool
	// EventBuffer is how many events wait to be published; past it, an
	// event is dropped and counted. 0 is DefaultEventBuffer.
	EventBuffer int
}

// StreamConfig describes the stream the worker creates when it is missing.
// An existing stream is used with its own limits (see Worker.Resume).
type StreamConfig struct {
	// Name of the stream; "" turns durable support off.
	Name string
	// MaxAge removes messages older than this; 0 keeps them forever.
	MaxAge time.Duration
	// MaxMsgsPerSubject keeps at most this many messages per subject (one
	// name, or the broadcast subject); 0 means no limit.
	MaxMsgsPerSubject int64
	// MaxBytes bounds the stream's size, removing the oldest messages
	// first; 0 means no limit.
	MaxBytes int64
	// Storage is "file" or "memory".
	Storage string
	// Replicas is the number of copies in a JetStream cluster, 1 to 5.
	Replicas int
	// DuplicateWindow is how long a Nats-Msg-Id is remembered, so that a
	// producer's retry is stored once. It is clamped to MaxAge, because
	// JetStream refuses a longer one; 0 takes the server's default.
	DuplicateWindow time.Duration
}

// Storage values of StreamConfig.
const (
	StorageFile   = "file"
	StorageMemory = "memory"
)

// duplicates is the duplicate window to create the stream with.
func (c StreamConfig) duplicates() time.Duration {
	if c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge {
		return c.MaxAge
	}
	return c.DuplicateWindow
}

// ConfigError is a problem with one configuration field. The caller that
// filled the field from somewhere (an environment variable, a flag) can
// say where by looking at ConfigField.
type ConfigError struct {
	// Field is the Go name of the field, dotted below Config: "Lanes",
	// "Conn.TLSKeyFile", or for EmbeddedConfig "Addr".
	Field string
	Err   error
}

func (e *ConfigError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *ConfigError) Unwrap() error { return e.Err }

// ConfigField returns the Go name of the field at fault.
func (e *ConfigError) ConfigField() string { return e.Field }

func configError(field, msg string) error {
	return &ConfigError{Field: field, Err: errors.New(msg)}
}

// Validate reports the first field that New cannot work with, as a
// *ConfigError. It does no I/O: files named in Conn are read by New.
func (c Config) Validate() error {
	switch {
	case c.Lanes < 0:
		return configError("Lanes", "must not be negative")
	case c.LaneBuffer <= 0:
		return configError("LaneBuffer", "must be positive")
	case c.ID == "":
		return configError("ID", "must not be empty")
	case c.Scheme.Prefix() == "":
		return configError("Scheme", "not set (build one with subjects.New)")
	case c.EventBuffer < 0:
		return configError("EventBuffer", "must not be negative (0: the default)")
	}
	if err := c.Conn.validate(); err != nil {
		return below("Conn.", err)
	}
	if c.Stream.Name == "" {
		return nil
	}
	if err := c.Stream.validate(); err != nil {
		return below("Stream.", err)
	}
	switch {
	case c.ReplayMax <= 0:
		return configError("ReplayMax", "must be positive")
	case c.ReplayConcurrency <= 0:
		return configError("ReplayConcurrency", "must be positive")
	}
	return nil
}

// below names a nested struct's *ConfigError from Config.
func below(prefix string, err error) error {
	var ce *ConfigError
	if errors.As(err, &ce) {
		return &ConfigError{Field: prefix + ce.Field, Err: ce.Err}
	}
	return err
}

// jetStreamMinDuration is the shortest MaxAge or duplicate window
// JetStream accepts.
const jetStreamMinDuration = 100 * time.Millisecond

func (c StreamConfig) validate() error {
	switch {
	case strings.ContainsAny(c.Name, " \t\r\n.*>/\\") || len(c.Name) > 255:
		return configError("Name", "a stream name is at most 255 bytes without spaces, '.', '*', '>', '/' or '\\'")
	case c.MaxAge < 0 || c.MaxAge > 0 && c.MaxAge < jetStreamMinDuration:
		return configError("MaxAge", "must be 0 (no limit) or at least 100ms")
	case c.MaxMsgsPerSubject < 0:
		return configError("MaxMsgsPerSubject", "must not be negative (0: no limit)")
	case c.MaxBytes < 0:
		return configError("MaxBytes", "must not be negative (0: no limit)")
	case c.Storage != StorageFile && c.Storage != StorageMemory:
		return configError("Storage", `must be "file" or "memory"`)
	case c.Replicas < 1 || c.Replicas > 5:
		return configError("Replicas", "must be from 1 to 5")
	case c.DuplicateWindow < 0 || c.DuplicateWindow > 0 && c.duplicates() < jetStreamMinDuration:
		return configError("DuplicateWindow", "must be 0 (the server's default) or at least 100ms")
	}
	return nil
}

func (c ConnConfig) validate() error {
	switch {
	case len(c.URLs) == 0 && c.InProcess == nil:
		return configError("URLs", "no NATS server given (and no in-process server)")
	case c.ConnectTimeout <= 0:
		return configError("ConnectTimeout", "must be positive")
	case c.ReconnectWait < 0:
		return configError("ReconnectWait", "must not be negative")
	case c.PingInterval < 0:
		return configError("PingInterval", "must not be negative")
	case c.MaxPingsOut < 0:
		return configError("MaxPingsOut", "must not be negative")
	case c.FailureLogInterval < 0:
		return configError("FailureLogInterval", "must not be negative")
	case c.TLSCertFile != "" && c.TLSKeyFile == "":
		return configError("TLSKeyFile", "a TLS client certificate needs a key file too")
	case c.TLSKeyFile != "" && c.TLSCertFile == "":
		return configError("TLSCertFile", "a TLS client key needs a certificate file too")
	}
	for i, u := range c.URLs {
		if u == "" {
			return &ConfigError{Field: "URLs", Err: fmt.Errorf("URL %d is empty", i+1)}
		}
	}
	return nil
}
