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
	// Name is the client's name, checked against subjects.ValidName;
	// empty when the message has only a token.
	Name string
	// Token is a JWT proving the name; empty when the message has none.
	Token string
}

// Reasons a first message is rejected. They are sent to the client in the
// error frame and the close frame, so they are short and never echo input.
var (
	ErrNotUTF8        = errors.New("first message is not valid UTF-8")
	ErrNotObject      = errors.New("first message must be a JSON object")
	ErrNameMissing    = errors.New("first message has no name field")
	ErrNameNotString  = errors.New("name must be a non-empty string")
	ErrNameDuplicate  = errors.New("first message has more than one name field")
	ErrTokenNotString = errors.New("token must be a non-empty string")
	ErrTokenDuplicate = errors.New("first message has more than one token field")
)

var utf8BOM = []byte("\xEF\xBB\xBF")

// ParseIdentify parses a client's first message: a JSON object with a
// "name" string, a "token" string, or both, optionally preceded by a UTF-8
// byte order mark and white space. Other fields are ignored. A message with
// neither field fails with ErrNameMissing.
//
// It is stricter than encoding/json.Unmarshal, so that what the client meant
// and what the worker uses cannot differ: the message must be valid UTF-8
// (Unmarshal would turn bad bytes into U+FFFD), the keys must be exactly
// "name" and "token" (Unmarshal also matches "Name" and "NAME"), and each
// must appear at most once (Unmarshal lets the last one win). The decoded name, escapes resolved, must
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
		id                  Identify
		seenName, seenToken bool
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
		switch key {
		case "name":
			if seenName {
				return Identify{}, ErrNameDuplicate
			}
			seenName = true
			if id.Name, err = nonEmptyString(raw, ErrNameNotString); err != nil {
				return Identify{}, err
			}
		case "token":
			if seenToken {
				return Identify{}, ErrTokenDuplicate
			}
			seenToken = true
			if id.Token, err = nonEmptyString(raw, ErrTokenNotString); err != nil {
				return Identify{}, err
			}
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return Identify{}, ErrNotObject
	}
	if _, err := dec.Token(); err != io.EOF {
		return Identify{}, ErrNotObject
	}
	if !seenName && !seenToken {
		return Identify{}, ErrNameMissing
	}
	if seenName {
		if err := subjects.ValidName(id.Name); err != nil {
			return Identify{}, err
		}
	}
	return id, nil
}

// nonEmptyString decodes raw as a non-empty JSON string, or returns
// errNotString.
func nonEmptyString(raw json.RawMessage, errNotString error) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", errNotString
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", ErrNotObject
	}
	if s == "" {
		return "", errNotString
	}
	return s, nil
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
