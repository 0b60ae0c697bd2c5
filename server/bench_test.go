package server

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkDecodeChatRequest measures reading the body of a chat turn:
// {"userId","message"} with a message of about 200 bytes.
func BenchmarkDecodeChatRequest(b *testing.B) {
	body := []byte(`{"userId":"u00042","message":"` + strings.Repeat("my order has not arrived yet ", 7) + `"}`)
	r := httptest.NewRequest(http.MethodPost, "/agents/support-chat", nil)
	w := httptest.NewRecorder()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		var req chatRequest
		if err := decodeJSON(w, r, 1<<20, &req); err != nil {
			b.Fatal(err)
		}
	}
}
