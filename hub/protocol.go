package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"

	"github.com/notify-worker/notify-worker/subjects"
)

// Identify is the content of a client's first message.
type Identify struct {
	// Name is the client's name, checked against subjects.ValidName.
	Name string
}

// Reasons a first message is rejected. They are sent to the client in the
// error frame and the close frame, so they are short and never echo input.
var (
	ErrNotUTF8       = errors.New("first message is not valid UTF-8")
	ErrNotObject     = errors.New("first message must be a JSON object")
	ErrNameMissing   = errors.New("first message has no name field")
	ErrNameNotString = errors.New("name must be a non-empty string")
	ErrNameDuplicate = errors.New("first message has more than one name field")
)

var utf8BOM = []byte("\xEF\xBB\xBF")

// ParseIdentify parses a client's first message: a JSON object with a
// "name" string, optionally preceded by a UTF-8 byte order mark and white
// space. Fields other than "name" are ignored.
//
// It is stricter than encoding/json.Unmarshal, so that what the client meant
// and what the worker uses cannot differ: the message must be valid UTF-8
// (Unmarshal would turn bad bytes into U+FFFD), the key must be exactly
// "name" (Unmarshal also matches "Name" and "NAME"), and it must appear once
// (Unmarshal lets the last one win). The decoded name, escapes resolved, must
// pass subjects.ValidName, so "\u002a" is rejected like "*".
func ParseIdentify(msg []byte) (Identify, error) {
	if !utf8.Valid(msg) {
		return Identify{}, ErrNotUTF8
	}
	msg = bytes.TrimPrefix(msg, utf8BOM)

	dec := json.NewDecoder(bytes.NewReader(msg))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return Identify{}, ErrNotObject
	}
	var (
		id   Identify
		seen bool
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Identify{}, ErrNotObject
		}
		key, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return Identify{}, ErrNotObject
		}
		if key != "name" {
			continue
		}
		if seen {
			return Identify{}, ErrNameDuplicate
		}
		seen = true
		if len(raw) == 0 || raw[0] != '"' {
			return Identify{}, ErrNameNotString
		}
		if err := json.Unmarshal(raw, &id.Name); err != nil {
			return Identify{}, ErrNotObject
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return Identify{}, ErrNotObject
	}
	if _, err := dec.Token(); err != io.EOF {
		return Identify{}, ErrNotObject
	}
	if !seen {
		return Identify{}, ErrNameMissing
	}
	if id.Name == "" {
		return Identify{}, ErrNameNotString
	}
	if err := subjects.ValidName(id.Name); err != nil {
		return Identify{}, err
	}
	return id, nil
}

// welcomeFrame is the first frame an identified client receives. name has
// passed subjects.ValidName, so it needs no JSON escaping.
func welcomeFrame(name string) []byte {
	return []byte(`{"type":"welcome","name":"` + name + `"}`)
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
