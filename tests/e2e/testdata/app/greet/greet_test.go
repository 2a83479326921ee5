package greet

import "testing"

func TestHello(t *testing.T) {
	if got, want := Hello("go", 2), "hello, go hello, go (2)"; got != want {
		t.Fatalf("Hello = %q, want %q", got, want)
	}
}
