package main

// Section 2 of docs/protocol.md: identify. The seed's client works
// unchanged, the first message's tolerances and the name rule's accepted
// names, tokens that identify, and the welcome as a promise. First
// messages that are turned away are rows of TestErrorsAndCloseCodes.

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

func TestSeedClientUnchanged(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)
	const openid = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"

	c := dial(t, tw.addr, "/") // the seed's ws://host:8888
	// The seed builds its first message by string concatenation.
	send(t, c, "{\"name\":\""+openid+"\"}")
	w := readText(t, c)
	var f struct{ Type, Name string }
	if err := json.Unmarshal([]byte(w), &f); err != nil || f.Type != "welcome" || f.Name != openid {
		t.Fatalf("welcome = %s (%v)", w, err)
	}

	payload := `{"title":"订单已发货","orderId":42}`
	publish(t, nc, "notify.user."+openid, payload)
	typ, got := read(t, c)
	if typ != websocket.TextMessage || string(got) != payload {
		t.Fatalf("got type %d %q, want text %q", typ, got, payload)
	}
	if bytes.HasPrefix(got, []byte("\xEF\xBB\xBF")) {
		t.Fatal("worker added a BOM")
	}
}

// A leading byte order mark, white space around the object, other fields
// and keys that are not exactly "name" are tolerated.
func TestFirstMessageTolerance(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	for _, row := range []struct{ name, first string }{
		{"byte order mark", "\xEF\xBB\xBF{\"name\":\"bom\"}"},
		{"white space around", " \t\r\n{\"name\":\"bom\"} \n"},
		{"other fields and keys", "\xEF\xBB\xBF  {\"name\":\"bom\",\"extra\":{\"x\":[1,2]},\"Name\":\"ignored\"}"},
	} {
		t.Run(row.name, func(t *testing.T) {
			c := dial(t, tw.addr, "/ws")
			send(t, c, row.first)
			expect(t, c, welcome("bom"))
		})
	}
}

// The names the rule accepts: 1 to 128 bytes of A-Z a-z 0-9 _ -, written
// plainly or as escapes. (The names it refuses are rows of
// TestErrorsAndCloseCodes.)
func TestNameRuleAccepts(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)
	for _, row := range []struct{ name, first, want string }{
		{"WeChat openid", `{"name":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}`, "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
		{"UUID", `{"name":"0b8c4f7e-3a1d-4c2e-9f6a-5d7e8b9c0a1f"}`, "0b8c4f7e-3a1d-4c2e-9f6a-5d7e8b9c0a1f"},
		{"every allowed byte", `{"name":"AZaz09_-"}`, "AZaz09_-"},
		{"one byte", `{"name":"x"}`, "x"},
		{"128 bytes", `{"name":"` + strings.Repeat("n", 128) + `"}`, strings.Repeat("n", 128)},
		{"escaped letters", `{"name":"\u0061\u006c\u0069"}`, "ali"},
	} {
		t.Run(row.name, func(t *testing.T) {
			c := dial(t, tw.addr, "/")
			send(t, c, row.first)
			expect(t, c, welcome(row.want))
			publish(t, nc, "notify.user."+row.want, "for "+row.want)
			expect(t, c, "for "+row.want)
		})
	}
}

// With NOTIFY_AUTH=jwt, a first message holding a valid token identifies
// the client as the token's sub, alone or with a name equal to sub. (A
// token in the query is TestQueryToken; tokens turned away are rows of
// TestErrorsAndCloseCodes.)
func TestTokenIdentifies(t *testing.T) {
	tw := startWorker(t, jwtConfig(t))
	nc := connectNATS(t, tw.natsURL)
	for _, row := range []struct{ name, first, want string }{
		{"token alone", `{"token":"` + token(t, "frank", nil) + `"}`, "frank"},
		{"token with its name", `{"token":"` + token(t, "gina", nil) + `","name":"gina"}`, "gina"},
	} {
		t.Run(row.name, func(t *testing.T) {
			c := dial(t, tw.addr, "/")
			send(t, c, row.first)
			expect(t, c, welcome(row.want))
			publish(t, nc, "notify.user."+row.want, "hi "+row.want)
			expect(t, c, "hi "+row.want)
		})
	}
}

// Published right after the welcome arrives, a message to the user's
// subject or to the broadcast subject must be delivered: the welcome is
// sent only once the server has confirmed the interest.
func TestWelcomeIsAPromise(t *testing.T) {
	tw := startWorker(t, testConfig(t))
	nc := connectNATS(t, tw.natsURL)
	for i := range 50 {
		name := "promise" + string(rune('a'+i%26)) + strings.Repeat("x", i/26)
		c := client(t, tw, name)
		publish(t, nc, "notify.user."+name, "hi")
		expect(t, c, "hi")
		c.Close()
	}
	c := client(t, tw, "broadcast-promise")
	publish(t, nc, "notify.all", "to all")
	expect(t, c, "to all")
}
