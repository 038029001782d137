package hub

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/notify-worker/notify-worker/subjects"
)

func TestParseIdentify(t *testing.T) {
	tests := []struct {
		in   string
		name string
		err  error
	}{
		{`{"name":"alice"}`, "alice", nil},
		{"\xEF\xBB\xBF{\"name\":\"alice\"}", "alice", nil},
		{" \r\n\t{\"name\":\"alice\"}\n", "alice", nil},
		{`{"name":"alice","other":[1,{"a":null}],"Name":"x"}`, "alice", nil},
		{`{"other":1,"name":"a-b_C9"}`, "a-b_C9", nil},
		{`{"name":"\u0061lice"}`, "alice", nil},
		{`{"name":"*"}`, "", subjects.ErrNameChars},
		{`{"name":"\u002a"}`, "", subjects.ErrNameChars},
		{`{"name":">.x"}`, "", subjects.ErrNameChars},
		{`{"name":"a\u0000"}`, "", subjects.ErrNameChars},
		{`{"name":"` + strings.Repeat("a", 5000) + `"}`, "", subjects.ErrNameTooLong},
		{`{"name":""}`, "", errNameNotString},
		{`{"name":1}`, "", errNameNotString},
		{`{"name":true}`, "", errNameNotString},
		{`{"name":null}`, "", errNameNotString},
		{`{"name":["a"]}`, "", errNameNotString},
		{`{"Name":"alice"}`, "", errNameMissing},
		{`{"token":"t"}`, "", nil},
		{`{"token":""}`, "", errTokenNotString},
		{`{"token":1}`, "", errTokenNotString},
		{`{"token":"a","token":"b"}`, "", errTokenDuplicate},
		{`{"name":"*","token":"t"}`, "", subjects.ErrNameChars},
		{`{}`, "", errNameMissing},
		{`{"name":"a","name":"b"}`, "", errNameDuplicate},
		{`{"name":"a","name":1}`, "", errNameDuplicate},
		{"{\"name\":\"a\xff\"}", "", errNotUTF8},
		{"\xff", "", errNotUTF8},
		{``, "", errNotObject},
		{`   `, "", errNotObject},
		{`null`, "", errNotObject},
		{`["alice"]`, "", errNotObject},
		{`"alice"`, "", errNotObject},
		{`{"name":"alice"`, "", errNotObject},
		{`{"name":"alice"}x`, "", errNotObject},
		{`{"name":"alice"}{}`, "", errNotObject},
		{`{"name" "alice"}`, "", errNotObject},
		{`{name:"alice"}`, "", errNotObject},
		{`{"name":"\x"}`, "", errNotObject},
		{"\xEF\xBB\xBF\xEF\xBB\xBF{\"name\":\"a\"}", "", errNotObject},
	}
	for _, tt := range tests {
		id, err := parseIdentify([]byte(tt.in))
		if !errors.Is(err, tt.err) || id.name != tt.name {
			t.Errorf("parseIdentify(%.40q) = %q, %v; want %q, %v", tt.in, id.name, err, tt.name, tt.err)
		}
	}
}

func TestFrames(t *testing.T) {
	if got, want := string(welcomeFrame("bob")), `{"type":"welcome","name":"bob"}`; got != want {
		t.Errorf("welcome = %s, want %s", got, want)
	}
	if got, want := string(errorFrame(`bad "x"`)), `{"type":"error","error":"bad \"x\""}`; got != want {
		t.Errorf("error = %s, want %s", got, want)
	}
}

// FuzzParseIdentify checks that whatever a client sends, parsing neither
// panics nor yields a name outside the rule, and that every reason it gives
// fits in a WebSocket close frame. Tokens are checked by the Authenticator,
// not here: an accepted message has a valid name, a non-empty token, or both.
func FuzzParseIdentify(f *testing.F) {
	for _, seed := range []string{
		`{"name":"alice"}`, "\xEF\xBB\xBF{\"name\":\"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o\"}",
		`{"name":"*"}`, `{"name":"\u002a"}`, `{"name":"a","name":"b"}`, `{"Name":"a"}`,
		`{"name":null}`, `{"name":{"a":[1,2]}}`, `[]`, `{"name":"a"}trailing`, "{\"name\":\"\xff\"}",
		`{"x":{"y":{"z":[[[[[]]]]]}},"name":"deep"}`,
		`{"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig"}`, `{"token":"t","name":"alice"}`,
		`{"token":""}`, `{"token":null}`, `{"token":["x"]}`, `{"token":"a","token":"b"}`,
		`{"token":"\u0000"}`, "{\"token\":\"\xff\"}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		id, err := parseIdentify(msg)
		if err != nil {
			if id.name != "" {
				t.Fatalf("error %v with name %q", err, id.name)
			}
			// Close frame reasons are limited to 123 bytes.
			if len(err.Error()) > 123 || !utf8.ValidString(err.Error()) {
				t.Fatalf("reason %q does not fit a close frame", err)
			}
			return
		}
		if id.name == "" && id.token == "" {
			t.Fatal("accepted a message with neither name nor token")
		}
		if id.name != "" {
			if err := subjects.ValidName(id.name); err != nil {
				t.Fatalf("accepted name %q: %v", id.name, err)
			}
		}
	})
}

func BenchmarkParseIdentify(b *testing.B) {
	msg := []byte(`{"name":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parseIdentify(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// The v2 fields of the first message are as strict as name and token:
// exact keys, once each, and numbers only as the protocol writes them.
func TestParseIdentifyV2(t *testing.T) {
	cursor := func(n uint64) *uint64 { return &n }
	tests := []struct {
		in    string
		v     int
		since *uint64
		err   error
	}{
		{`{"name":"alice"}`, 1, nil, nil},
		{`{"name":"alice","v":1}`, 1, nil, nil},
		{`{"name":"alice","v":2}`, 2, nil, nil},
		{`{"name":"alice","v":2,"since":1234}`, 2, cursor(1234), nil},
		{`{"since":0,"v":2,"name":"alice"}`, 2, cursor(0), nil},
		{`{"name":"alice","v":2,"since":9223372036854775807}`, 2, cursor(maxCursor), nil},
		{`{"token":"t","v":2,"since":5}`, 2, cursor(5), nil},
		{`{"name":"alice","since":5}`, 1, cursor(5), nil}, // a v1 session ignores it
		{` {"name":"alice", "v" : 2 , "since" :	7 } `, 2, cursor(7), nil},
		{`{"name":"alice","V":3,"Since":"x"}`, 1, nil, nil}, // not the keys
		{`{"name":"alice","v":3}`, 0, nil, errVersion},
		{`{"name":"alice","v":0}`, 0, nil, errVersion},
		{`{"name":"alice","v":"2"}`, 0, nil, errVersion},
		{`{"name":"alice","v":2.0}`, 0, nil, errVersion},
		{`{"name":"alice","v":2e0}`, 0, nil, errVersion},
		{`{"name":"alice","v":-2}`, 0, nil, errVersion},
		{`{"name":"alice","v":null}`, 0, nil, errVersion},
		{`{"name":"alice","v":true}`, 0, nil, errVersion},
		{`{"name":"alice","v":[2]}`, 0, nil, errVersion},
		{`{"name":"alice","v":2,"v":2}`, 0, nil, errVDuplicate},
		{`{"name":"alice","v":02}`, 0, nil, errVersion}, // the decoder reads 0, then fails on 2
		{`{"name":"alice","v":2,"since":-1}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":-0}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":1.0}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":1e3}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":1E3}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":"5"}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":9223372036854775808}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":18446744073709551615}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":18446744073709551616}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":1000000000000000000000000000000}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":null}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":true}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":{}}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":[1]}`, 0, nil, errSince},
		{`{"name":"alice","v":2,"since":1,"since":1}`, 0, nil, errSinceDuplicate},
		{`{"name":"alice","v":2,"since":01}`, 0, nil, errNotObject},
		{`{"name":"alice","v":2,"since":1`, 0, nil, errNotObject},
		{`{"v":2,"since":1}`, 0, nil, errNameMissing},
		{`{"name":"*","v":2}`, 0, nil, subjects.ErrNameChars},
		{"{\"name\":\"alice\",\"v\":2,\"since\":1,\"x\":\"\xff\"}", 0, nil, errNotUTF8},
	}
	for _, tt := range tests {
		id, err := parseIdentify([]byte(tt.in))
		if !errors.Is(err, tt.err) || id.v != tt.v || !sameCursor(id.since, tt.since) {
			t.Errorf("parseIdentify(%.60q) = v %d since %v, %v; want v %d since %v, %v",
				tt.in, id.v, showCursor(id.since), err, tt.v, showCursor(tt.since), tt.err)
		}
	}
}

func sameCursor(a, b *uint64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }

func showCursor(c *uint64) string {
	if c == nil {
		return "none"
	}
	return strconv.FormatUint(*c, 10)
}

// FuzzParseIdentifyV2 checks the v2 fields whatever a client sends: no
// panic; an accepted message has v 1 or 2, a cursor within 0..2^63-1 and a
// valid name (or a token); an error fits a close frame and echoes nothing;
// and the values accepted, written out again, parse to the same values.
func FuzzParseIdentifyV2(f *testing.F) {
	for _, seed := range []string{
		`{"name":"alice","v":2}`, `{"name":"alice","v":2,"since":1234}`, `{"token":"t","v":2,"since":0}`,
		`{"name":"alice","v":1,"since":5}`, `{"name":"alice","v":2,"since":9223372036854775807}`,
		`{"name":"alice","v":2,"since":9223372036854775808}`, `{"name":"alice","v":2,"since":-1}`,
		`{"name":"alice","v":2,"since":1.0}`, `{"name":"alice","v":2,"since":1e3}`, `{"name":"alice","v":2,"since":"5"}`,
		`{"name":"alice","v":2,"since":1000000000000000000000000000000}`, `{"name":"alice","v":2,"since":null}`,
		`{"name":"alice","v":2,"since":true}`, `{"name":"alice","v":2,"v":2}`, `{"name":"alice","v":3}`,
		`{"name":"alice","v":2,"since":1,"since":2}`, `{"since":1,"v":2,"token":"t","name":"a"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		id, err := parseIdentify(msg)
		if err != nil {
			if id != (identifyMessage{}) {
				t.Fatalf("error %v with values %+v", err, id)
			}
			if len(err.Error()) > 123 || !utf8.ValidString(err.Error()) {
				t.Fatalf("reason %q does not fit a close frame", err)
			}
			return
		}
		if id.v != 1 && id.v != 2 {
			t.Fatalf("accepted v %d", id.v)
		}
		if id.since != nil && *id.since > maxCursor {
			t.Fatalf("accepted since %d", *id.since)
		}
		if id.name == "" && id.token == "" {
			t.Fatal("accepted a message with neither name nor token")
		}
		if id.name != "" {
			if err := subjects.ValidName(id.name); err != nil {
				t.Fatalf("accepted name %q: %v", id.name, err)
			}
		}
		again, err := parseIdentify(encodeIdentify(id))
		if err != nil || again.name != id.name || again.token != id.token || again.v != id.v || !sameCursor(again.since, id.since) {
			t.Fatalf("%+v written out parses to %+v, %v", id, again, err)
		}
	})
}

// encodeIdentify writes id as a client would.
func encodeIdentify(id identifyMessage) []byte {
	m := map[string]any{"v": id.v}
	if id.name != "" {
		m["name"] = id.name
	}
	if id.token != "" {
		m["token"] = id.token
	}
	if id.since != nil {
		m["since"] = *id.since
	}
	b, err := json.Marshal(m)
	if err != nil {
		panic(err)
	}
	return b
}
