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
		{`{"name":""}`, "", ErrNameNotString},
		{`{"name":1}`, "", ErrNameNotString},
		{`{"name":true}`, "", ErrNameNotString},
		{`{"name":null}`, "", ErrNameNotString},
		{`{"name":["a"]}`, "", ErrNameNotString},
		{`{"Name":"alice"}`, "", ErrNameMissing},
		{`{"token":"t"}`, "", nil},
		{`{"token":""}`, "", ErrTokenNotString},
		{`{"token":1}`, "", ErrTokenNotString},
		{`{"token":"a","token":"b"}`, "", ErrTokenDuplicate},
		{`{"name":"*","token":"t"}`, "", subjects.ErrNameChars},
		{`{}`, "", ErrNameMissing},
		{`{"name":"a","name":"b"}`, "", ErrNameDuplicate},
		{`{"name":"a","name":1}`, "", ErrNameDuplicate},
		{"{\"name\":\"a\xff\"}", "", ErrNotUTF8},
		{"\xff", "", ErrNotUTF8},
		{``, "", ErrNotObject},
		{`   `, "", ErrNotObject},
		{`null`, "", ErrNotObject},
		{`["alice"]`, "", ErrNotObject},
		{`"alice"`, "", ErrNotObject},
		{`{"name":"alice"`, "", ErrNotObject},
		{`{"name":"alice"}x`, "", ErrNotObject},
		{`{"name":"alice"}{}`, "", ErrNotObject},
		{`{"name" "alice"}`, "", ErrNotObject},
		{`{name:"alice"}`, "", ErrNotObject},
		{`{"name":"\x"}`, "", ErrNotObject},
		{"\xEF\xBB\xBF\xEF\xBB\xBF{\"name\":\"a\"}", "", ErrNotObject},
	}
	for _, tt := range tests {
		id, err := ParseIdentify([]byte(tt.in))
		if !errors.Is(err, tt.err) || id.Name != tt.name {
			t.Errorf("ParseIdentify(%.40q) = %q, %v; want %q, %v", tt.in, id.Name, err, tt.name, tt.err)
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
		id, err := ParseIdentify(msg)
		if err != nil {
			if id.Name != "" {
				t.Fatalf("error %v with name %q", err, id.Name)
			}
			// Close frame reasons are limited to 123 bytes.
			if len(err.Error()) > 123 || !utf8.ValidString(err.Error()) {
				t.Fatalf("reason %q does not fit a close frame", err)
			}
			return
		}
		if id.Name == "" && id.Token == "" {
			t.Fatal("accepted a message with neither name nor token")
		}
		if id.Name != "" {
			if err := subjects.ValidName(id.Name); err != nil {
				t.Fatalf("accepted name %q: %v", id.Name, err)
			}
		}
	})
}

func BenchmarkParseIdentify(b *testing.B) {
	msg := []byte(`{"name":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseIdentify(msg); err != nil {
			b.Fatal(err)
		}
	}
}
