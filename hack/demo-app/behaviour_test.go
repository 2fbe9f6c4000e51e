package main

import (
	"testing"
	"time"
)

func TestParseImage(t *testing.T) {
	cases := []struct {
		image string
		want  Behaviour
	}{
		{"demo:v1", Behaviour{Version: "v1"}},
		{"demo:v2-errors30", Behaviour{Version: "v2", ErrorsPercent: 30}},
		{"demo:v2-slow", Behaviour{Version: "v2", Slow: DefaultSlow}},
		{"demo:v2-slow750", Behaviour{Version: "v2", Slow: 750 * time.Millisecond}},
		{"demo:v2-unready", Behaviour{Version: "v2", Unready: true}},
		{"demo:v3-unready-errors5-slow10", Behaviour{Version: "v3", ErrorsPercent: 5,
			Slow: 10 * time.Millisecond, Unready: true}},
		{"demo:v1.2.0-rc1-slow", Behaviour{Version: "v1.2.0-rc1", Slow: DefaultSlow}},
		{"localhost:5000/team/demo:v4", Behaviour{Version: "v4"}},
		{"localhost:5000/demo", Behaviour{Version: "latest"}},
		{"demo:v2-errorsx", Behaviour{Version: "v2-errorsx"}},
		{"reg.example/shop/demo:v2-slow@sha256:0123abcd", Behaviour{Version: "v2", Slow: DefaultSlow}},
		{"reg.example/shop/demo@sha256:0123abcd", Behaviour{Version: "latest"}},
	}
	for _, c := range cases {
		got, err := ParseImage(c.image)
		if err != nil {
			t.Errorf("ParseImage(%q): %v", c.image, err)
			continue
		}
		c.want.Image = c.image
		if got != c.want {
			t.Errorf("ParseImage(%q) = %+v, want %+v", c.image, got, c.want)
		}
	}
	for _, bad := range []string{"demo:v2-errors101", "demo:-slow", "demo:unready"} {
		if _, err := ParseImage(bad); err == nil {
			t.Errorf("ParseImage(%q): want an error", bad)
		}
	}
}

func TestErrorSpread(t *testing.T) {
	for _, p := range []int{0, 1, 5, 30, 50, 99, 100} {
		s := NewErrorSpread(p)
		// Every window of 100 consecutive requests holds exactly p failures,
		// and the first 10 requests already hold about a tenth of them.
		fails := make([]bool, 1000)
		for i := range fails {
			fails[i] = s.Next()
		}
		for start := 0; start+100 <= len(fails); start += 37 {
			n := 0
			for _, f := range fails[start : start+100] {
				if f {
					n++
				}
			}
			if n != p {
				t.Errorf("p=%d: window at %d has %d failures", p, start, n)
			}
		}
		n := 0
		for _, f := range fails[:10] {
			if f {
				n++
			}
		}
		if want := p / 10; n < want || n > want+1 {
			t.Errorf("p=%d: first 10 requests have %d failures, want ~%d", p, n, want)
		}
	}
}
