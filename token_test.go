package main

import (
	"testing"
)

func TestTokens(t *testing.T) {
	tw := startWorker(t, jwtConfig(t))
	nc := connectNATS(t, tw.natsURL)
	t.Run("valid token in the first message, with its name", func(t *testing.T) {
		c := dial(t, tw.addr, "/")
		send(t, c, `{"token":"`+token(t, "frank", nil)+`","name":"frank"}`)
		expect(t, c, `{"type":"welcome","name":"frank"}`)
		publish(t, nc, "notify.user.frank", "hi frank")
		expect(t, c, "hi frank")
	})
}
