package worker

import (
	"errors"
	"fmt"

	"github.com/notify-worker/notify-worker/subjects"
)

// Config tunes the worker.
type Config struct {
	Conn ConnConfig
	// Scheme builds the subjects.
	Scheme subjects.Scheme
	// ID names this worker in request replies.
	ID string
	// Lanes is the number of dispatch goroutines for user subjects
	// (broadcasts have one of their own).
	Lanes int
	// LaneBuffer is how many messages each lane holds; past that, nats.go
	// drops messages and reports a slow consumer, which is counted.
	LaneBuffer int
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
	case c.Lanes <= 0:
		return configError("Lanes", "must be positive")
	case c.LaneBuffer <= 0:
		return configError("LaneBuffer", "must be positive")
	case c.ID == "":
		return configError("ID", "must not be empty")
	case c.Scheme.Prefix() == "":
		return configError("Scheme", "not set (build one with subjects.New)")
	}
	if err := c.Conn.validate(); err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return &ConfigError{Field: "Conn." + ce.Field, Err: ce.Err}
		}
		return err
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
