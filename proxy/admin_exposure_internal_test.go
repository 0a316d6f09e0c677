package proxy

import "testing"

func TestIsLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9901": true, "127.1.2.3:1": true, "[::1]:9901": true, "localhost:9901": true,
		":9901": false, "0.0.0.0:9901": false, "[::]:9901": false, "10.0.0.1:9901": false,
		"example.com:9901": false, "127.0.0.1": false, "": false,
	} {
		if got := isLoopbackAddr(addr); got != want {
			t.Errorf("isLoopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
