package proxy_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/meshd/meshd/internal/testutil"
)

func TestWebSocket(t *testing.T) {
	up := testutil.StartHTTP(t, websocket.Handler(func(ws *websocket.Conn) {
		// Echo whole messages (io.Copy would re-frame a large message in read-sized pieces).
		for {
			var msg string
			if websocket.Message.Receive(ws, &msg) != nil || websocket.Message.Send(ws, "echo:"+msg) != nil {
				return
			}
		}
	}))
	srv, _ := meshDef{services: []svcDef{{name: "ws.t.local", node: "ws", port: up.Port}}}.start(t)

	conn, err := net.Dial("tcp", srv.EgressAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	cfg, err := websocket.NewConfig("ws://ws.t.local/ws", "http://ws.t.local/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(cfg, conn)
	if err != nil {
		t.Fatalf("websocket handshake through meshd: %v", err)
	}
	defer ws.Close()
	for i, msg := range []string{"one", "two", strings.Repeat("x", 70000), "four"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != "echo:"+msg {
			t.Fatalf("message %d: got %d bytes (%v), want %d", i, len(got), err, len(msg))
		}
	}
}
