package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

func TestHandler(t *testing.T) {
	b, _ := ParseImage("demo:v2-errors50-unready")
	h := newHandler(b, "i-1")
	if rec := get(t, h, "/health"); rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/health of an unready version: %d", rec.Code)
	}
	codes := map[int]int{}
	for range 10 {
		rec := get(t, h, "/")
		codes[rec.Code]++
		if v := rec.Header().Get("X-Version"); v != "v2" {
			t.Errorf("X-Version %q", v)
		}
	}
	if codes[200] != 5 || codes[500] != 5 {
		t.Errorf("status codes %v, want 5 of 200 and 5 of 500", codes)
	}
	b, _ = ParseImage("demo:v1")
	if rec := get(t, newHandler(b, "i-2"), "/health"); rec.Code != http.StatusOK {
		t.Errorf("/health of a ready version: %d", rec.Code)
	}
}
