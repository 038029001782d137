package hub

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
)

// Buffers of a detached session, each reused by gorilla as the
// connection's own. Client messages are a name, a token, or short upstream
// messages, and most notifications fit in one write; a longer one takes
// more reads, or goes out as more than one frame. (A shared pool of write
// buffers saves their memory, but measured worse: at 10,000 users and
// 20,000 deliveries/s every garbage collection then stalled deliveries for
// about 100 ms, p99 45-80 ms instead of 5 ms.)
const (
	detachedReadBuffer  = 320 // gorilla reuses a reader larger than 256 bytes
	detachedWriteBuffer = 512 // gorilla reuses a writer of 270 bytes or more
)

// detachedWriter lets melody upgrade a connection that net/http has
// already handed over (hijacked), so that the HTTP handler can return.
//
// melody serves a session inside the handler that upgraded it, for the
// session's whole life, which keeps net/http's per-request state alive with
// it: a 4 KB read buffer, two write buffers and a deep goroutine stack, the
// larger part of an idle session's memory. Hijacking first and running the
// session on a goroutine of the hub's own drops all of that.
type detachedWriter struct {
	conn net.Conn
	// ws is what gorilla writes the session's frames to: conn, wrapped
	// (sessionConn).
	ws          net.Conn
	header      http.Header
	wroteHeader bool
}

func (w *detachedWriter) Header() http.Header { return w.header }

// WriteHeader writes a status line and the headers; it is used only when
// the upgrade fails (gorilla answers with http.Error), and the connection
// is closed after the response.
func (w *detachedWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	w.wroteHeader = true
	bw := bufio.NewWriter(w.conn)
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	w.header.Set("Connection", "close")
	_ = w.header.Write(bw)
	_, _ = bw.WriteString("\r\n")
	_ = bw.Flush()
}

func (w *detachedWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.conn.Write(b)
}

// Hijack hands the connection to the upgrader with small buffers.
func (w *detachedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.ws, bufio.NewReadWriter(
		bufio.NewReaderSize(w.conn, detachedReadBuffer),
		bufio.NewWriterSize(w.conn, detachedWriteBuffer),
	), nil
}
