package staticfiles

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/fstest"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLoad(t *testing.T) {
	fsys := fstest.MapFS{
		"static/index.html": {Data: []byte("<p>hi</p>")},
		"static/app.js":     {Data: []byte("1")},
		"static/notes.txt":  {Data: []byte("not served")},
		"static/sub/x.js":   {Data: []byte("not read")},
	}
	files, err := Load(fsys, "static", map[string]string{".html": "text/html", ".js": "text/javascript"})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 3 {
		t.Fatalf("files %v, want index.html, app.js and \"\"", files)
	}
	if files[""].etag != files["index.html"].etag || string(files[""].body) != "<p>hi</p>" || string(files["app.js"].body) != "1" {
		t.Errorf("files %v", files)
	}
	if _, err := Load(fstest.MapFS{"static/app.js": {Data: []byte("1")}}, "static", map[string]string{".js": "text/javascript"}); err == nil {
		t.Error("Load without index.html: no error")
	}
}

func TestServe(t *testing.T) {
	f := New([]byte("body"), "text/plain")
	rec := httptest.NewRecorder()
	f.Serve(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusOK || rec.Body.String() != "body" || rec.Header().Get("Content-Type") != "text/plain" {
		t.Fatalf("%d %q %q", rec.Code, rec.Body, rec.Header().Get("Content-Type"))
	}
	etag := rec.Header().Get("ETag")
	if len(etag) != 18 || etag[0] != '"' {
		t.Fatalf("ETag %q", etag)
	}
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	f.Serve(rec, req)
	if rec.Code != http.StatusNotModified {
		t.Errorf("with its ETag: %d, want 304", rec.Code)
	}
	if New([]byte("other"), "text/plain").etag == etag {
		t.Error("another body has the same ETag")
	}
}
