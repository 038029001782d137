package hub

import (
	"errors"
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
