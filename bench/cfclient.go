package main

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// The Centrifugo side of the comparison uses two channels per client, the
// counterparts of notify-worker's subjects: "user.<name>" for what is meant
// for one name and "all" for broadcasts. With Centrifugo's NATS broker in
// raw mode and the prefix "notify.", they are the NATS subjects
// notify.user.<name> and notify.all, the ones notify-worker reads, so one
// producer serves both servers.
const (
	cfPersonalPrefix = "user."
	cfBroadcast      = "all"
	cfRawNATSPrefix  = "notify."
)

func cfPersonalChannel(name string) string { return cfPersonalPrefix + name }

// cfConnectToken signs the HS256 connection JWT of name: sub is the name,
// and the channels claim subscribes the connection, on the server's side,
// to its personal channel and to the broadcast channel. One connect command
// then does what notify-worker's first message does, in one round trip and
// without granting clients the right to subscribe by themselves.
func cfConnectToken(secret []byte, name string, now time.Time, ttl time.Duration) (string, error) {
	claims := jwt.MapClaims{
		"sub":      name,
		"exp":      now.Add(ttl).Unix(),
		"channels": []string{cfPersonalChannel(name), cfBroadcast},
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token of %s: %w", name, err)
	}
	return s, nil
}

// cfTokenTTL outlives any bounded run: an expiring token would make
// Centrifugo ask for a refresh in the middle of a measurement.
const cfTokenTTL = 24 * time.Hour

// dialCentrifugo opens a WebSocket to Centrifugo's JSON endpoint, sends the
// connect command with name's token, and waits for the connect reply, which
// lists the server-side subscriptions: from then on the connection
// receives publications of both channels.
func dialCentrifugo(ctx context.Context, url string, n, srcIPs int, secret []byte) (*websocket.Conn, error) {
	c, err := dialWS(ctx, url, n, srcIPs, false)
	if err != nil {
		return nil, err
	}
	name := "u" + strconv.Itoa(n)
	token, err := cfConnectToken(secret, name, time.Now(), cfTokenTTL)
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{"token":"`+token+`"}}`)); err != nil {
		c.Close()
		return nil, fmt.Errorf("connect %s: %w", name, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, frame, err := c.ReadMessage()
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("connect reply %s: %w", name, err)
	}
	// Nothing is published while clients connect, so the reply comes
	// alone; only its first message is looked at.
	msg, _ := nextCFMessage(frame)
	if !bytes.HasPrefix(msg, []byte(`{"id":1,"connect":`)) || !bytes.Contains(msg, []byte(`"`+cfPersonalChannel(name)+`"`)) {
		c.Close()
		return nil, fmt.Errorf("connect reply %s: got %.200q", name, frame)
	}
	_ = c.SetReadDeadline(time.Time{})
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}

// cfKind is what one message of a Centrifugo frame is.
type cfKind int

const (
	cfMalformed   cfKind = iota
	cfPublication        // a push with a publication: data holds its data
	cfPing               // the server's ping, {}: answer {}
	cfReply              // a reply to a command of ours (has an id)
	cfOtherPush          // a push without a publication (disconnect, unsubscribe...)
)

// nextCFMessage splits the first message off a frame: Centrifugo's JSON
// protocol sends several replies and pushes in one WebSocket frame,
// separated by '\n'. Empty lines are skipped. Nothing is copied.
func nextCFMessage(frame []byte) (msg, rest []byte) {
	for len(frame) > 0 {
		i := bytes.IndexByte(frame, '\n')
		if i < 0 {
			return frame, nil
		}
		msg, frame = frame[:i], frame[i+1:]
		if len(msg) > 0 {
			return msg, frame
		}
	}
	return nil, nil
}

var (
	cfPushPrefix = []byte(`{"push":`)
	cfPubData    = []byte(`"pub":{"data":`)
	cfIDPrefix   = []byte(`{"id":`)
	cfPingMsg    = []byte(`{}`)
)

// classifyCF says what one message is and, for a publication, returns its
// data (a sub-slice of msg).
func classifyCF(msg []byte) (cfKind, []byte) {
	switch {
	case bytes.Equal(msg, cfPingMsg):
		return cfPing, nil
	case bytes.HasPrefix(msg, cfIDPrefix):
		return cfReply, nil
	case !bytes.HasPrefix(msg, cfPushPrefix) || jsonValueLen(msg) != len(msg):
		return cfMalformed, nil
	}
	i := bytes.Index(msg, cfPubData)
	if i < 0 {
		return cfOtherPush, nil
	}
	data := msg[i+len(cfPubData):]
	n := jsonValueLen(data)
	if n <= 0 {
		return cfMalformed, nil
	}
	return cfPublication, data[:n]
}

// jsonValueLen returns the length of the JSON object or array that b
// starts with, or 0 if b does not start with a complete one. It tracks
// strings and escapes, not the validity of what is inside.
func jsonValueLen(b []byte) int {
	if len(b) == 0 || (b[0] != '{' && b[0] != '[') {
		return 0
	}
	depth, inString := 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString && c == '\\':
			i++
		case c == '"':
			inString = !inString
		case inString:
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return 0
}
