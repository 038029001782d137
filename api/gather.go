package api

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// errNoResponders says that no subscriber had interest in the subject of
// a gathered request: for a user subject, no worker holds the name.
var errNoResponders = errors.New("no responders")

// maxReplies bounds what one gathered request keeps; a fleet has far
// fewer workers than this.
const maxReplies = 10000

// gather publishes msg as a request on nc and collects every reply until
// ctx ends (its deadline is the caller's timeout), or until want replies
// arrived when want > 0. It returns errNoResponders when the server says
// nobody had interest. Replies are read on the calling goroutine.
func gather(ctx context.Context, nc *nats.Conn, msg *nats.Msg, want int) ([]*nats.Msg, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, fmt.Errorf("subscribe to replies: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	msg.Reply = inbox
	if err := nc.PublishMsg(msg); err != nil {
		return nil, fmt.Errorf("publish %s: %w", msg.Subject, err)
	}
	var replies []*nats.Msg
	for len(replies) < maxReplies && (want <= 0 || len(replies) < want) {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break // the deadline: what arrived is the answer
			}
			if errors.Is(err, nats.ErrNoResponders) {
				if len(replies) == 0 {
					return nil, errNoResponders
				}
				continue
			}
			return replies, fmt.Errorf("replies to %s: %w", msg.Subject, err)
		}
		if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
			if len(replies) == 0 {
				return nil, errNoResponders
			}
			continue
		}
		replies = append(replies, m)
	}
	return replies, nil
}
