package subjects_test

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/notify-worker/notify-worker/subjects"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want error
	}{
		{"wechat openid", "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", nil},
		{"uuid", "123e4567-e89b-12d3-a456-426614174000", nil},
		{"username", "alice_01", nil},
		{"single char", "a", nil},
		{"64 bytes", strings.Repeat("a", 64), nil},
		{"max length", strings.Repeat("Z", subjects.MaxNameLen), nil},
		{"empty", "", subjects.ErrNameEmpty},
		{"over max", strings.Repeat("a", subjects.MaxNameLen+1), subjects.ErrNameTooLong},
		{"5000 bytes", strings.Repeat("a", 5000), subjects.ErrNameTooLong},
		{"star", "*", subjects.ErrNameChars},
		{"gt", ">", subjects.ErrNameChars},
		{"token wildcard", "a.*", subjects.ErrNameChars},
		{"tail wildcard", "*.>", subjects.ErrNameChars},
		{"gt then token", ">.x", subjects.ErrNameChars},
		{"dot", "a.b", subjects.ErrNameChars},
		{"leading dot", ".a", subjects.ErrNameChars},
		{"space", "a b", subjects.ErrNameChars},
		{"tab", "a\tb", subjects.ErrNameChars},
		{"crlf injection", "a\r\nPUB x 1", subjects.ErrNameChars},
		{"nul", "a\x00", subjects.ErrNameChars},
		{"replacement char", "a\uFFFD", subjects.ErrNameChars},
		{"invalid utf8", "a\xff", subjects.ErrNameChars},
		{"non-ascii letter", "名字", subjects.ErrNameChars},
		{"fullwidth star", "＊", subjects.ErrNameChars},
		{"dollar", "$SYS", subjects.ErrNameChars},
		{"slash", "a/b", subjects.ErrNameChars},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := subjects.ValidName(tt.in); !errors.Is(got, tt.want) {
				t.Fatalf("ValidName(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestValidPrefix(t *testing.T) {
	for _, p := range []string{"notify", "acme.notify", "a-b.c_d"} {
		if err := subjects.ValidPrefix(p); err != nil {
			t.Errorf("ValidPrefix(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"", ".", "a.", ".a", "a..b", "a.*", ">", "a b"} {
		if err := subjects.ValidPrefix(p); err == nil {
			t.Errorf("ValidPrefix(%q) = nil, want an error", p)
		}
	}
}

func TestScheme(t *testing.T) {
	s, err := subjects.New("acme.notify")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.User("bob"), "acme.notify.user.bob"; got != want {
		t.Errorf("User = %q, want %q", got, want)
	}
	if got, want := s.All(), "acme.notify.all"; got != want {
		t.Errorf("All = %q, want %q", got, want)
	}
	if got, want := s.Inbound("bob"), "acme.notify.inbound.bob"; got != want {
		t.Errorf("Inbound = %q, want %q", got, want)
	}
	if got := s.Prefix(); got != "acme.notify" {
		t.Errorf("Prefix = %q", got)
	}

	for subj, want := range map[string]string{
		"acme.notify.user.bob": "bob",
		"acme.notify.user.a-1": "a-1",
	} {
		if got, ok := s.UserName(subj); !ok || got != want {
			t.Errorf("UserName(%q) = %q, %v; want %q, true", subj, got, ok, want)
		}
	}
	for _, subj := range []string{
		"acme.notify.user.", "acme.notify.user.a.b", "acme.notify.all",
		"notify.user.bob", "acme.notify.user.*", "acme.notify.inbound.bob",
	} {
		if got, ok := s.UserName(subj); ok {
			t.Errorf("UserName(%q) = %q, true; want false", subj, got)
		}
	}

	if _, err := subjects.New("bad.*"); err == nil {
		t.Error("New(bad.*) succeeded, want an error")
	}
}

// FuzzValidName checks that every accepted name is one literal subject token:
// no separator, no wildcard, no byte that ends a protocol line.
func FuzzValidName(f *testing.F) {
	for _, seed := range []string{"bob", "*", ">", "a.*", "*.>", ">.x", "a\r\n", "\uFFFD", strings.Repeat("a", 129)} {
		f.Add(seed)
	}
	s, err := subjects.New(subjects.DefaultPrefix)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if subjects.ValidName(name) != nil {
			return
		}
		if len(name) == 0 || len(name) > subjects.MaxNameLen {
			t.Fatalf("accepted name of length %d", len(name))
		}
		if strings.ContainsAny(name, ".*> \t\r\n\x00") {
			t.Fatalf("accepted name %q with a subject metacharacter", name)
		}
		if got, ok := s.UserName(s.User(name)); !ok || got != name {
			t.Fatalf("UserName(User(%q)) = %q, %v", name, got, ok)
		}
	})
}

func BenchmarkValidName(b *testing.B) {
	name := "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
	b.ReportAllocs()
	for b.Loop() {
		if subjects.ValidName(name) != nil {
			b.Fatal("rejected")
		}
	}
}

func TestDurableSubjects(t *testing.T) {
	s, err := subjects.New("notify")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Durable(s.User("alice")); got != "durable.notify.user.alice" {
		t.Errorf("Durable(User) = %q", got)
	}
	if got := s.Durable(s.All()); got != "durable.notify.all" {
		t.Errorf("Durable(All) = %q", got)
	}
	if got := s.Barrier(); got != "notify.barrier" {
		t.Errorf("Barrier = %q", got)
	}
	captured, stored := s.StreamSubjects()
	if captured != "durable.notify.>" || stored != "notify.>" {
		t.Errorf("StreamSubjects = %q, %q", captured, stored)
	}
	if _, ok := s.UserName(s.Barrier()); ok {
		t.Error("the barrier subject parses as a user subject")
	}
}

func TestPresenceAndEventSubjects(t *testing.T) {
	s, err := subjects.New("acme.notify")
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		s.Presence():          "acme.notify.presence",
		s.EventPrefix():       "acme.notify.event.",
		s.EventOnline("bob"):  "acme.notify.event.online.bob",
		s.EventOffline("bob"): "acme.notify.event.offline.bob",
		s.EventAck("bob"):     "acme.notify.event.ack.bob",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	// No event or presence subject is captured by the durable stream.
	captured, _ := s.StreamSubjects()
	for _, subj := range []string{s.Presence(), s.EventOnline("bob"), s.EventAck("bob")} {
		if strings.HasPrefix(subj, strings.TrimSuffix(captured, ">")) {
			t.Errorf("%s is captured by the stream (%s)", subj, captured)
		}
	}
}
