package main

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPayloadRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		kind     byte
		seq      int64
		intended int64
		size     int
	}{
		{'u', 1, 1795820000123456789, 100},
		{'a', 100, 1, 64},
		{'u', 987654321, 1795820000000000000, 4000},
	} {
		b := appendPayload(nil, tc.kind, tc.seq, tc.intended, tc.size)
		if len(b) < tc.size {
			t.Errorf("payload of %d bytes, want at least %d", len(b), tc.size)
		}
		kind, seq, intended, ok := parsePayload(b)
		if !ok || kind != tc.kind || seq != tc.seq || intended != tc.intended {
			t.Errorf("parsePayload(%q) = %c %d %d %v", b, kind, seq, intended, ok)
		}
	}
	for _, bad := range []string{"", `{"type":"welcome","name":"u1"}`, `{"k":"u","s":,"t":1}`, `{"k":"u","s":1}`} {
		if _, _, _, ok := parsePayload([]byte(bad)); ok {
			t.Errorf("parsePayload(%q) accepted", bad)
		}
	}
}

func TestHistogramBuckets(t *testing.T) {
	for _, us := range []int64{0, 1, 255, 256, 257, 1000, 12345, 1 << 20, 1 << 35} {
		i := bucketOf(us)
		if top := bucketTop(i); top < us || (us >= 256 && float64(top-us) > float64(us)/128) {
			t.Errorf("value %d: bucket %d tops at %d", us, i, top)
		}
		if i > 0 && bucketTop(i-1) >= us {
			t.Errorf("value %d: the bucket before %d already holds it", us, i)
		}
	}
}

func TestQuantiles(t *testing.T) {
	var h histogram
	for us := range int64(1000) {
		h.record(time.Duration(us+1) * time.Microsecond)
	}
	var m merged
	m.add(h.sparse(), h.max.Load())
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := m.quantile(tc.q)
		if got < tc.want || float64(got-tc.want) > float64(tc.want)/100 {
			t.Errorf("quantile(%v) = %v, want %v (at most 1%% above)", tc.q, got, tc.want)
		}
	}
}

func TestParseEnvelope(t *testing.T) {
	payload := appendPayload(nil, 'u', 7, 1795820000123456789, 100)
	for _, tc := range []struct {
		frame string
		seq   uint64
	}{
		{`{"type":"msg","seq":1288,"data":` + string(payload) + `}`, 1288},
		{`{"type":"msg","data":` + string(payload) + `}`, 0},
	} {
		data, seq, ok := parseEnvelope([]byte(tc.frame))
		if !ok || seq != tc.seq || string(data) != string(payload) {
			t.Errorf("parseEnvelope(%q) = %q %d %v", tc.frame, data, seq, ok)
		}
		if _, s, _, ok := parsePayload(data); !ok || s != 7 {
			t.Errorf("payload of %q: seq %d %v", tc.frame, s, ok)
		}
	}
	for _, bad := range []string{
		`{"type":"ping","seq":3}`,
		`{"type":"msg","seq":3,"data_b64":"AAEC"}`,
		`{"type":"msg","seq":0,"data":{}}`,
		`{"type":"welcome","seq":3,"data":{}}`,
		`{"type":"msg","seq":3}`,
	} {
		if _, _, ok := parseEnvelope([]byte(bad)); ok {
			t.Errorf("parseEnvelope(%q) accepted", bad)
		}
	}
}

func TestMetricDeltas(t *testing.T) {
	before := map[string]float64{`notify_resumes_total{outcome="ok"}`: 2, "notify_replayed_total": 10}
	after := map[string]float64{`notify_resumes_total{outcome="ok"}`: 5, "notify_replayed_total": 10, `notify_resumes_total{outcome="busy"}`: 1}
	want := `notify_resumes_total{outcome="busy"} +1, notify_resumes_total{outcome="ok"} +3`
	if got := metricDeltas(before, after); got != want {
		t.Errorf("metricDeltas = %q, want %q", got, want)
	}
	if got := metricDeltas(before, before); got != "none moved" {
		t.Errorf("metricDeltas of no change = %q", got)
	}
}

func TestScrapeFamilies(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "# HELP notify_replayed_messages_total x\n"+
			"notify_replayed_messages_total 5000\n"+
			"notify_resumes_total{outcome=\"recovered\"} 5\n"+
			"notify_resumes_total{outcome=\"a b\"} 1\n"+
			"notify_replay_duration_seconds_bucket{le=\"0.01\"} 1\n"+
			"notify_replay_duration_seconds_sum 0.08\n"+
			"notify_replay_duration_seconds_count 5\n"+
			"notify_connections 3\n")
	}))
	t.Cleanup(srv.Close)
	got := scrapeFamilies(srv.Client(), srv.URL, "resume", "replay")
	want := map[string]float64{
		"notify_replayed_messages_total":            5000,
		`notify_resumes_total{outcome="recovered"}`: 5,
		`notify_resumes_total{outcome="a b"}`:       1,
		"notify_replay_duration_seconds_count":      5,
	}
	if !maps.Equal(got, want) {
		t.Errorf("scrapeFamilies = %v, want %v", got, want)
	}
}
